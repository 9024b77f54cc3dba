"""Clips in and out: a video file (PyAV, FFmpeg's own codecs in its wheel) or a
folder of frames; ``final.mp4`` written atomically with the source's frame
rate and its audio copied through.

* :func:`probe` (headers and the first frame only): frame count, size, rate,
  audio — what the plan needs; every problem is one :class:`NSTError`
  (unreadable file, no video stream, zero frames, a codec FFmpeg cannot
  decode, frames of different sizes in a folder).
* :func:`read_frame` decodes frame ``i`` of a file, sequentially with a small
  cache (frames are asked for in order, with a few earlier ones for the flow).
* :func:`write_video` encodes frames to H.264 (yuv420p, CRF 18; MPEG-4 Part 2
  where the FFmpeg build lacks libx264) into a temp file next to the output,
  muxes the source's audio packets unchanged (those that start before the
  video's last frame ends: a clip cut by ``max_frames`` keeps its part of
  the sound), then renames it into place: no
  partial ``final.mp4``, ever. yuv420p needs even sides: an odd last row or
  column is dropped in the video (the frame PNGs keep it).

PyAV over imageio-ffmpeg: a library (no subprocess pipe), decodes to numpy
directly, copies audio packets; measured install sizes in WORKSPACE.md
("Video").

Example:
  >>> clip = probe('clip.mp4')
  >>> frames = [read_frame('clip.mp4', i) for i in range(clip.frames)]
  >>> write_video('out.mp4', frames, clip.rate, audio_from='clip.mp4')
"""

from __future__ import annotations

import collections
import fractions
import logging
import os
import threading
from typing import NamedTuple

import numpy as np

from nst_jax import image_io
from nst_jax.errors import NSTError
from nst_jax.files import atomic_write

VIDEO_EXTENSIONS = ('.mp4', '.m4v', '.mov', '.mkv', '.avi', '.webm', '.mpg', '.mpeg',
                    '.ogv', '.gif')
DEFAULT_RATE = fractions.Fraction(25)   # a folder of frames, unless frame_rate is set
log = logging.getLogger(__name__)
CACHE_FRAMES = 17                       # decoded frames kept per file (t and up to
#                                         MAX_FRAMES_BACK earlier ones, for the flows)
MAX_FRAMES_BACK = 16                    # the farthest temporal_frames distance


class ClipInfo(NamedTuple):
  frames: int                           # number of frames
  hw: tuple[int, int]                   # frame size
  rate: fractions.Fraction              # frames per second
  audio: bool                           # the file has an audio stream
  paths: tuple = ()                     # a folder's frame files, in name order


def is_video(path) -> bool:
  """True for a video file name (by extension; a folder of frames is not)."""
  return (isinstance(path, (str, os.PathLike)) and not os.path.isdir(path)
          and os.path.splitext(str(path))[1].lower() in VIDEO_EXTENSIONS)


def _av():
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise NSTError("video needs PyAV: pip install 'nst-jax[video]' (av)") from None
  return av


def _open(path: str):
  av = _av()
  if not os.path.isfile(path):
    raise NSTError(f'video {path} does not exist')
  try:
    container = av.open(path)
  except (av.FFmpegError, OSError, ValueError) as e:
    raise NSTError(f'video {path} is not readable ({_why(e)})') from None
  if not container.streams.video:
    container.close()
    raise NSTError(f'video {path} has no video stream')
  return container


def _why(e) -> str:
  return (getattr(e, 'strerror', None) or str(e) or type(e).__name__).strip().rstrip('.')


