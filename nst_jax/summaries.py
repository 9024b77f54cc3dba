"""TensorBoard summaries of a run: an engine hook that writes event files.

Runs on accelerator VMs are watched the way flax's examples are:
``tensorboard --logdir WORKDIR``. With ``config.tensorboard`` (default True)
a run with a workdir writes ``events.out.tfevents.*`` there, next to
``losses.jsonl``:

========================================  ==========================================
``loss/total``                            every step: the loss at the step's start
                                          (the log's ``loss``)
``loss/content``, ``loss/style``,         every chunk end: the weighted terms at the
``loss/tv``                               chunk's final image (the log's ``terms``)
``image/current``                         every ``save_every`` steps (as
                                          ``intermediates/``)
``image/final``                           the output, when its phase ends
``mixed_style/current``, ``.../final``    scale control's new style (a transfer
                                          that mixes its style first)
``config/text_summary``                   the resolved config (JSON)
========================================  ==========================================

Steps are global, as on ``losses.png``: stage k's step s is s plus the steps
of the stages before it; the phases of a content folder (one per batch) and
the scale mix follow each other on that axis. A content folder's losses are
batch means (as in the log); its images are tagged per image,
``image/current/<stem>`` and ``image/final/<stem>``. Images are at most
``MAX_SIDE`` px on their long side (the full-size files are in the workdir).
``job=fast_train`` writes the same ``loss/*`` tags (the training loss per
step, the terms at each chunk's last step) and the config.

Only process 0 writes; every process runs the hook (the images are gathered
with a collective). The summaries are tensorboardX's protos (no
TensorFlow), written synchronously by :class:`EventFile` (no background
thread) and flushed to the OS after every chunk, so a killed process leaves
whole records (at worst a cut last one, which TensorBoard skips); the file is
synced and closed after the last phase, or at exit after an exception or a
stop signal.

Resume: a resumed run writes a new event file that opens with a
``SessionLog.START`` at step C + 1 (C the checkpoint's global step), and
TensorBoard drops the first attempt's events from C + 1 on — the ones after
the checkpoint, which the resumed run writes again — so every step shows
once, with the values of the trimmed ``losses.jsonl``. A fresh run (no
checkpoint, or ``resume=False``) opens with a START at step 0, which hides an
earlier run's events in the same workdir. (TensorBoard's Rust data server,
its default loader, ignores START but drops, per tag, the points after a
step that is written again: the same view; both checked.) The config is written once per
attempt, at the step it starts from.

Example:
  >>> hook = summaries.hook(workdir, spec, config, plan)   # a no-op Hook if off
  >>> engine.execute(plan, params, hooks=[reporter, hook])
  $ tensorboard --logdir WORKDIR
"""

from __future__ import annotations

import atexit
import os
import socket
import struct
import time

import numpy as np
from PIL import Image

from nst_jax import image_io
from nst_jax import objective
from nst_jax import sharding
from nst_jax.engine import Hook
from nst_jax.workdir import writer

MAX_SIDE = 1024                        # long side of an image summary, px
TERM_TAGS = ('content', 'style', 'tv')  # per chunk; 'total' is per step


def hook(workdir: str, spec, config, stages, plan=None) -> Hook:
  """The run's :class:`TensorBoard` hook, or a no-op :class:`Hook` when
  ``spec.tensorboard`` is off. ``stages``: ``(hw, steps, images)`` per stage
  (:func:`nst_jax.plan.reported_stages`); ``plan``: the optimisation's (names
  the images; None for ``fast_train``, which writes losses and config only)."""
  return TensorBoard(workdir, config, stages, plan) if spec.tensorboard else Hook()


