"""PyTorch reference networks written from the spec (WAV2LIP_REFERENCE.md sections 1-4, 9), NCHW.

Module trees reproduce the official key names (e.g. `face_encoder_blocks.1.2.conv_block.1.running_var`)
so their state_dicts look like the official checkpoints. Test-only code; also helpers to randomise the
weights and BatchNorm statistics and to save in the official format.
"""

from __future__ import annotations

import torch
from torch import nn


class Conv2d(nn.Module):
  """Conv -> BN -> (+x) -> ReLU; keys conv_block.0 (conv), conv_block.1 (BN)."""

  def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
    super().__init__()
    self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
    self.act = nn.ReLU()
    self.residual = residual

  def forward(self, x):
    out = self.conv_block(x)
    if self.residual:
      out = out + x
    return self.act(out)


class NoNormConv2d(nn.Module):
  """Conv -> LeakyReLU(0.01); key conv_block.0."""

  def __init__(self, cin, cout, kernel_size, stride, padding):
    super().__init__()
    self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))
    self.act = nn.LeakyReLU(0.01)

  def forward(self, x):
    return self.act(self.conv_block(x))


class Conv2dTranspose(nn.Module):
  """ConvTranspose -> BN -> ReLU; keys conv_block.0, conv_block.1."""

  def __init__(self, cin, cout, kernel_size, stride, padding, output_padding=0):
    super().__init__()
    self.conv_block = nn.Sequential(
      nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout)
    )
    self.act = nn.ReLU()

  def forward(self, x):
    return self.act(self.conv_block(x))


def _res(c, n):
  return [Conv2d(c, c, 3, 1, 1, residual=True) for _ in range(n)]


class SyncNetColor(nn.Module):
  """SyncNet_color (spec section 2). forward(mel (B,1,80,16), faces (B,15,48,96)) -> (audio, face)."""

  def __init__(self):
    super().__init__()
    self.face_encoder = nn.Sequential(
      Conv2d(15, 32, 7, 1, 3),
      Conv2d(32, 64, 5, (1, 2), 1),
      *_res(64, 2),
      Conv2d(64, 128, 3, 2, 1),
      *_res(128, 3),
      Conv2d(128, 256, 3, 2, 1),
      *_res(256, 2),
      Conv2d(256, 512, 3, 2, 1),
      *_res(512, 2),
      Conv2d(512, 512, 3, 2, 1),
      Conv2d(512, 512, 3, 1, 0),
      Conv2d(512, 512, 1, 1, 0),
    )
    self.audio_encoder = nn.Sequential(
      Conv2d(1, 32, 3, 1, 1),
      *_res(32, 2),
      Conv2d(32, 64, 3, (3, 1), 1),
      *_res(64, 2),
      Conv2d(64, 128, 3, 3, 1),
      *_res(128, 2),
      Conv2d(128, 256, 3, (3, 2), 1),
      *_res(256, 2),
      Conv2d(256, 512, 3, 1, 0),
      Conv2d(512, 512, 1, 1, 0),
    )

  def forward(self, mel, faces):
    audio = self.audio_encoder(mel).reshape(mel.shape[0], -1)
    face = self.face_encoder(faces).reshape(faces.shape[0], -1)
    return nn.functional.normalize(audio, p=2, dim=1), nn.functional.normalize(face, p=2, dim=1)


