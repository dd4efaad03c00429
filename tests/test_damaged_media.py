"""Damaged media (issue #10, deliverable 5): decoding skips what ffmpeg skips, counts it, keeps audio timing.

Files are built here on purpose with PyAV (tiny: 64x48 frames, 2 s of audio) and damaged in their packet
payloads (bytes located through the demuxer's packets, never the container headers), or truncated. The
media layer (lipsync_jax.media.video / audio) is checked directly, then through the public functions of
preprocessing (clips.process_to_record + dataset_info), inference (inference.lipsync.lipsync) and
evaluation (evaluation.lse.load_lse_inputs), which read through it.
"""

from __future__ import annotations

import fractions
import logging
import os

import av
import numpy as np
import pytest
import soundfile

from lipsync_jax.data import clips, dataset_info
from lipsync_jax.media import audio, fps, video

SR = 16000
FRAME = SR // 25  # samples per 25 fps video frame: the sync tolerance
BURSTS = (0.3, 1.4)  # seconds: 1 kHz bursts over a quiet 300 Hz tone; damage goes in between
OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"
W, H = 64, 48


# ---------------------------------------------------------------------------------------------------------
# Building and damaging files.
# ---------------------------------------------------------------------------------------------------------


def _bursts(sr: int, seconds: float = 2.0) -> np.ndarray:
  t = np.arange(int(seconds * sr)) / sr
  wav = 0.05 * np.sin(2 * np.pi * 300 * t)
  for start in BURSTS:
    on = (t >= start) & (t < start + 0.05)
    wav[on] = 0.6 * np.sin(2 * np.pi * 1000 * (t[on] - start))
  return wav.astype(np.float32)


def _encode_audio(path, codec: str, fmt: str | None, sr: int, options: dict | None = None) -> str:
  wav = _bursts(sr)
  with av.open(str(path), "w", format=fmt, options=options or {}) as container:
    stream = container.add_stream(codec, rate=sr, layout="mono")
    size = stream.codec_context.frame_size or 1024
    for start in range(0, wav.size, size):
      frame = av.AudioFrame.from_ndarray(wav[None, start : start + size], format="fltp", layout="mono")
      frame.sample_rate, frame.pts, frame.time_base = sr, start, fractions.Fraction(1, sr)
      container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
  return str(path)


def _marker(i: int) -> int:
  return 16 + 8 * i  # frame i is flat grey at this level (ids survive lossy coding: +-4 is plenty)


def _encode_video(path, codec, fmt, n=30, rate=25, options=None, pts_ms=None) -> str:
  with av.open(str(path), "w", format=fmt) as container:
    stream = container.add_stream(codec, rate=rate, options=options or {})
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    if pts_ms is not None:
      stream.time_base = stream.codec_context.time_base = fractions.Fraction(1, 1000)
    for i in range(n):
      image = np.full((H, W, 3), _marker(i), np.uint8)
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      if pts_ms is not None:
        frame.pts, frame.time_base = pts_ms[i], fractions.Fraction(1, 1000)
      else:
        frame.pts = i
      container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
  return str(path)


def _ids(frames) -> list[int]:
  return [int(round((float(f.mean()) - 16) / 8)) for f in frames]


def _packets(path, kind: str = "audio") -> list[tuple[int, int, float]]:
  """(byte offset of the payload in the file, size, time in s) of every packet of the first `kind` stream."""
  data = open(path, "rb").read()
  out = []
  with av.open(str(path)) as container:
    stream = getattr(container.streams, kind)[0]
    for packet in container.demux(stream):
      if packet.size:
        payload = bytes(packet)
        at = data.find(payload, max(packet.pos or 0, 0))
        assert at >= 0, "packet payload not found in the file"
        out.append((at, packet.size, float(packet.pts * packet.time_base)))
  return out