def probe(path: str, max_pixels: int = image_io.DEFAULT_MAX_PIXELS,
          frame_rate: float = 0.0, max_frames: int = 0) -> ClipInfo:
  """What a clip is, reading headers and the first frame only.

  ``path``: a video file or a folder of frames (in name order, all one size).
  ``frame_rate``: the rate of a folder (0: 25 fps), or overrides a file's
  (then its audio, which would drift, is not copied: ``audio`` False).
  ``max_frames``: use only the first N frames (0: all).
  """
  path = str(path)
  if os.path.isdir(path):
    paths = image_io.list_images(path)
    if max_frames:
      paths = paths[:max_frames]
    sizes = {p: image_io.image_size(p, max_pixels) for p in paths}
    first = sizes[paths[0]]
    other = next((p for p in paths if sizes[p] != first), None)
    if other is not None:
      raise NSTError(f'frames of {path} differ in size: {os.path.basename(paths[0])} is '
                     f'{first[1]}x{first[0]}, {os.path.basename(other)} is '
                     f'{sizes[other][1]}x{sizes[other][0]}')
    rate = fractions.Fraction(frame_rate).limit_denominator(1001) if frame_rate \
        else DEFAULT_RATE
    return ClipInfo(len(paths), first, rate, False, tuple(paths))
  av = _av()
  container = _open(path)
  try:
    stream = container.streams.video[0]
    hw = (stream.codec_context.height, stream.codec_context.width)
    if hw[0] * hw[1] > max_pixels:
      raise NSTError(f'video {path} has {hw[1]}x{hw[0]} frames, more than '
                     f'max_input_pixels={max_pixels}')
    try:
      next(container.decode(stream), None) or _no_frames(path)
    except av.FFmpegError as e:
      raise NSTError(f'video {path}: its {stream.codec_context.name} stream cannot be '
                     f'decoded ({_why(e)})') from None
    count = stream.frames
    if not count:                          # no count in the header: count packets
      container.seek(0)
      count = sum(1 for p in container.demux(stream) if p.size)
    rate = (fractions.Fraction(frame_rate).limit_denominator(1001) if frame_rate
            else stream.average_rate or stream.guessed_rate or DEFAULT_RATE)
    if max_frames:
      count = min(count, max_frames)
    # A new rate retimes the pictures, not the sound: its audio is not copied.
    audio = bool(container.streams.audio) and not frame_rate
    return ClipInfo(int(count), hw, fractions.Fraction(rate), audio)
  except av.FFmpegError as e:
    raise NSTError(f'video {path} is not readable ({_why(e)})') from None
  finally:
    container.close()


def _no_frames(path):
  raise NSTError(f'video {path} has no frames')


class _Reader:
  """Sequential decoder of one file with the last few frames cached (uint8)."""

  def __init__(self, path: str):
    self.path, self.container, self.frames = path, None, None
    self.next = 0
    self.cache = collections.OrderedDict()

  def _restart(self):
    if self.container is not None:
      self.container.close()
    self.container = _open(self.path)
    stream = self.container.streams.video[0]
    stream.thread_type = 'AUTO'
    self.frames, self.next = self.container.decode(stream), 0

  def get(self, i: int) -> np.ndarray:
    if i in self.cache:
      self.cache.move_to_end(i)
      return self.cache[i]
    av = _av()
    if self.container is None or i < self.next:
      self._restart()
    try:
      while self.next <= i:
        frame = next(self.frames, None)
        if frame is None:
          raise NSTError(f'video {self.path} ends at frame {self.next}, before frame '
                         f'{i + 1}')
        if self.next >= i - CACHE_FRAMES:
          self.cache[self.next] = frame.to_ndarray(format='rgb24')
          while len(self.cache) > CACHE_FRAMES:
            self.cache.popitem(last=False)
        self.next += 1
    except av.FFmpegError as e:
      raise NSTError(f'video {self.path}: frame {self.next + 1} cannot be decoded '
                     f'({_why(e)})') from None
    return self.cache[i]

  def close(self):
    if self.container is not None:
      self.container.close()
      self.container = None


_readers: dict = {}
_lock = threading.Lock()


def read_frame(path: str, index: int) -> np.ndarray:
  """Frame ``index`` (0-based) of a video file as float32 RGB ``[H, W, 3]`` in [0, 1]."""
  try:
    st = os.stat(path)
  except OSError as e:
    raise NSTError(f'video {path} is not readable ({_why(e)})') from None
  key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)   # a rewritten file is new
  with _lock:
    reader = _readers.get(key)
    if reader is None:
      for old in [k for k in _readers if k[0] == key[0]]:
        _readers.pop(old).close()
      reader = _readers[key] = _Reader(path)
    return reader.get(index).astype(np.float32) / 255.0