class TensorBoard(Hook):
  """Loss scalars, images and the config as TensorBoard summaries (an engine hook).

  Args:
    workdir: where the event files go.
    config: the run's ConfigDict (written as text).
    stages: ``(hw, steps, images)`` per stage (its steps place it on the axis).
    plan: the optimisation's :class:`~nst_jax.plan.Plan`, or None (no images;
      the file closes after the last stage instead of the last phase).
  """

  def __init__(self, workdir: str, config, stages, plan=None):
    self.workdir, self.config = workdir, config
    self.steps = [steps for _, steps, _ in stages]
    self.every = plan.spec.save_every if plan is not None else 0
    self.phases = len(plan.phases) if plan is not None else None
    # Per global stage: (tag prefix, image names or None for a single image).
    self.stage_tags = [] if plan is None else [
        _tags(p, plan.spec) for p in plan.phases for _ in p.stages]
    self._offsets: dict[int, int] = {}   # stage -> its first global step - 1
    self._next = 0
    self._ran = False                    # a stage of this phase ran (not skipped)
    self._events = None

  # -- engine hooks -----------------------------------------------------
  def stage_skipped(self, stage):
    self._offsets[stage] = self._next
    self._next += self.steps[stage]

  def stage_start(self, stage, compile_s, resumed_at):
    self.stage_skipped(stage)
    self._ran = True
    if self._events is None and writer():
      self._open(self._offsets[stage] + resumed_at)

  def chunk(self, stage, before, state, metrics, terms):
    offset, after = self._offsets[stage], int(state.step)
    images = None
    if self.every and after // self.every > before // self.every:
      images = sharding.to_host(state.output)        # every process (a collective)
    if self._events is None:
      return
    active = np.asarray(metrics.active)
    losses = np.asarray(metrics.loss, np.float64)[active]   # [steps, B], as the log
    for i, loss in enumerate(losses):
      self._write(offset + before + i + 1, [self._scalar('loss/total', np.mean(loss))])
    self._write(offset + after, [self._scalar(f'loss/{k}', terms[k]) for k in TERM_TAGS
                                 + (('temporal',) if 'temporal' in terms else ())])
    if images is not None:
      self._images(stage, 'current', offset + after,
                   [objective.pixels_to_image(p) for p in images])
    self._events.flush()

  def stage_end(self, stage, state):
    if self.phases is None:                          # fast_train: its one stage
      self.close()

  def phase_end(self, index, phase, images):
    ran, self._ran = self._ran, False
    if self._events is not None and ran:             # a skipped phase wrote it before
      self._images(len(self._offsets) - 1, 'final', self._next, images)
      self._events.flush()
    if index == self.phases - 1:
      self.close()

  # -- writing ----------------------------------------------------------
  def _open(self, start: int) -> None:
    """A new event file; its START at ``start + 1`` (0 for a fresh run) hides
    what an earlier attempt wrote from there on."""
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    from tensorboardX.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
    self._pb, self._summary, self._Summary = event_pb2, summary, summary_pb2.Summary
    self._events = EventFile(self.workdir)
    self._events.write(event_pb2.Event(
        wall_time=time.time(), step=start + 1 if start else 0,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    text = self.config.to_json_best_effort(indent=2)
    self._write(start, summary.text('config', f'```json\n{text}\n```').value)
    self._events.flush()
    atexit.register(self.close)

  def _write(self, step: int, values) -> None:
    self._events.write(self._pb.Event(wall_time=time.time(), step=int(step),
                                      summary=self._Summary(value=list(values))))

  def _scalar(self, tag: str, value):
    return self._Summary.Value(tag=tag, simple_value=float(value))

  def _images(self, stage: int, kind: str, step: int, images) -> None:
    prefix, names = self.stage_tags[stage]
    values = []
    for k, image in enumerate(images):
      tag = f'{prefix}/{kind}' + (f'/{names[k]}' if names else '')
      values += self._summary.image(tag, _thumbnail(image), dataformats='HWC').value
    self._write(step, values)

  def close(self) -> None:
    """Writes out and closes the event file (idempotent)."""
    if self._events is not None:
      self._events.close()
      self._events = None
      atexit.unregister(self.close)


class EventFile:
  """An append-only event file: TFRecord framing of ``Event`` protos, the
  format TensorBoard reads (``length, crc(length), data, crc(data)``, CRCs
  masked CRC-32C, little-endian).

  The name sorts in time order, ``events.out.tfevents.<time>.<host>.<pid>``
  (TensorBoard reads a directory's files in name order), and the file is
  created exclusively, so two runs never share or truncate a file.
  :meth:`flush` hands the records to the OS (a killed process loses
  nothing flushed); :meth:`close` also syncs them to disk.
  """

  def __init__(self, directory: str):
    name = f'events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}'
    self.path = os.path.join(directory, name)
    self._file = open(self.path, 'xb')
    from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
    self.write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def write(self, event) -> None:
    data = event.SerializeToString()
    header = struct.pack('<Q', len(data))
    self._file.write(header + struct.pack('<I', _masked_crc(header)) + data
                     + struct.pack('<I', _masked_crc(data)))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.flush()
    os.fsync(self._file.fileno())
    self._file.close()


def _masked_crc(data: bytes) -> int:
  import google_crc32c  # pylint: disable=g-import-not-at-top
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


def _tags(phase, spec):
  """(tag prefix, per-image names or None) of a phase's images."""
  if phase.kind == 'scale_mix' and spec.mode != 'scale_mix':
    return 'mixed_style', None
  return 'image', ([c.name for c in phase.contents] if spec.batch else None)


def _thumbnail(image) -> np.ndarray:
  """uint8 ``[H, W, 3]`` (rounded as the saved files are), at most ``MAX_SIDE``."""
  pixels = image_io.to_uint8(image)
  h, w = pixels.shape[:2]
  if max(h, w) <= MAX_SIDE:
    return pixels
  s = MAX_SIDE / max(h, w)
  size = (max(1, round(w * s)), max(1, round(h * s)))
  return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