def _damage(path, out, which, kind="audio", how="flip") -> str:
  """Copies `path` to `out` with packets `which` damaged: 'flip' inverts bytes in the second half of the
  payload, 'head' its first 3 bytes (an mp3 frame header), 'zero' zeroes the whole payload."""
  data = bytearray(open(path, "rb").read())
  packets = _packets(path, kind)
  for k in which:
    at, size, _ = packets[k]
    span = {
      "flip": range(at + size // 2, at + size // 2 + max(1, size // 4)),
      "head": range(at, at + 3),
      "zero": range(at, at + size),
    }[how]
    for i in span:
      data[i] = 0 if how == "zero" else data[i] ^ 0xFF
  with open(out, "wb") as f:
    f.write(bytes(data))
  return str(out)


def _packet_at(path, seconds: float, kind: str = "audio") -> int:
  times = [t for _, _, t in _packets(path, kind)]
  return int(np.argmin(np.abs(np.array(times) - seconds)))


def _onset(wav: np.ndarray, after: float) -> int:
  """First sample after `after` seconds louder than the background tone: a burst's start."""
  start = int(after * SR)
  return start + int(np.nonzero(np.abs(wav[start:]) > 0.3)[0][0])


def _plain_decode(path) -> np.ndarray:
  """A plain decode (container.decode, one resampler): what read_audio did before damage handling."""
  with av.open(str(path)) as container:
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SR)
    chunks = []
    for frame in container.decode(stream):
      frame.pts = None
      chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    seconds = float(stream.duration * stream.time_base) if stream.duration else 0
  wav = np.concatenate(chunks)
  return wav[: int(round(seconds * SR))] if seconds else wav


AUDIO_CODECS = {  # name: (codec, container format, extension, sample rate, muxer options)
  "aac-mp4": ("aac", "mp4", "m4a", 16000, None),
  "aac-adts": ("aac", "adts", "aac", 16000, None),
  "ac3": ("ac3", "ac3", "ac3", 48000, None),
  "ac3-avi": ("ac3", "avi", "avi", 48000, None),
  "mp3": ("libmp3lame", "mp3", "mp3", 16000, None),
  "opus-ogg": ("libopus", "ogg", "opus", 48000, {"page_duration": "100000"}),  # 100 ms pages
  "opus-webm": ("libopus", "webm", "webm", 48000, None),
}


def _audio_file(tmp_path, name: str) -> str:
  codec, fmt, ext, sr, options = AUDIO_CODECS[name]
  return _encode_audio(tmp_path / f"{name}.{ext}", codec, fmt, sr, options)


# ---------------------------------------------------------------------------------------------------------
# Audio.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(AUDIO_CODECS) + ["pcm-wav"])
def test_clean_audio_decodes_as_before_and_reports_nothing(tmp_path, name):
  if name == "pcm-wav":
    path = str(tmp_path / "a.wav")
    soundfile.write(path, _bursts(SR), SR, subtype="PCM_16")
  else:
    path = _audio_file(tmp_path, name)
  report = video.DecodeReport()
  wav = video.read_audio(path, report=report)
  assert report.damage == 0 and report.samples_lost == 0 and report.first_error is None
  assert report.packets > 0 and report.stream == "audio" and report.path == path
  np.testing.assert_array_equal(wav, _plain_decode(path))  # clean files: bit-identical to a plain decode
  # Raw ADTS records no encoder delay: its audio comes 1024 samples late, as ffmpeg decodes it; the other
  # containers say how many priming samples to drop.
  delay = 1024 if name == "aac-adts" else 0
  assert 0 <= wav.size - 2 * SR - delay <= 0.1 * SR  # whole codec frames at the end, as ffmpeg gives them
  for start in BURSTS:  # the bursts are where they were written
    assert abs(_onset(wav, start - 0.1) - start * SR - delay) <= 0.01 * SR, name  # AC3: 256 at 48 kHz


# (codec, packets to damage: 'mid' = the three around 0.8 s, how, tight): tight = the burst after the damage
# is within a few samples of the clean file's; otherwise within one 25 fps frame.
DAMAGED_AUDIO = [
  ("aac-mp4", "mid", "flip", True),  # the decoder rejects packets: their span becomes silence
  ("aac-mp4", "second", "flip", True),  # lost near the start: the first frames keep their time too
  ("aac-adts", "mid", "flip", True),
  ("ac3", "mid", "flip", True),  # CRC fails: the decoder conceals the frames (flagged corrupt)
  ("ac3-avi", "mid", "flip", True),
  ("mp3", "one", "head", False),  # a frame header destroyed: the parser merges it into a neighbour
  ("opus-ogg", "mid", "flip", True),  # the page CRC fails: the demuxer drops 100 ms; timestamps show the gap
]


