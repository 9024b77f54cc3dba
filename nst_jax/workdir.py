"""The workdir of a CLI run: what files go where, written atomically.

========================  ====================================================
``final.png``             the result (``config.output``); a content folder
                          gives ``batch/<input stem>.<ext>`` per image instead
``final.mp4``             a clip's result (the output's stem + ``.mp4``: source
                          frame rate, audio copied), written after its last
                          frame; ``frames/NNNNN.<ext>`` each frame as it ends
``mixed_style.png``       scale control's new style (``mode=transfer``)
``losses.jsonl``          the loss log (:mod:`nst_jax.progress`)
``losses.png``            loss curves per term
``config.json``           the resolved config
``intermediates/``        ``stageK_stepNNNNN.png`` every ``save_every`` steps
                          (``<stem>_stageK_stepNNNNN.png`` in batch mode)
``checkpoints/``          orbax checkpoints (:mod:`nst_jax.checkpoint`)
``.lock``                 held while a run uses the workdir (:func:`locked`)
========================  ====================================================

Only process 0 of a multi-host run writes, and only it takes the lock: a
second run on the same workdir stops with one line naming the first's pid
(exit 2) instead of writing the same checkpoints and outputs.
:class:`Session` is what every run with a workdir shares (the optimisation
and fast-network training): the checks, checkpoints, ``config.json``, the
loss log, progress, stop signals and the plot.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket

import jax

from nst_jax import checkpoint
from nst_jax import image_io
from nst_jax import objective
from nst_jax import sharding
from nst_jax import video_io
from nst_jax.engine import Hook
from nst_jax.errors import NSTError
from nst_jax.files import atomic_write
from nst_jax.progress import Reporter, plot_losses

LOSS_LOG = 'losses.jsonl'
LOSS_PLOT = 'losses.png'
CONFIG_FILE = 'config.json'
INTERMEDIATES = 'intermediates'
MIXED_STYLE = 'mixed_style.png'
BATCH_DIR = 'batch'
FRAMES_DIR = 'frames'
LOCK_FILE = '.lock'

log = logging.getLogger(__name__)


def writer() -> bool:
  """True on the process that writes files (process 0)."""
  return jax.process_index() == 0


def check_writable(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write-test-{jax.process_index()}-{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.unlink(probe)
  except OSError as e:
    raise NSTError(f'workdir {workdir} is not writable ({e.strerror or e})') from None


@contextlib.contextmanager
def locked(workdir: str | None):
  """Holds ``workdir``'s lock for the body (process 0; no-op for None).

  ``flock`` on ``workdir/.lock``, which then holds our pid: another run that
  holds it makes this an :class:`NSTError` naming its pid. The kernel drops
  the lock when the file is closed or the process dies, ``kill -9`` included;
  a file system without locks (some network mounts) gets a warning.
  """
  if workdir is None or not writer():
    yield
    return
  check_writable(workdir)
  fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode(errors='replace').strip() or 'pid unknown'
      raise NSTError(f'workdir {workdir} is in use by another run ({holder}); wait for '
                     'it to end, or use another --workdir') from None
    except OSError as e:
      log.warning('cannot lock %s (%s): a second run on it would not be stopped',
                  workdir, e.strerror or e)
    else:
      os.ftruncate(fd, 0)
      os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()}\n'.encode(), 0)
    yield
  finally:
    os.close(fd)


def write_config(workdir: str, config) -> None:
  if writer():
    atomic_write(os.path.join(workdir, CONFIG_FILE),
                 lambda f: f.write(config.to_json_best_effort(indent=2) + '\n'), 'w')


def trim_log(workdir: str, point) -> list:
  """On resume keep the loss log up to the checkpoint; otherwise start afresh."""
  path = os.path.join(workdir, LOSS_LOG)
  if not os.path.exists(path):
    return []
  kept = []
  if point is not None:
    with open(path, encoding='utf-8') as f:
      for line in f:
        try:
          r = json.loads(line)
        except ValueError:
          break                                  # a line cut by a kill
        if (r.get('stage', 0), r.get('step', 0)) <= (point['stage'], point['step']):
          kept.append(r)
  if writer():
    atomic_write(path, lambda f: f.write(''.join(json.dumps(r) + '\n' for r in kept)), 'w')
  return kept


def log_path(workdir: str) -> str | None:
  return os.path.join(workdir, LOSS_LOG) if writer() else None


class Session:
  """A run's workdir scaffolding, as a context manager.

  On entry: the workdir checked writable, the
  :class:`~nst_jax.checkpoint.Checkpointer` (with a ``fingerprint``; it
  refuses another config's checkpoints before anything is overwritten),
  ``config.json``, the loss log trimmed to the checkpoint. :meth:`hooks`, as
  the run starts: the :class:`~nst_jax.progress.Reporter` and the stop-signal
  handlers. On exit: all closed, and after a run that did not raise
  ``losses.png``. ``workdir=None``: a reporter without files.

  Example:
    >>> with Session(workdir, config, [((170, 256), 150, 1)], fingerprint=fp) as s:
    ...   files = Outputs(workdir, spec, len(plan.phases))
    ...   outputs = engine.execute(plan, params, hooks=s.hooks(files),
    ...                            resume=s.checkpointer)
  """

  def __init__(self, workdir: str | None, config, stages, *, fingerprint: str | None = None,
               checkpoint_every: int = 0, resume: bool = True, quiet: bool = False):
    """``stages``: ``(hw, steps, images)`` per stage of the run; ``fingerprint``:
    of the config and plan (:func:`nst_jax.checkpoint.fingerprint`), None for
    no checkpoints."""
    self.workdir, self.config, self.stages = workdir, config, list(stages)
    self._fingerprint, self._every, self._resume = fingerprint, checkpoint_every, resume
    self._quiet = quiet
    self.checkpointer = self.reporter = None
    self._kept, self._restore_signals = [], None

  def __enter__(self) -> 'Session':
    if self.workdir is not None:
      check_writable(self.workdir)
      if self._fingerprint is not None:
        self.checkpointer = checkpoint.Checkpointer(
            self.workdir, self._fingerprint, [steps for _, steps, _ in self.stages],
            self._every, self._resume)
      write_config(self.workdir, self.config)
      point = None if self.checkpointer is None else self.checkpointer.point
      self._kept = trim_log(self.workdir, point)
    return self

  def hooks(self, *hooks: Hook) -> list[Hook]:
    """``[reporter, *hooks, checkpointer]`` (last: it saves after the others
    have seen a chunk). Call it as the run starts: the reporter's clock and
    the stop-signal handlers start here."""
    self.reporter = Reporter(self.stages,
                             None if self.workdir is None else log_path(self.workdir),
                             quiet=self._quiet or not writer(), previous=self._kept)
    if self.checkpointer is None:
      return [self.reporter, *hooks]
    self._restore_signals = self.checkpointer.install_signal_handlers()
    return [self.reporter, *hooks, self.checkpointer]

  def __exit__(self, exc_type, exc, tb) -> None:
    if self.reporter is not None:
      self.reporter.close()
    if self._restore_signals is not None:
      self._restore_signals()
    if self.checkpointer is not None:
      self.checkpointer.close()
    if exc_type is None and self.workdir is not None and self.reporter and writer():
      plot_losses(os.path.join(self.workdir, LOSS_PLOT), self.reporter)


class Outputs(Hook):
  """Writes each phase's images when it ends (a batch's as each batch ends);
  a clip's video after the last of the plan's ``phases``."""

  def __init__(self, workdir: str, spec, phases: int = 0):
    self.workdir, self.spec = workdir, spec
    self.last = phases - 1                        # a clip's video after its last phase

  def path(self, phase, name: str) -> str:
    spec = self.spec
    if phase.kind == 'frame':
      return os.path.join(self.workdir, FRAMES_DIR, name + frame_ext(spec.output))
    if phase.kind == 'scale_mix':
      return os.path.join(self.workdir, spec.output if spec.mode == 'scale_mix'
                          else MIXED_STYLE)
    if spec.batch:
      return os.path.join(self.workdir, BATCH_DIR,
                          name + os.path.splitext(spec.output)[1])
    return os.path.join(self.workdir, spec.output)

  def phase_end(self, index, phase, images):
    if not writer():
      return
    if phase.kind == 'pass':                      # a multi-pass clip's pass before the last
      return
    final = phase.kind in ('transfer', 'frame') or self.spec.mode == 'scale_mix'
    for source, image in zip(phase.contents, images or ()):   # None: written before
      if final:
        image_io.save_image(self.path(phase, source.name), image,
                            bits=self.spec.output_bits, dpi=self.spec.dpi or None)
      else:
        image_io.save_image(self.path(phase, source.name), image)
    if phase.kind == 'frame' and index == self.last:
      self.write_video(phase)

  def write_video(self, last_phase) -> None:
    del last_phase
    write_clip(self.workdir, self.spec)


def write_clip(workdir: str, spec) -> None:
  """``final.mp4`` from a clip's written ``frames/`` (every frame is there: a
  resumed run kept the finished ones), at the source's rate, with its audio
  (the optimisation's :class:`Outputs` and fast_apply both end with it)."""
  v = spec.video
  ext = frame_ext(spec.output)
  frames = video_io.FrameFiles(os.path.join(workdir, FRAMES_DIR, f'{k + 1:05d}{ext}')
                               for k in range(v.info.frames))
  video_io.write_video(video_path(workdir, spec.output), frames, v.info.rate,
                       audio_from=v.path if v.info.audio else None)


def frame_ext(output: str) -> str:
  """A clip's frame files' extension: the output's (``final.mp4``: ``.png``)."""
  ext = os.path.splitext(output)[1]
  return '.png' if ext.lower() == '.mp4' else ext


def video_path(workdir: str, output: str) -> str:
  """Where a clip's video goes: the output's stem + ``.mp4`` (``final.mp4``)."""
  return os.path.join(workdir, os.path.splitext(output)[0] + '.mp4')


class Intermediates(Hook):
  """Saves the images every ``save_every`` steps into ``intermediates/``."""

  def __init__(self, workdir: str, plan, save_every: int):
    self.workdir, self.every = workdir, save_every
    self.names = [[c.name for c in p.contents] for p in plan.phases
                  for _ in p.stages]
    self.batch = plan.spec.batch or plan.spec.video is not None

  def chunk(self, stage, before, state, metrics, terms):
    after = int(state.step)
    if not self.every or after // self.every <= before // self.every:
      return
    images = sharding.to_host(state.output)         # every process (a collective)
    if not writer():
      return
    for name, pixels in zip(self.names[stage], images):
      prefix = f'{name}_' if self.batch else ''
      path = os.path.join(self.workdir, INTERMEDIATES,
                          f'{prefix}stage{stage + 1}_step{after:05d}.png')
      image_io.save_image(path, objective.pixels_to_image(pixels))
