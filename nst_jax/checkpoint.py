"""Preemption-safe resume: orbax checkpoints of the optimisation in the workdir.

What is saved, under ``WORKDIR/checkpoints/<global step>/``: the current
stage's :class:`~nst_jax.optim.StageState` (pixels, optimiser state, step;
every leaf with the batch axis first) and a small JSON (stage index over the
whole plan, step in stage, fingerprint of the config and the plan). Saves
happen at chunk boundaries every ``checkpoint_every`` steps, at the end of
every stage, and when SIGTERM/SIGINT arrives (the run then stops with exit
status 143/130). Orbax writes into a temporary directory and renames it when
complete, so a ``kill -9`` mid-save leaves the previous checkpoint intact.
A finished phase's output images (the scale mix's style, a batch's results)
go to ``checkpoints/phase_outputs/<phase>.npy`` (atomic), for the phases
after it.

The :class:`Checkpointer` is an engine hook (it saves) and the engine's
``resume`` source. Running the same command again resumes from the newest
checkpoint: earlier stages are skipped, the stage's state is restored and the
loop continues; the final image is bit-identical to an uninterrupted run on
CPU (tested, for one image and for a batch). A checkpoint from a different
config (fingerprint mismatch) is refused with a one-line error rather than
silently mixed.

A damaged checkpoint (bytes overwritten, files cut or missing: anything
orbax, tensorstore or numpy cannot read back, or phase outputs that are not
images in [0, 1]) is refused too, with one line naming it and the way out,
``--config.resume=False`` (which deletes ``checkpoints/`` and starts over).
It is not skipped silently: the run would then overwrite hours of saved
work that a transient read error (a network file system) or a restore from
backup might still recover.

A save the disk cannot hold is refused before orbax starts (free space
below the state's uncompressed size: orbax failing midway leaves its writer
threads running and complaining), and one that fails anyway (the disk filled
meanwhile) removes its partial temp directory; both raise
:class:`nst_jax.files.WriteError` naming the checkpoint, and the previous
checkpoint stays intact. Orbax's log records of a failure that becomes such
a line (its threads log each I/O error with a traceback) are dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config as config_lib
from nst_jax import memory
from nst_jax import sharding
from nst_jax.engine import Hook
from nst_jax.errors import NSTError
from nst_jax.files import WriteError, atomic_write, free_bytes, write_error

log = logging.getLogger(__name__)

CHECKPOINTS = 'checkpoints'
PHASE_OUTPUTS = 'phase_outputs'
# Fields that do not change the optimisation's numbers.
_NOT_FINGERPRINTED = ('output', 'save_every', 'checkpoint_every', 'resume',
                      'compilation_cache', 'output_bits', 'dpi', 'tensorboard',
                      # memory, not numbers: a resumed stage keeps its saved tile
                      'tile', 'memory_limit_gb',
                      'train_steps')   # fast_train: a longer run continues a shorter one
# Fields added after checkpoints existed, with the value that reproduces the
# runs before them: left out at that value, so those checkpoints still resume.
_ADDED_LATER = {'style_statistic': 'gram', 'network': 'original', 'average_decay': 0.0,
                # video (issue 16): a still's result does not depend on them
                'clip': False, 'temporal_weight': config_lib.TEMPORAL_WEIGHT,
                'temporal_frames': [1], 'frame_init': 'warped',
                'frame_steps': config_lib.FRAME_STEPS, 'flow': 'dis_medium',
                'frame_rate': 0.0, 'max_frames': 0,
                'passes': 1, 'pass_steps': config_lib.PASS_STEPS,
                'pass_blend': config_lib.PASS_BLEND, 'temporal_from_pass': 2,
                'pass_order': 'red_black'}


def fingerprint(config, plan_signature=None, fields=None) -> str:
  """SHA-256 of the config fields that determine the result, and of the plan
  (input names and stage sizes: a folder whose images changed is a new run).
  ``fields``: hash only these (a job that names what it depends on, so that
  fields added later do not invalidate its checkpoints)."""
  d = json.loads(config.to_json_best_effort())
  if fields is not None:
    d = {k: d.get(k) for k in fields}
  for k in _NOT_FINGERPRINTED:
    d.pop(k, None)
  for k, old in _ADDED_LATER.items():
    if d.get(k) in (None, old):                # absent (an older config) or that value
      d.pop(k, None)
  d['__plan__'] = plan_signature
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class Preempted(Exception):
  """Raised after the state was saved because a stop signal arrived."""

  def __init__(self, signum, stage, step):
    super().__init__(f'stopped by signal {signum} in stage {stage + 1} at step '
                     f'{step}; state saved, run the same command to resume')
    self.signum = signum


class Checkpointer(Hook):
  """Saves and restores stage states in ``workdir/checkpoints`` with orbax."""

  def __init__(self, workdir: str, config_fingerprint: str, stage_steps=(),
               every: int = 0, resume: bool = True):
    """``stage_steps``: steps of every stage of the plan (checkpoints are
    numbered by global step)."""
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    self.every = every
    self.fingerprint = config_fingerprint
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINTS))
    if not resume and os.path.isdir(self.directory) and jax.process_index() == 0:
      shutil.rmtree(self.directory)
    if jax.process_count() > 1:             # nobody reads before process 0 cleared
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('nst_jax checkpoints ready')
    self.stop_signal = None
    os.makedirs(self.directory, exist_ok=True)   # a full disk: one line from main
    with self._reading(self.directory):     # orbax logs what it cannot read: held
      self.manager = ocp.CheckpointManager(
          self.directory, options=ocp.CheckpointManagerOptions(
              max_to_keep=2, enable_async_checkpointing=False, create=True,
              cleanup_tmp_directories=True),   # a save cut by a kill or a full disk
          item_names=('state', 'meta'))
      self.point = self._latest_point()
    self._last_saved = None
    self._stage_steps = list(stage_steps)
    self._choice = {}                        # the running stage's tile and history

  # -- resume -----------------------------------------------------------
  def _latest_point(self):
    step = self.manager.latest_step()
    if step is None:
      return None
    with self._reading(self._step_path(step)):
      meta = self.manager.restore(step, args=self._ocp.args.Composite(
          meta=self._ocp.args.JsonRestore()))['meta']
    if meta.get('fingerprint') != self.fingerprint:
      raise NSTError(f'{self.directory} holds a checkpoint of a different config; '
                     'use another --workdir, or --config.resume=False to start over')
    meta['global_step'] = step
    log.info('resuming from stage %d step %d (%s)', meta['stage'] + 1, meta['step'],
             self.directory)
    return meta

  def stage_as_saved(self, stage: int, stage_plan):
    """``stage_plan`` with the tile and L-BFGS history the checkpoint of this
    stage was made with (the memory plan may choose others now; the saved
    optimiser state has that history's shape). The engine asks before it
    runs a stage; that stage's checkpoints record the tile and history returned."""
    point = self.point
    if point is not None and point['stage'] == stage and 'lbfgs_memory' in point:
      saved = dict(tile=point['tile'], lbfgs_memory=point['lbfgs_memory'])
      if saved != dict(tile=stage_plan.tile, lbfgs_memory=stage_plan.lbfgs_memory):
        log.info('stage %d resumes with its saved tile %d and L-BFGS history %d (the plan '
                 'now chose %d and %d)', stage + 1, saved['tile'], saved['lbfgs_memory'],
                 stage_plan.tile, stage_plan.lbfgs_memory)
      if stage_plan.memory is not None:        # the estimate of what now runs
        saved['memory'] = memory.replan(stage_plan.memory, **saved)
      stage_plan = dataclasses.replace(stage_plan, **saved)
    self._choice = dict(tile=int(stage_plan.tile), lbfgs_memory=int(stage_plan.lbfgs_memory))
    return stage_plan

  def skip_stage(self, stage: int) -> bool:
    """True if the checkpoint is in a later stage (this one is done)."""
    return self.point is not None and self.point['stage'] > stage

  def restore(self, stage: int, template, shardings=None):
    """The saved state of ``stage`` shaped like ``template`` (arrays or
    ``jax.ShapeDtypeStruct``), or None. Each leaf is read straight into its
    sharding from ``shardings`` (a matching tree; default: the template
    leaf's own, else this process's first device): with several processes
    every process reads its shards only."""
    if self.point is None or self.point['stage'] != stage:
      return None
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if shardings is None:
      shardings = jax.tree.map(lambda x: getattr(x, 'sharding', None) or local, template)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), _dtype(x), sharding=s),
        template, shardings)
    step, path = self.point['global_step'], self._step_path(self.point['global_step'])
    with self._reading(path):
      state = self.manager.restore(step, args=self._ocp.args.Composite(
          state=self._ocp.args.StandardRestore(abstract)))['state']
    if 'digest' in self.point and digest(state) != self.point['digest']:
      raise self._damaged(path, 'its arrays differ from the digest saved with them')
    return state

  def phase_output(self, index: int):
    """A finished phase's images, saved by :meth:`phase_end`, or None."""
    path = os.path.join(self.directory, PHASE_OUTPUTS, f'{index}.npy')
    if not os.path.exists(path):
      return None
    with self._reading(path):
      images = np.load(path, allow_pickle=False)
      if not (images.dtype == np.float32 and np.isfinite(images).all() and
              -1e-6 <= images.min() and images.max() <= 1 + 1e-6):
        raise ValueError('not images in [0, 1]')
    return list(images)

  # -- engine hooks -----------------------------------------------------
  def chunk(self, stage, before, state, metrics, terms):
    del before, metrics, terms
    global_step = self._offset(stage) + int(state.step)
    self.check_stop(stage, global_step, state)
    self.save(stage, global_step, state)

  def stage_end(self, stage, state):
    self.save(stage, self._offset(stage) + int(state.step), state, force=True)

  def drop_phase_output(self, index: int) -> None:
    """Deletes a finished phase's saved images that no later phase reads (a
    clip's frames, once written: ``frames/`` holds them)."""
    if jax.process_index() == 0:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(self.directory, PHASE_OUTPUTS, f'{index}.npy'))

  def phase_end(self, index, phase, images):
    del phase
    if jax.process_index() != 0 or images is None:    # None: a dropped, finished phase
      return
    path = os.path.join(self.directory, PHASE_OUTPUTS, f'{index}.npy')
    stacked = np.stack([np.asarray(i, np.float32) for i in images])
    atomic_write(path, lambda f: np.save(f, stacked, allow_pickle=False))

  def _offset(self, stage: int) -> int:
    return sum(self._stage_steps[:stage])

  # -- save -------------------------------------------------------------
  def save(self, stage: int, global_step: int, state, force: bool = False):
    """Saves at a chunk boundary if due (``force``: always). With several
    processes all of them call it with the same arguments (orbax saves
    together)."""
    step = int(state.step)
    due = self.every and (self._last_saved is None or
                          global_step // self.every > self._last_saved // self.every)
    if not (force or due) or global_step == self._last_saved:
      return
    if self.manager.latest_step() == global_step:
      self._last_saved = global_step
      return
    meta = {'stage': stage, 'step': step, 'fingerprint': self.fingerprint,
            'digest': digest(state), **self._choice}
    self._check_space(global_step, state)
    with self._writing(global_step):
      self.manager.save(global_step, args=self._ocp.args.Composite(
          state=self._ocp.args.StandardSave(state), meta=self._ocp.args.JsonSave(meta)))
      self.manager.wait_until_finished()
    self._last_saved = global_step

  def check_stop(self, stage: int, global_step: int, state):
    """After a chunk: if a stop signal came (to any process), save and raise
    :class:`Preempted`."""
    signum = self.stop_signal or 0
    signum = sharding.agree(signum)         # the processes agree, then save together
    if signum:
      self.save(stage, global_step, state, force=True)
      raise Preempted(signum, stage, int(state.step))

  def install_signal_handlers(self):
    """SIGTERM/SIGINT set a flag; the loop saves and stops at the next chunk."""
    def handler(signum, frame):
      del frame
      if self.stop_signal is not None:       # second signal: stop now
        raise KeyboardInterrupt
      self.stop_signal = signum
      log.warning('signal %d: saving and stopping after this chunk', signum)
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    return lambda: [signal.signal(s, h) for s, h in previous.items()]

  def close(self):
    self.manager.close()

  # -- failures as one line -----------------------------------------------
  def _step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _reading(self, path: str):
    """Any failure to read ``path`` back is a damaged checkpoint (one line)."""
    return _orbax_failures(lambda e: e if isinstance(e, NSTError) else self._damaged(
        path, (str(e).strip().splitlines() or [type(e).__name__])[0][:200]))

  def _damaged(self, path: str, why: str) -> NSTError:
    return NSTError(f'checkpoint {path} is damaged or unreadable ({why}); rerun with '
                    f'--config.resume=False to start over (deletes {self.directory})')

  def _check_space(self, step: int, state) -> None:
    """Refuses a save the disk cannot hold (this process's share of the
    state, uncompressed, + 1 MiB): orbax failing midway leaves its writer
    threads running, writing and complaining after the error."""
    need = sum(_bytes_written(x) for x in jax.tree.leaves(state)) + (1 << 20)
    free = free_bytes(self.directory)
    if sharding.agree(int(free < need)):       # the processes refuse together
      raise WriteError(errno.ENOSPC, f'{os.strerror(errno.ENOSPC)} (a checkpoint needs '
                       f'up to {need / 1e6:.1f} MB, {free / 1e6:.1f} MB free)',
                       self._step_path(step))

  @contextlib.contextmanager
  def _writing(self, step: int):
    """An I/O failure of a save (the disk filled meanwhile): a WriteError,
    once orbax's writers have stopped and its temp directory is removed.
    Orbax's writer threads report their failures as unraisable exceptions
    'Event loop is closed' (a trace each), also after the save gave up:
    those are dropped from the save on, and after a failure for good."""
    path, previous = self._step_path(step), sys.unraisablehook
    def failed(e):
      error = _write_error(e, path)
      if error is not None and jax.process_index() == 0:
        for tmp in glob.glob(f'{glob.escape(path)}.orbax-checkpoint-tmp*'):
          _settle(tmp)
          shutil.rmtree(tmp, ignore_errors=True)
      return error
    sys.unraisablehook = lambda u: None if _closed_loop(u.exc_value) else previous(u)
    with _orbax_failures(failed):
      yield
    sys.unraisablehook = previous


class _Hold(logging.Filter):
  """Keeps the records it sees instead of letting them through."""

  def __init__(self):
    super().__init__()
    self.records = []

  def filter(self, record):
    self.records.append(record)
    return False


@contextlib.contextmanager
def _orbax_failures(convert):
  """Runs orbax calls with their log records held (orbax logs through absl).
  An exception that ``convert`` turns into a one-line error is raised as that,
  and the held records are dropped; otherwise they are passed on."""
  logger, hold = logging.getLogger('absl'), _Hold()
  logger.addFilter(hold)
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except  (convert decides)
    error = convert(e)
    if error is None:
      raise
    hold.records.clear()
    raise error from None
  finally:
    logger.removeFilter(hold)
    for record in hold.records:
      logger.handle(record)


def _bytes_written(x) -> int:
  """The bytes of ``x`` this process writes (one replica of its shards)."""
  shards = getattr(x, 'addressable_shards', None)
  if shards is None:
    return int(np.asarray(x).nbytes)
  return sum(int(s.data.nbytes) for s in shards if s.replica_id == 0)


def _settle(directory: str, quiet_s: float = 0.2, limit_s: float = 5.0) -> None:
  """Waits until nothing in ``directory`` changed for ``quiet_s`` seconds."""
  def snapshot():
    return sorted((r, n, os.path.getsize(os.path.join(r, n))) for r, _, ns in
                  os.walk(directory) for n in ns if os.path.exists(os.path.join(r, n)))
  last, since, start = None, 0.0, time.monotonic()
  while time.monotonic() - start < limit_s:
    now = snapshot()
    if now != last:
      last, since = now, time.monotonic()
    elif time.monotonic() - since >= quiet_s:
      return
    time.sleep(0.05)


def _closed_loop(e) -> bool:
  return isinstance(e, RuntimeError) and str(e) == 'Event loop is closed'


def digest(state) -> list[int]:
  """Per leaf of ``state``, two sums of its bits as uint32 words (plain and
  position-weighted, mod 2**32), saved in the meta and checked on restore:
  orbax reads overwritten bytes back without complaint (no checksums). The
  sums are exact and order-free, so equal on any mesh and any number of
  processes (a collective with several: every process calls it)."""
  return [int(v) for v in sharding.to_host(_digest(state))]


@jax.jit
def _digest(state):
  sums = []
  for x in jax.tree.leaves(state):
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
      x = x.astype(jnp.uint8)
    words = jax.lax.bitcast_convert_type(
        x, jnp.dtype(f'uint{8 * x.dtype.itemsize}')).astype(jnp.uint32)
    position = sum((jax.lax.broadcasted_iota(jnp.uint32, x.shape, d) *
                    jnp.uint32(math.prod(x.shape[d + 1:]) % 2**32)
                    for d in range(x.ndim)), jnp.uint32(1))   # no reshape of shards
    sums += [jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * position, dtype=jnp.uint32)]
  return jnp.stack(sums) if sums else jnp.zeros((0,), jnp.uint32)


def _write_error(e: Exception, path: str) -> WriteError | None:
  """An I/O failure of orbax (an ``OSError``, or tensorstore's status with an
  ``os_error_code``) as a :class:`WriteError` naming ``path``; None otherwise."""
  if isinstance(e, OSError):
    return write_error(e, path, os.path.dirname(path))
  code = re.search(r"os_error_code='?(\d+)", str(e))
  if code is None:
    return None
  return WriteError(int(code.group(1)), os.strerror(int(code.group(1))), path)


def _dtype(x):
  return x.dtype if hasattr(x, 'dtype') else np.asarray(x).dtype