@pytest.mark.parametrize("name,where,how,tight", DAMAGED_AUDIO)
def test_damaged_audio_is_decoded_counted_and_keeps_its_timing(tmp_path, caplog, name, where, how, tight):
  clean_path = _audio_file(tmp_path, name)
  k = _packet_at(clean_path, 0.8)
  which = {"mid": [k, k + 1, k + 2], "one": [k], "second": [1]}[where]
  damaged = _damage(clean_path, str(tmp_path / ("damaged-" + os.path.basename(clean_path))), which, how=how)
  clean = video.read_audio(clean_path)
  report = video.DecodeReport()
  with caplog.at_level(logging.WARNING, logger="lipsync_jax.media.video"):
    wav = video.read_audio(damaged, report=report)
  assert report.damage > 0 and report.first_error, report
  warnings = [r for r in caplog.records if r.name == "lipsync_jax.media.video"]
  assert len(warnings) == 1 and damaged in warnings[0].getMessage()  # one warning per file
  after = _onset(wav, 1.2) - _onset(clean, 1.2)  # the burst at 1.4 s, after the damage
  assert abs(after) <= (16 if tight else FRAME), (name, after, report)
  assert abs(_onset(wav, 0.1) - _onset(clean, 0.1)) <= (16 if tight else FRAME)  # the one before it
  if tight:
    assert abs(wav.size - clean.size) <= 16
  if name == "aac-mp4" and where == "mid":  # three rejected packets of 1024 samples -> silence
    assert report.damaged_packets >= 2 and report.samples_lost == 1024 * report.damaged_packets
  if name == "opus-ogg":
    assert report.gaps == 1 and abs(report.samples_lost - 0.1 * SR) <= 16


def test_load_wav_routes_compressed_audio_through_pyav_and_keeps_pcm_exact(tmp_path):
  mp3 = _audio_file(tmp_path, "mp3")
  damaged = _damage(mp3, tmp_path / "d.mp3", [_packet_at(mp3, 0.8, "audio")], how="head")
  report = video.DecodeReport(quiet=True)
  loaded = audio.load_wav(damaged, report=report)
  assert report.damage > 0
  np.testing.assert_array_equal(loaded, video.read_audio(damaged))
  pcm = _bursts(SR)
  for subtype, ext in (("FLOAT", "wav"), ("PCM_24", "flac")):
    path = str(tmp_path / f"a.{ext}")
    soundfile.write(path, pcm, SR, subtype=subtype)
    np.testing.assert_array_equal(audio.load_wav(path), soundfile.read(path, dtype="float32")[0])


def test_nothing_decodable_is_a_clear_error_naming_the_file(tmp_path):
  m4a = _audio_file(tmp_path, "aac-mp4")
  dead = _damage(m4a, tmp_path / "dead.m4a", range(len(_packets(m4a))), how="zero")
  with pytest.raises(video.VideoError, match="no decodable audio in .*dead.m4a"):
    video.read_audio(dead)
  with pytest.raises(audio.AudioError, match="dead.m4a"):
    audio.load_wav(dead)
  mp4 = _encode_video(tmp_path / "v.mp4", "libx264", "mp4", n=10)
  dead = _damage(mp4, tmp_path / "dead.mp4", range(10), kind="video", how="zero")
  for read in (lambda p: list(video.iter_frames(p)), lambda p: list(video.iter_frames(p, fps=25.0))):
    with pytest.raises(video.VideoError, match="no decodable video frame in .*dead.mp4"):
      read(dead)


