"""PyTorch reference of SyncNet v2 (syncnet_python's `S`), for parity tests and test-made weight files.

Owns a from-memory reconstruction of the public module tree, so `state_dict()` has the same key names as the
public `syncnet_v2.model` file (netcnnaud.{i}.*, netfcaud.{i}.*, netcnnlip.{i}.*, netfclip.{i}.*). Tests use
it to write a syncnet_v2-format file with torch.save(state_dict) and to compare against the Flax port.
"""

from __future__ import annotations

import torch
from torch import nn


def _bn_relu(kind, channels):
  return [kind(channels), nn.ReLU(inplace=True)]


class SyncNetV2Torch(nn.Module):
  """syncnet_python S(num_layers_in_fc_layers=1024); `width` scales channels for tiny tests."""

  def __init__(self, embed_dim: int = 1024, width: float = 1.0):
    super().__init__()
    c = lambda n: max(1, int(round(n * width)))  # noqa: E731
    self.netcnnaud = nn.Sequential(
      nn.Conv2d(1, c(64), (3, 3), (1, 1), (1, 1)),
      *_bn_relu(nn.BatchNorm2d, c(64)),
      nn.MaxPool2d((1, 1), (1, 1)),
      nn.Conv2d(c(64), c(192), (3, 3), (1, 1), (1, 1)),
      *_bn_relu(nn.BatchNorm2d, c(192)),
      nn.MaxPool2d((3, 3), (1, 2)),
      nn.Conv2d(c(192), c(384), (3, 3), padding=(1, 1)),
      *_bn_relu(nn.BatchNorm2d, c(384)),
      nn.Conv2d(c(384), c(256), (3, 3), padding=(1, 1)),
      *_bn_relu(nn.BatchNorm2d, c(256)),
      nn.Conv2d(c(256), c(256), (3, 3), padding=(1, 1)),
      *_bn_relu(nn.BatchNorm2d, c(256)),
      nn.MaxPool2d((3, 3), (2, 2)),
      nn.Conv2d(c(256), c(512), (5, 4), padding=(0, 0)),
      *_bn_relu(nn.BatchNorm2d, c(512)),
    )
    self.netfcaud = nn.Sequential(
      nn.Linear(c(512), c(512)), nn.BatchNorm1d(c(512)), nn.ReLU(), nn.Linear(c(512), embed_dim)
    )
    self.netfclip = nn.Sequential(
      nn.Linear(c(512), c(512)), nn.BatchNorm1d(c(512)), nn.ReLU(), nn.Linear(c(512), embed_dim)
    )
    self.netcnnlip = nn.Sequential(
      nn.Conv3d(3, c(96), (5, 7, 7), (1, 2, 2), 0),
      *_bn_relu(nn.BatchNorm3d, c(96)),
      nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
      nn.Conv3d(c(96), c(256), (1, 5, 5), (1, 2, 2), (0, 1, 1)),
      *_bn_relu(nn.BatchNorm3d, c(256)),
      nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
      nn.Conv3d(c(256), c(256), (1, 3, 3), padding=(0, 1, 1)),
      *_bn_relu(nn.BatchNorm3d, c(256)),
      nn.Conv3d(c(256), c(256), (1, 3, 3), padding=(0, 1, 1)),
      *_bn_relu(nn.BatchNorm3d, c(256)),
      nn.Conv3d(c(256), c(256), (1, 3, 3), padding=(0, 1, 1)),
      *_bn_relu(nn.BatchNorm3d, c(256)),
      nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
      nn.Conv3d(c(256), c(512), (1, 6, 6), padding=0),
      *_bn_relu(nn.BatchNorm3d, c(512)),
    )

  def forward_aud(self, x):  # (N, 1, 13, 20)
    mid = self.netcnnaud(x)
    return self.netfcaud(mid.reshape(mid.shape[0], -1))

  def forward_lip(self, x):  # (N, 3, 5, 224, 224)
    mid = self.netcnnlip(x)
    return self.netfclip(mid.reshape(mid.shape[0], -1))


def randomize_batch_norm(model: nn.Module, seed: int = 0):
  """Non-trivial running statistics and affine params so parity tests exercise BatchNorm."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        n = module.num_features
        module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
        module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
        module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
        module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
  return model