def close_readers() -> None:
  """Closes every open file of :func:`read_frame` (the engine and fast_apply
  call it when a run ends)."""
  with _lock:
    for r in _readers.values():
      r.close()
    _readers.clear()


def _encoder(av) -> str:
  """libx264 (PyAV's wheels have it), else FFmpeg's own MPEG-4 Part 2."""
  for name in ('libx264', 'mpeg4'):
    if name in av.codecs_available:
      return name
  raise NSTError('this FFmpeg build (PyAV) has neither the libx264 nor the mpeg4 encoder')


def write_video(path: str, frames, rate, *, audio_from: str | None = None,
                crf: int = 18) -> None:
  """Encodes ``frames`` (a sequence of ``[H, W, 3]`` float in [0, 1] or uint8) to
  ``path`` (temp file, then rename), at ``rate`` fps, with ``audio_from``'s
  audio stream copied (if it has one) up to the video's length. Audio that
  an mp4 cannot hold unchanged (PCM, Vorbis ...) is left out with a warning
  rather than losing the video."""
  av = _av()
  rate = fractions.Fraction(rate).limit_denominator(1001)
  if audio_from:
    try:
      atomic_write(path, lambda f: _write(av, f, frames, rate, audio_from, crf))
      return
    except (av.FFmpegError, ValueError) as e:
      log.warning('%s: the audio of %s cannot be copied into an mp4 (%s); written '
                  'without it', path, audio_from, _why(e))
  try:
    atomic_write(path, lambda f: _write(av, f, frames, rate, None, crf))
  except av.FFmpegError as e:
    raise NSTError(f'cannot write video {path} ({_why(e)})') from None


def _write(av, f, frames, rate, audio_from, crf):
  out = av.open(f, mode='w', format='mp4')
  try:
    codec = _encoder(av)
    stream = out.add_stream(codec, rate=rate)
    stream.pix_fmt = 'yuv420p'
    if codec == 'libx264':
      stream.options = {'crf': str(crf), 'preset': 'medium'}
    else:
      stream.bit_rate = 8_000_000
    source = audio = None
    if audio_from and is_video(audio_from):
      source = _open(audio_from)
      if source.streams.audio:
        template = source.streams.audio[0]
        add = getattr(out, 'add_stream_from_template', None)
        audio = add(template) if add else out.add_stream(template=template)
    sized, count = False, 0
    for image in frames:
      count += 1
      image = np.asarray(image)
      if image.dtype != np.uint8:
        image = image_io.to_uint8(image)
      image = image[:image.shape[0] // 2 * 2, :image.shape[1] // 2 * 2, :3]
      if not sized:
        stream.height, stream.width = image.shape[:2]
        sized = True
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format='rgb24')
      for packet in stream.encode(frame):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)
    if audio is not None:                 # the packets as they are, up to the video's end
      end = fractions.Fraction(count) / rate
      v = source.streams.video[0]
      start = (fractions.Fraction(v.start_time) * v.time_base
               if v.start_time is not None else fractions.Fraction(0))
      for packet in source.demux(source.streams.audio[0]):
        if packet.dts is None or packet.pts is None:
          continue
        # On the video's clock: the source's first frame is our time 0.
        shift = round(start / packet.time_base)
        t = (packet.pts - shift) * packet.time_base
        if t >= end:
          break
        if t + (packet.duration or 0) * packet.time_base <= 0:
          continue                        # sound from before the first frame
        packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
        packet.stream = audio
        out.mux(packet)
    if source is not None:
      source.close()
  finally:
    out.close()


class FrameFiles:
  """Image files read one at a time when iterated (for :func:`write_video`)."""

  def __init__(self, paths):
    self.paths = list(paths)

  def __len__(self):
    return len(self.paths)

  def __iter__(self):
    return (image_io.load_image(p) for p in self.paths)


def read_video(path: str) -> tuple[list[np.ndarray], fractions.Fraction]:
  """Every frame of a file (float32 RGB) and its rate — for tests and tools."""
  info = probe(path)
  frames = [read_frame(path, i) for i in range(info.frames)]
  return frames, info.rate
