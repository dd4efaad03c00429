"""PyTorch reference S3FD, written from the spec (/work/shared/S3FD_REFERENCE.md), NCHW; test-only.

Module names are the state_dict keys of the public s3fd.pth (`conv1_1.weight`, `conv3_3_norm.weight`,
`fc7_mbox_conf.bias`, ...). `detect_from_outputs` and `nms` are the original decode written the original
way (the per-cell Python loop of face-alignment's sfd `detect` with its torch `decode`, the numpy `nms`),
`batch_detect_from_outputs` / `detect_from_batch` Wav2Lip's batched variant of them; `wav2lip_detect` is
Wav2Lip's `detect_from_batch` + `get_detections_for_batch` on a batch of frames: a reference, not the code
under test.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class L2Norm(nn.Module):
  def __init__(self, n_channels, scale=1.0):
    super().__init__()
    self.eps = 1e-10
    self.weight = nn.Parameter(torch.full((n_channels,), float(scale)))

  def forward(self, x):
    norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
    return x / norm * self.weight.view(1, -1, 1, 1)


class S3FDNet(nn.Module):
  def __init__(self):
    super().__init__()
    self.conv1_1 = nn.Conv2d(3, 64, 3, 1, 1)
    self.conv1_2 = nn.Conv2d(64, 64, 3, 1, 1)
    self.conv2_1 = nn.Conv2d(64, 128, 3, 1, 1)
    self.conv2_2 = nn.Conv2d(128, 128, 3, 1, 1)
    self.conv3_1 = nn.Conv2d(128, 256, 3, 1, 1)
    self.conv3_2 = nn.Conv2d(256, 256, 3, 1, 1)
    self.conv3_3 = nn.Conv2d(256, 256, 3, 1, 1)
    self.conv4_1 = nn.Conv2d(256, 512, 3, 1, 1)
    self.conv4_2 = nn.Conv2d(512, 512, 3, 1, 1)
    self.conv4_3 = nn.Conv2d(512, 512, 3, 1, 1)
    self.conv5_1 = nn.Conv2d(512, 512, 3, 1, 1)
    self.conv5_2 = nn.Conv2d(512, 512, 3, 1, 1)
    self.conv5_3 = nn.Conv2d(512, 512, 3, 1, 1)
    self.fc6 = nn.Conv2d(512, 1024, 3, 1, 3)
    self.fc7 = nn.Conv2d(1024, 1024, 1, 1, 0)
    self.conv6_1 = nn.Conv2d(1024, 256, 1, 1, 0)
    self.conv6_2 = nn.Conv2d(256, 512, 3, 2, 1)
    self.conv7_1 = nn.Conv2d(512, 128, 1, 1, 0)
    self.conv7_2 = nn.Conv2d(128, 256, 3, 2, 1)
    self.conv3_3_norm = L2Norm(256, 10)
    self.conv4_3_norm = L2Norm(512, 8)
    self.conv5_3_norm = L2Norm(512, 5)
    self.conv3_3_norm_mbox_conf = nn.Conv2d(256, 4, 3, 1, 1)
    self.conv3_3_norm_mbox_loc = nn.Conv2d(256, 4, 3, 1, 1)
    self.conv4_3_norm_mbox_conf = nn.Conv2d(512, 2, 3, 1, 1)
    self.conv4_3_norm_mbox_loc = nn.Conv2d(512, 4, 3, 1, 1)
    self.conv5_3_norm_mbox_conf = nn.Conv2d(512, 2, 3, 1, 1)
    self.conv5_3_norm_mbox_loc = nn.Conv2d(512, 4, 3, 1, 1)
    self.fc7_mbox_conf = nn.Conv2d(1024, 2, 3, 1, 1)
    self.fc7_mbox_loc = nn.Conv2d(1024, 4, 3, 1, 1)
    self.conv6_2_mbox_conf = nn.Conv2d(512, 2, 3, 1, 1)
    self.conv6_2_mbox_loc = nn.Conv2d(512, 4, 3, 1, 1)
    self.conv7_2_mbox_conf = nn.Conv2d(256, 2, 3, 1, 1)
    self.conv7_2_mbox_loc = nn.Conv2d(256, 4, 3, 1, 1)

  def forward(self, x):
    h = F.relu(self.conv1_1(x))
    h = F.relu(self.conv1_2(h))
    h = F.max_pool2d(h, 2, 2)
    h = F.relu(self.conv2_1(h))
    h = F.relu(self.conv2_2(h))
    h = F.max_pool2d(h, 2, 2)
    h = F.relu(self.conv3_1(h))
    h = F.relu(self.conv3_2(h))
    h = F.relu(self.conv3_3(h))
    f3_3 = h
    h = F.max_pool2d(h, 2, 2)
    h = F.relu(self.conv4_1(h))
    h = F.relu(self.conv4_2(h))
    h = F.relu(self.conv4_3(h))
    f4_3 = h
    h = F.max_pool2d(h, 2, 2)
    h = F.relu(self.conv5_1(h))
    h = F.relu(self.conv5_2(h))
    h = F.relu(self.conv5_3(h))
    f5_3 = h
    h = F.max_pool2d(h, 2, 2)
    h = F.relu(self.fc6(h))
    h = F.relu(self.fc7(h))
    ffc7 = h
    h = F.relu(self.conv6_1(h))
    h = F.relu(self.conv6_2(h))
    f6_2 = h
    h = F.relu(self.conv7_1(h))
    h = F.relu(self.conv7_2(h))
    f7_2 = h
    f3_3 = self.conv3_3_norm(f3_3)
    f4_3 = self.conv4_3_norm(f4_3)
    f5_3 = self.conv5_3_norm(f5_3)
    cls1 = self.conv3_3_norm_mbox_conf(f3_3)
    reg1 = self.conv3_3_norm_mbox_loc(f3_3)
    cls2 = self.conv4_3_norm_mbox_conf(f4_3)
    reg2 = self.conv4_3_norm_mbox_loc(f4_3)
    cls3 = self.conv5_3_norm_mbox_conf(f5_3)
    reg3 = self.conv5_3_norm_mbox_loc(f5_3)
    cls4 = self.fc7_mbox_conf(ffc7)
    reg4 = self.fc7_mbox_loc(ffc7)
    cls5 = self.conv6_2_mbox_conf(f6_2)
    reg5 = self.conv6_2_mbox_loc(f6_2)
    cls6 = self.conv7_2_mbox_conf(f7_2)
    reg6 = self.conv7_2_mbox_loc(f7_2)
    chunk = torch.chunk(cls1, 4, 1)  # max-out background label
    bmax = torch.max(torch.max(chunk[0], chunk[1]), chunk[2])
    cls1 = torch.cat([bmax, chunk[3]], dim=1)
    return [cls1, reg1, cls2, reg2, cls3, reg3, cls4, reg4, cls5, reg5, cls6, reg6]


def decode(loc, priors, variances):
  boxes = torch.cat(
    (
      priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
      priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1]),
    ),
    1,
  )
  boxes[:, :2] -= boxes[:, 2:] / 2
  boxes[:, 2:] += boxes[:, :2]
  return boxes


def batch_decode(loc, priors, variances):
  boxes = torch.cat(
    (
      priors[:, :, :2] + loc[:, :, :2] * variances[0] * priors[:, :, 2:],
      priors[:, :, 2:] * torch.exp(loc[:, :, 2:] * variances[1]),
    ),
    2,
  )
  boxes[:, :, :2] -= boxes[:, :, 2:] / 2
  boxes[:, :, 2:] += boxes[:, :, :2]
  return boxes


def detect_from_outputs(olist):
  """face-alignment's sfd `detect` after the forward pass, on one image's 12 NCHW outputs (batch 1):
  softmax, then the per-cell loop over cells with probability > 0.05 -> (N, 5) float32 boxes + score."""
  olist = list(olist)
  for i in range(len(olist) // 2):
    olist[i * 2] = F.softmax(olist[i * 2], dim=1)
  olist = [oelem.data.cpu() for oelem in olist]
  bboxlist = []
  for i in range(len(olist) // 2):
    ocls, oreg = olist[i * 2], olist[i * 2 + 1]
    stride = 2 ** (i + 2)  # 4,8,16,32,64,128
    poss = zip(*np.where(ocls[:, 1, :, :] > 0.05))
    for _, hindex, windex in poss:
      axc, ayc = stride / 2 + windex * stride, stride / 2 + hindex * stride
      score = ocls[0, 1, hindex, windex]
      loc = oreg[0, :, hindex, windex].contiguous().view(1, 4)
      priors = torch.Tensor([[axc / 1.0, ayc / 1.0, stride * 4 / 1.0, stride * 4 / 1.0]])
      variances = [0.1, 0.2]
      box = decode(loc, priors, variances)
      x1, y1, x2, y2 = box[0] * 1.0
      bboxlist.append(torch.stack([x1, y1, x2, y2, score]).numpy())
  bboxlist = np.array(bboxlist, np.float32)
  if 0 == len(bboxlist):
    bboxlist = np.zeros((1, 5), np.float32)
  return bboxlist


def batch_detect_from_outputs(olist):
  """Wav2Lip's `batch_detect` after the forward pass, on a batch's 12 NCHW outputs: the per-cell loop over
  every cell whose probability > 0.05 in ANY image of the batch, decoding that cell for all images at once
  -> (cells, B, 5) float32 (Wav2Lip's quirk: a cell is listed once per image in which it passes)."""
  olist = list(olist)
  batch = olist[0].shape[0]
  for i in range(len(olist) // 2):
    olist[i * 2] = F.softmax(olist[i * 2], dim=1)
  olist = [oelem.data.cpu() for oelem in olist]
  bboxlist = []
  for i in range(len(olist) // 2):
    ocls, oreg = olist[i * 2], olist[i * 2 + 1]
    stride = 2 ** (i + 2)
    poss = zip(*np.where(ocls[:, 1, :, :] > 0.05))
    for _, hindex, windex in poss:
      axc, ayc = stride / 2 + windex * stride, stride / 2 + hindex * stride
      score = ocls[:, 1, hindex, windex]
      loc = oreg[:, :, hindex, windex].contiguous().view(batch, 1, 4)
      priors = torch.Tensor([[axc / 1.0, ayc / 1.0, stride * 4 / 1.0, stride * 4 / 1.0]]).view(1, 1, 4)
      box = batch_decode(loc, priors, [0.1, 0.2])[:, 0] * 1.0
      bboxlist.append(torch.cat([box, score.unsqueeze(1)], 1).cpu().numpy())
  bboxlist = np.array(bboxlist, np.float32)
  if 0 == len(bboxlist):
    bboxlist = np.zeros((1, batch, 5), np.float32)
  return bboxlist


def detect_from_batch(olist):
  """Wav2Lip's `detect_from_batch` on a batch's outputs: per image NMS at 0.3, then score > 0.5."""
  bboxlists = batch_detect_from_outputs(olist)
  keeps = [nms(bboxlists[:, i, :], 0.3) for i in range(bboxlists.shape[1])]
  bboxlists = [bboxlists[keep, i, :] for i, keep in enumerate(keeps)]
  return [np.array([x for x in b if x[-1] > 0.5], np.float32).reshape(-1, 5) for b in bboxlists]


def nms(dets, thresh):
  if 0 == len(dets):
    return []
  x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
  areas = (x2 - x1 + 1) * (y2 - y1 + 1)
  order = scores.argsort()[::-1]
  keep = []
  while order.size > 0:
    i = order[0]
    keep.append(i)
    xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
    xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
    w, h = np.maximum(0.0, xx2 - xx1 + 1), np.maximum(0.0, yy2 - yy1 + 1)
    ovr = w * h / (areas[i] + areas[order[1:]] - w * h)
    inds = np.where(ovr <= thresh)[0]
    order = order[inds + 1]
  return keep


def decode_and_nms(olist):
  """One image's outputs -> Wav2Lip's `detect_from_batch` boxes: NMS at 0.3, then score > 0.5 (float32)."""
  bboxlist = detect_from_outputs(olist)
  keep = nms(bboxlist, 0.3)
  kept = [x for x in bboxlist[keep] if x[-1] > 0.5]
  return np.array(kept, np.float32).reshape(-1, 5)


def wav2lip_box(bboxlist):
  """Wav2Lip's `get_detections_for_batch` on one image's `decode_and_nms` rows: the first box, clipped at
  0, cast with int(); None when there is none."""
  if len(bboxlist) == 0:
    return None
  d = np.clip(bboxlist[0], 0, None)
  return tuple(int(v) for v in d[:-1])


def preprocess(frames_bgr):
  """(B, H, W, 3) uint8 BGR -> the NCHW float32 tensor Wav2Lip feeds S3FD (channels reversed, minus mean)."""
  images = frames_bgr[..., ::-1].astype(np.float64) - np.array([104, 117, 123])
  return torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).float()


@torch.no_grad()
def wav2lip_detect(net, frames_bgr):
  """Per frame of (B, H, W, 3) uint8 BGR: (`detect_from_batch` rows, Wav2Lip's box or None), the original way
  (one forward pass on the batch, Wav2Lip's `batch_detect` per-cell loop, numpy NMS)."""
  return [(rows, wav2lip_box(rows)) for rows in detect_from_batch(net(preprocess(frames_bgr)))]