def test_truncated_files_decode_what_is_there(tmp_path):
  for name, ext, codec, fmt in (("avi", "avi", "mpeg4", "avi"), ("webm", "webm", "libvpx-vp9", "webm")):
    path = _encode_video(tmp_path / f"v.{ext}", codec, fmt, n=30, options={"g": "5"})
    at, size, _ = _packets(path, "video")[15]
    cut = str(tmp_path / f"cut.{ext}")
    with open(cut, "wb") as f:
      f.write(open(path, "rb").read()[: at + size // 2])  # ends inside frame 15
    report = video.DecodeReport(quiet=True)
    ids = _ids(video.iter_frames(cut, report=report))
    assert 5 <= len(ids) < 30 and ids == list(range(len(ids))), (name, ids)
    if name == "avi":  # the header lists 30 frames
      assert report.truncated and report.damage
  adts = _audio_file(tmp_path, "aac-adts")
  data = open(adts, "rb").read()
  cut = str(tmp_path / "cut.aac")
  with open(cut, "wb") as f:
    f.write(data[: len(data) // 2 + 3])  # mid-packet
  wav = video.read_audio(cut)
  full = video.read_audio(adts)
  assert 0.3 * full.size < wav.size < 0.7 * full.size
  np.testing.assert_allclose(wav[: SR // 2], full[: SR // 2], atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Video.
# ---------------------------------------------------------------------------------------------------------

VIDEO_CODECS = {
  "h264-mp4": ("libx264", "mp4"),
  "mpeg4-avi": ("mpeg4", "avi"),
  "vp9-webm": ("libvpx-vp9", "webm"),
}


@pytest.mark.parametrize("name", sorted(VIDEO_CODECS))
def test_damaged_video_skips_at_native_rate_and_fills_at_25_fps(tmp_path, name):
  codec, fmt = VIDEO_CODECS[name]
  options = {"g": "10"} if codec != "libx264" else {"g": "10", "bf": "0"}
  path = _encode_video(tmp_path / f"v.{fmt}", codec, fmt, n=30, options=options)
  report = video.DecodeReport()
  assert _ids(video.iter_frames(path, report=report)) == list(range(30)) and report.damage == 0
  damaged = _damage(path, tmp_path / f"d.{fmt}", [15], kind="video", how="zero")  # a frame inside a GOP
  report = video.DecodeReport(quiet=True)
  native = _ids(video.iter_frames(damaged, report=report))
  assert len(native) == 29 and report.damaged_packets >= 1 and report.frames_lost == 1
  assert native[:15] == list(range(15)) and native[-10:] == list(range(20, 30))  # the next GOP is intact
  at25 = _ids(video.iter_frames(damaged, fps=25.0, report=video.DecodeReport(quiet=True)))
  assert len(at25) == 30 and at25[:15] == list(range(15)) and at25[20:] == list(range(20, 30))


def test_lost_first_keyframe_keeps_later_frames_at_their_time_at_25_fps(tmp_path):
  path = _encode_video(tmp_path / "v.mp4", "libx264", "mp4", n=30, options={"g": "10", "bf": "0"})
  damaged = _damage(path, tmp_path / "d.mp4", [0], kind="video", how="zero")
  report = video.DecodeReport(quiet=True)
  ids = _ids(video.iter_frames(damaged, fps=25.0, report=report))
  assert report.damage and report.frames_lost >= 1
  first = ids[-20]  # the first decodable frame fills the lost start; everything after is where it was
  assert len(ids) == 30 and ids[10:] == list(range(10, 30)) and set(ids[:10]) <= {first, *range(10)}


def test_variable_frame_rate_resampled_to_25_fps_clean_and_damaged(tmp_path):
  pts_ms = [0, 30, 70, 80, 130, 170, 230, 240, 290, 330, 400, 410, 450, 520, 560, 600, 640, 700, 710, 760]
  path = _encode_video(
    tmp_path / "vfr.mp4", "libx264", "mp4", n=len(pts_ms), options={"g": "1"}, pts_ms=pts_ms
  )
  times = [fractions.Fraction(t, 1000) for t in pts_ms]
  assert _ids(video.iter_frames(path, fps=25.0)) == fps.resample_indices(times, 25.0).tolist()
  decoded = (f.to_ndarray(format="bgr24") for f in video.iter_decoded(path, fps=25.0))
  assert _ids(decoded) == fps.resample_indices(times, 25.0).tolist()  # the PyAV frames, same rule
  damaged = _damage(path, tmp_path / "d.mp4", [7], kind="video", how="zero")  # all-intra: only frame 7 goes
  report = video.DecodeReport(quiet=True)
  got = _ids(video.iter_frames(damaged, fps=25.0, report=report))
  kept = [i for i in range(len(pts_ms)) if i != 7]
  assert report.damaged_packets == 1
  assert got == [kept[j] for j in fps.resample_indices([times[i] for i in kept], 25.0)]


@pytest.mark.skipif(
  not os.path.isdir(OPENCV_DATA), reason="Debian's opencv-doc (Megamind*.avi) not installed"
)
def test_opencv_megamind_samples():
  report = video.DecodeReport(quiet=True)
  wav = video.read_audio(f"{OPENCV_DATA}/Megamind.avi", report=report)  # AC3 with a corrupt frame
  assert report.damage >= 1 and report.first_error
  assert abs(wav.size - video.probe(f"{OPENCV_DATA}/Megamind.avi").duration * SR) < 0.1 * SR
  report = video.DecodeReport(quiet=True)
  count = sum(1 for _ in video.iter_frames(f"{OPENCV_DATA}/Megamind_bugy.avi", report=report))
  assert count == 270 and report.packets == 270


# ---------------------------------------------------------------------------------------------------------
# Through preprocessing, inference and evaluation.
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def damaged_clip(tmp_path_factory):
  """A 1.6 s 64x48 H.264 + AAC mp4 (VideoWriter) with one video and three audio packets damaged."""
  root = tmp_path_factory.mktemp("clip")
  clean = str(root / "clean.mp4")
  with video.VideoWriter(clean, 25, W, H) as writer:
    for i in range(40):
      writer.write(np.full((H, W, 3), _marker(i % 24), np.uint8))
    writer.close(audio=_bursts(SR, 1.6))
  k = _packet_at(clean, 0.8)
  damaged = _damage(clean, root / "audio-damaged.mp4", [k, k + 1, k + 2], kind="audio")
  damaged = _damage(damaged, root / "damaged.mp4", [20], kind="video", how="zero")
  return clean, damaged


def test_preprocessing_keeps_a_damaged_clip_and_counts_it(damaged_clip, tmp_path):
  clean, damaged = damaged_clip
  config = clips.PreprocessConfig(img_size=32, detector="fixed", detector_kwargs={"box": (8, 4, 56, 44)})
  reports = []
  for clip_id, path in (("clean", clean), ("damaged", damaged)):
    record, report = clips.process_to_record(clips.ClipTask("train", clip_id, path), config)
    assert record is not None and report["status"] == "written", report
    reports.append(report)
  assert reports[0]["damaged_packets"] == 0 and "damage" not in reports[0]
  assert reports[1]["damaged_packets"] > 0 and set(reports[1]["damage"]) == {"audio", "video"}
  assert reports[1]["num_frames"] == reports[0]["num_frames"] == 40  # lost frames filled at 25 fps
  assert reports[1]["mel_steps"] == reports[0]["mel_steps"]  # lost audio filled: same length
  info = dataset_info.build(config, reports, {"train": 1}, None, False, {})
  assert info["num_damaged_clips"] == info["splits"]["train"]["num_damaged_clips"] == 1
  total = reports[1]["damaged_packets"]
  assert info["damaged_packets"] == info["splits"]["train"]["damaged_packets"] == total
  assert [d["clip_id"] for d in info["damaged"]] == ["damaged"] and info["damaged"][0]["first_error"]
  counters = dataset_info.counters(reports)
  assert counters["clips_damaged"] == 1 and counters["damaged_packets"] == reports[1]["damaged_packets"]


def test_inference_with_damaged_audio_and_video_writes_a_video(damaged_clip, tmp_path):
  import jax

  from lipsync_jax.inference.lipsync import lipsync
  from lipsync_jax.models import Wav2Lip, example_inputs

  variables = Wav2Lip(width_multiplier=1 / 16).init(jax.random.key(0), *example_inputs("wav2lip", 1, 96))
  meta = {"kind": "wav2lip", "width_multiplier": 1 / 16, "img_size": 96}
  _, damaged = damaged_clip
  out = str(tmp_path / "out.mp4")
  variables = jax.tree.map(np.asarray, variables)
  stats = lipsync(damaged, damaged, variables, out, meta, box=(4, 44, 8, 56), batch_size=8, progress=False)
  info = video.probe(out)
  assert info.has_audio and info.num_frames == stats["frames"] > 30


def test_evaluation_reads_a_damaged_video(damaged_clip):
  from lipsync_jax.evaluation import lse

  clean, damaged = damaged_clip
  frames, wav = lse.load_lse_inputs(damaged)
  clean_frames, clean_wav = lse.load_lse_inputs(clean)
  assert frames.shape == clean_frames.shape and wav.shape == clean_wav.shape