class Wav2LipRef(nn.Module):
  """Wav2Lip (spec section 3). forward(mel (N,1,80,16), faces (N,6,96,96)) -> (N,3,96,96)."""

  def __init__(self):
    super().__init__()
    self.face_encoder_blocks = nn.ModuleList(
      [
        nn.Sequential(Conv2d(6, 16, 7, 1, 3)),
        nn.Sequential(Conv2d(16, 32, 3, 2, 1), *_res(32, 2)),
        nn.Sequential(Conv2d(32, 64, 3, 2, 1), *_res(64, 3)),
        nn.Sequential(Conv2d(64, 128, 3, 2, 1), *_res(128, 2)),
        nn.Sequential(Conv2d(128, 256, 3, 2, 1), *_res(256, 2)),
        nn.Sequential(Conv2d(256, 512, 3, 2, 1), *_res(512, 1)),
        nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),
      ]
    )
    self.audio_encoder = nn.Sequential(
      Conv2d(1, 32, 3, 1, 1),
      *_res(32, 2),
      Conv2d(32, 64, 3, (3, 1), 1),
      *_res(64, 2),
      Conv2d(64, 128, 3, 3, 1),
      *_res(128, 2),
      Conv2d(128, 256, 3, (3, 2), 1),
      *_res(256, 1),
      Conv2d(256, 512, 3, 1, 0),
      Conv2d(512, 512, 1, 1, 0),
    )
    self.face_decoder_blocks = nn.ModuleList(
      [
        nn.Sequential(Conv2d(512, 512, 1, 1, 0)),
        nn.Sequential(Conv2dTranspose(1024, 512, 3, 1, 0), *_res(512, 1)),
        nn.Sequential(Conv2dTranspose(1024, 512, 3, 2, 1, 1), *_res(512, 2)),
        nn.Sequential(Conv2dTranspose(768, 384, 3, 2, 1, 1), *_res(384, 2)),
        nn.Sequential(Conv2dTranspose(512, 256, 3, 2, 1, 1), *_res(256, 2)),
        nn.Sequential(Conv2dTranspose(320, 128, 3, 2, 1, 1), *_res(128, 2)),
        nn.Sequential(Conv2dTranspose(160, 64, 3, 2, 1, 1), *_res(64, 2)),
      ]
    )
    self.output_block = nn.Sequential(Conv2d(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

  def forward(self, mel, faces):
    x = self.audio_encoder(mel)
    feats = []
    f = faces
    for block in self.face_encoder_blocks:
      f = block(f)
      feats.append(f)
    for block in self.face_decoder_blocks:
      x = torch.cat([block(x), feats.pop()], dim=1)
    return self.output_block(x)


class QualityDiscRef(nn.Module):
  """Wav2Lip_disc_qual (spec section 4). forward(faces (N,3,96,96)) -> (N,1) probabilities."""

  def __init__(self):
    super().__init__()
    c = NoNormConv2d
    self.face_encoder_blocks = nn.ModuleList(
      [
        nn.Sequential(c(3, 32, 7, 1, 3)),
        nn.Sequential(c(32, 64, 5, (1, 2), 2), c(64, 64, 5, 1, 2)),
        nn.Sequential(c(64, 128, 5, 2, 2), c(128, 128, 5, 1, 2)),
        nn.Sequential(c(128, 256, 5, 2, 2), c(256, 256, 5, 1, 2)),
        nn.Sequential(c(256, 512, 3, 2, 1), c(512, 512, 3, 1, 1)),
        nn.Sequential(c(512, 512, 3, 2, 1), c(512, 512, 3, 1, 1)),
        nn.Sequential(c(512, 512, 3, 1, 0), c(512, 512, 1, 1, 0)),
      ]
    )
    self.binary_pred = nn.Sequential(nn.Conv2d(512, 1, 1, 1, 0), nn.Sigmoid())

  def forward(self, faces):
    x = faces[:, :, faces.shape[2] // 2 :]
    for block in self.face_encoder_blocks:
      x = block(x)
    return self.binary_pred(x).reshape(len(x), -1)


REFERENCES = {"syncnet": SyncNetColor, "wav2lip": Wav2LipRef, "disc": QualityDiscRef}


def randomize(model: nn.Module, seed: int = 0, conv_gain: float = 1.0) -> nn.Module:
  """Random weights (PyTorch init, seeded, conv weights times `conv_gain`), BN affine and running stats."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        bound = 1.0 / module.weight[0].numel() ** 0.5  # PyTorch's fan_in for Conv2d and ConvTranspose2d
        module.weight.copy_((torch.rand(module.weight.shape, generator=gen) * 2 - 1) * bound * conv_gain)
        module.bias.copy_((torch.rand(module.bias.shape, generator=gen) * 2 - 1) * bound)
      if isinstance(module, nn.BatchNorm2d):
        n = module.num_features
        module.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=gen))
        module.bias.copy_(0.1 * torch.randn(n, generator=gen))
        module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
        module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
        module.num_batches_tracked.fill_(int(torch.randint(0, 1000, (1,), generator=gen)))
  return model


def calibrate(model: nn.Module, *inputs, seed: int = 0, min_var: float = 0.05) -> nn.Module:
  """Sets running stats to (randomly perturbed) batch stats of `inputs`, so eval activations stay O(1).

  Use a calibration batch of several samples other than the test batch; running variances are floored at
  `min_var` (channels that are constant on the calibration batch would otherwise divide by sqrt(eps)).
  """
  bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
  momenta = [m.momentum for m in bns]
  for m in bns:
    m.momentum = 1.0
  model.train()
  with torch.no_grad():
    model(*inputs)
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m, momentum in zip(bns, momenta):
      m.momentum = momentum
      n = m.num_features
      m.running_mean.add_(0.1 * torch.randn(n, generator=gen) * m.running_var.sqrt())
      m.running_var.clamp_(min=min_var).mul_(0.8 + 0.4 * torch.rand(n, generator=gen))
  model.eval()
  return model


def save_official(model: nn.Module, path, wrapped: bool = True, data_parallel: bool = True) -> None:
  """Saves like the official training script: {'state_dict': {'module.'+k: v}, 'optimizer': .., ...}."""
  prefix = "module." if data_parallel else ""
  state = {prefix + k: v for k, v in model.state_dict().items()}
  if wrapped:
    torch.save({"state_dict": state, "optimizer": {}, "global_step": 1234, "global_epoch": 5}, path)
  else:
    torch.save(state, path)
