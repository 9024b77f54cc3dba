"""The memory plan: what a stage needs, what the device has, which tile fits.

Before anything is compiled or allocated, every stage's memory is estimated
per device from its size, batch, layers and options:

* weights: VGG19's 80 MB, and on CPU the Winograd transforms of its
  kernels of 256 and 512 outputs that the loss reaches
  (:func:`nst_jax.vgg.winograd_kernels`; 406 MB to conv5_1);
* targets: the content features (e.g. relu4_2: 32 bytes per pixel) and the
  guidance channels, per image;
* optimiser state: exact (``jax.eval_shape`` of the optimiser's init; L-BFGS
  keeps 2·m image-sized vectors and its line search a few more), plus the
  update's temporaries (8 image vectors for one image, 16 per image of a
  batch, measured with XLA's memory analysis);
* activations of one loss+gradient evaluation: untiled, a per-pixel cost
  from the layers in use (2800 bytes/px in float32 for relu1_1 ... relu5_1,
  measured, estimate 3032), plus with guidance the masked features
  ``[h, w, R, C]`` of every layer and their cotangent; tiled, that cost for
  one window plus 48 bytes/px of whole-image buffers (gradient accumulator,
  clipped image);
* on CPU, where a process's devices share its RAM, all of that times the
  process's devices, plus the host's own copies (decoded inputs, stage
  images; 6 image vectors) and 1.5 GB of runtime.

:func:`plan_stage` compares the total with the limit (``memory_limit_gb``, or
the accelerator's allocator limit, or on CPU 40% of the available RAM; with
several processes the smallest of theirs, so that all make the same plan)
and picks the tile: none when the whole image fits; else, for each L-BFGS
history from the one asked for down to 3, the tile of least estimated time
among those that fit, and of those histories the one with the least estimated
time (:func:`time_factor`: the
windows' pixels, the measured tiled overhead, the measured extra steps of a
shorter history; logged with the alternatives), a shorter history with a
warning; if nothing fits, it refuses the run with one line naming the
estimate, the limit and the fixes — before anything is allocated.

Example:
  >>> m = plan_stage((4096, 4096), batch=1, channels=3, layers=LAYERS,
  ...                content_layers=('relu4_2',), tile='auto', limit=10 * GB)
  >>> m.tile, m.total / GB
"""

from __future__ import annotations

import functools
import logging
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import optim
from nst_jax import sharding
from nst_jax import tiling
from nst_jax import vgg
from nst_jax.errors import NSTError

log = logging.getLogger(__name__)

GB = 2 ** 30
WEIGHTS_BYTES = sum(int(np.prod(s)) + s[-1] for s in vgg.conv_shapes().values()) * 4
# Share of the available RAM a CPU run plans for: the estimate was 14% above
# the measured peak RSS of a 4096² stage (WORKSPACE.md), the page cache wants
# room for the outputs and checkpoints, and the machine is usually shared.
CPU_RAM_SHARE = 0.40
# On CPU the process also holds Python, jaxlib and compiled code, and host
# copies of images (decoded inputs, resized stage images, outputs, the
# checkpoint writer's buffers): measured 2.9 GB beside XLA's buffers for one
# 4096² image.
CPU_RUNTIME_BYTES = int(1.5 * GB)
HOST_IMAGE_COPIES = 6
# Compiling the Winograd layers' transforms (nst_jax/winograd.py): peak RSS
# of tools/benchmark.py rose by 1.0 GB at 256-1024² with them, of which 0.39
# GB are the transformed kernels (counted under weights); XLA's own buffers
# did not grow (memory_analysis: 3151 -> 2911 B/px at 384²).
WINOGRAD_COMPILE_BYTES = int(0.6 * GB)
# L-BFGS update temporaries in image vectors: one image (the loop drops the
# batch axis) / per image of a batch (updated in place), measured at 1024-2048².
UPDATE_VECTORS = (8, 16)
IMAGE_BUFFER_BYTES = 48        # per pixel, whole-image buffers of a tiled evaluation
MIN_LBFGS_MEMORY = 3
# The time model of tile='auto' (relative to the stage untiled with the
# history asked for): a tiled evaluation costs its windows' pixels over the
# image's times TILED_TIME_FACTOR (the second forward pass, partly hidden;
# fitted to tools/poster_benchmark.py ratio at 2048²: 1.23-1.28), and a
# shorter L-BFGS history needs HISTORY_TIME_FACTOR[m] times the time of
# m = 10 for the same loss (tools/poster_benchmark.py history; linear in
# between, 1 from 10 up).
TILED_TIME_FACTOR = 1.26
HISTORY_TIME_FACTOR = {10: 1.0, 7: 1.07, 5: 1.10, 3: 1.16}


class StageMemory(NamedTuple):
  """A stage's memory plan (bytes, per device)."""
  total: int
  parts: dict                  # name -> bytes
  tile: int                    # 0: untiled
  lbfgs_memory: int
  limit: int
  hw: tuple = ()               # the stage's size
  inputs: dict = {}            # the rest of estimate()'s arguments (for replan)
  time: float = 1.0            # estimated time over the untiled stage's (time_factor)
  why: str = ''                # tile='auto': the estimates it chose among

  def describe(self) -> str:
    parts = ', '.join(f'{k} {v / GB:.2f}' for k, v in self.parts.items() if v)
    tile = f'tile {self.tile}' if self.tile else 'untiled'
    slower = f', est. {self.time:.1f}x the untiled time' if self.time > 1.0 else ''
    return (f'{self.total / GB:.2f} GB of {self.limit / GB:.1f} GB ({tile}, L-BFGS m='
            f'{self.lbfgs_memory}{slower}; GB: {parts})')


def device_limit(memory_limit_gb: float = 0.0) -> tuple[int, str]:
  """(bytes, where that number comes from) the plan may use per device."""
  if memory_limit_gb:
    return int(memory_limit_gb * GB), f'memory_limit_gb={memory_limit_gb:g}'
  device = jax.local_devices()[0]
  limit, source = None, ''
  if device.platform != 'cpu':
    stats = device.memory_stats() or {}
    if stats.get('bytes_limit'):
      limit, source = int(stats['bytes_limit'] * 0.95), (
          f'95% of {device.device_kind} allocator limit')
  if limit is None:               # CPU: for the process (see estimate's ``cpu``)
    limit, source = int(_available_ram() * CPU_RAM_SHARE), (
        f'{CPU_RAM_SHARE:.0%} of available RAM')
  if jax.process_count() > 1:     # one plan for all: the smallest limit (in MiB)
    limit = sharding.agree(limit // 2**20, np.min) * 2**20
    source += f', smallest of {jax.process_count()} processes'
  return limit, source


def _available_ram() -> int:
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_AVPHYS_PAGES')


def activation_bytes_per_pixel(layers, activation_dtype: str = 'float32',
                               content_layers=()) -> float:
  """Bytes per input pixel that one loss+gradient evaluation keeps alive.

  Σ over VGG's outputs up to the deepest layer of channels / stride², plus a
  constant for the backward pass's peak and the content layers' differences,
  in 4-byte words. Measured with XLA's memory analysis at 256²: 2800 B/px for
  relu4_2 + relu1_1 ... relu5_1 (estimate 3032), 2008 for relu2_1 + relu1_1,
  relu2_1 (estimate 2032). bfloat16 activations: 0.75 of that (measured 0.71).
  """
  deepest = max(vgg.LAYER_INDEX[l] for l in layers)
  channels = sum(vgg.layer_channels(n) / vgg.layer_stride(n) ** 2
                 for n in vgg.LAYER_NAMES[:deepest + 1])
  channels += sum(vgg.layer_channels(n) / vgg.layer_stride(n) ** 2 for n in content_layers)
  per_pixel = 4.0 * (channels + 140.0)
  return per_pixel * (0.75 if activation_dtype == 'bfloat16' else 1.0)


@functools.lru_cache(maxsize=256)
def _state_bytes(optimizer_name, lbfgs_memory, hw, channels, average=False) -> int:
  opt = optim.make_optimizer(optimizer_name, lbfgs_memory=lbfgs_memory,
                             average_decay=0.5 if average else 0.0)
  shape = jax.eval_shape(opt.init, jax.ShapeDtypeStruct(tuple(hw) + (channels,), jnp.float32))
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(shape))


TEMPORAL_TARGET_CHANNELS = 4            # per earlier frame: warped RGB + reliability
TEMPORAL_HOST_CHANNELS = 14             # per earlier frame: 2 flows (2 ch), its content
#                                         and result (3), warped result (3), c (1), init


def estimate(hw, *, batch: int, channels: int, layers, content_layers, tile: int,
             lbfgs_memory: int, optimizer: str = 'lbfgs', average: bool = False,
             activation_dtype: str = 'float32', regions: int = 0,
             mesh_shape=(1, 1), source_pixels: int = 0, cpu: bool = True,
             limit: int = 0, temporal: int = 0) -> StageMemory:
  """The memory of one stage per device (see the module docstring).

  ``temporal``: a clip frame's earlier frames in the temporal loss (each a
  warped RGB result and its reliability as targets, and on the host its two
  flows, the earlier content and result)."""
  b_dev, h_dev = mesh_shape
  images = -(-batch // b_dev)                 # images per device
  pixels = hw[0] * hw[1]
  vector = pixels * channels * 4
  t = tiling.make_tiling(hw, tile, layers) if tile else None
  act = activation_bytes_per_pixel(layers, activation_dtype, content_layers)
  if regions:   # guided Grams: the masked features [h, w, R, C] and their cotangent
    act += 2 * 4 * regions * sum(vgg.layer_channels(l) / vgg.layer_stride(l) ** 2
                                 for l in layers)
  if t is None:
    activations = act * pixels / h_dev
  else:                                       # one window + whole-image buffers
    activations = act * t.window_pixels + IMAGE_BUFFER_BYTES * pixels
  content = sum(vgg.layer_channels(l) / vgg.layer_stride(l) ** 2 for l in content_layers)
  guidance = regions * sum(1.0 / vgg.layer_stride(l) ** 2 for l in layers)
  targets = images * (content + guidance + TEMPORAL_TARGET_CHANNELS * temporal) * 4 \
      * pixels / h_dev
  update = UPDATE_VECTORS[0] if images == 1 else UPDATE_VECTORS[1]
  state = images * (_state_bytes(optimizer, lbfgs_memory, tuple(hw), channels, average)
                    + update * vector) / h_dev
  # (the engine prepares the Winograd kernels on CPU, not for images in bands)
  winograd = vgg.winograd_layers(layers, activation_dtype=activation_dtype) \
      if cpu and h_dev == 1 else ()
  weights = WEIGHTS_BYTES + vgg.winograd_kernel_bytes(winograd)
  parts = {'weights': weights, 'targets': int(targets), 'optimizer': int(state),
           'activations': int(activations)}
  if cpu:   # the process's CPU devices share its RAM: all of them, and the host's part
    here = max(1, b_dev * h_dev // jax.process_count())
    parts = {k: v * here for k, v in parts.items()}
    parts['host'] = int(CPU_RUNTIME_BYTES + (WINOGRAD_COMPILE_BYTES if winograd else 0)
                        + HOST_IMAGE_COPIES * batch * pixels * 3 * 4
                        + source_pixels * 3 * 4
                        + TEMPORAL_HOST_CHANNELS * temporal * batch * pixels * 4)
  inputs = dict(batch=batch, channels=channels, layers=layers, content_layers=content_layers,
                optimizer=optimizer, average=average, activation_dtype=activation_dtype,
                regions=regions, temporal=temporal,
                mesh_shape=mesh_shape, source_pixels=source_pixels, cpu=cpu, limit=limit)
  return StageMemory(int(sum(parts.values())), parts, tile if t is not None else 0,
                     lbfgs_memory, limit, tuple(hw), inputs)


def history_time_factor(m: int) -> float:
  """Time an L-BFGS history of ``m`` needs for m = 10's loss, relative to it."""
  known = sorted(HISTORY_TIME_FACTOR)
  if m >= known[-1]:
    return 1.0
  if m <= known[0]:
    return HISTORY_TIME_FACTOR[known[0]]
  hi = next(k for k in known if k >= m)
  lo = max(k for k in known if k <= m)
  if hi == lo:
    return HISTORY_TIME_FACTOR[hi]
  a = (m - lo) / (hi - lo)
  return (1 - a) * HISTORY_TIME_FACTOR[lo] + a * HISTORY_TIME_FACTOR[hi]


def time_factor(hw, tile: int, lbfgs_memory: int, requested: int, layers,
                optimizer: str = 'lbfgs') -> float:
  """A stage's estimated time with ``tile`` (0: untiled) and ``lbfgs_memory``
  over its time untiled with the ``requested`` history (the model above)."""
  t = tiling.make_tiling(hw, tile, layers) if tile else None
  tiled = 1.0 if t is None else (
      t.count * t.window_pixels / (hw[0] * hw[1]) * TILED_TIME_FACTOR)
  if optimizer != 'lbfgs':
    return tiled
  return tiled * history_time_factor(lbfgs_memory) / history_time_factor(requested)


def replan(m: StageMemory, tile: int, lbfgs_memory: int) -> StageMemory:
  """The estimate of the same stage with another tile and L-BFGS history (a
  resumed stage keeps the ones its checkpoint was made with)."""
  return estimate(m.hw, tile=tile, lbfgs_memory=lbfgs_memory, **m.inputs)


def _tile_candidates(hw, layers):
  """Tile sides to try, largest first (multiples of the deepest stride, not
  smaller than twice the halo: below that the halo costs more than 4x)."""
  halo, align = tiling.halo_and_align(layers)
  top = max(hw) // align * align
  floor = max(align, 2 * halo)
  return list(range(top, floor - 1, -align)) or [floor]


def plan_stage(hw, *, tile, limit: int, limit_source: str = '', name: str = 'stage',
               lbfgs_memory: int = 10, **kw) -> StageMemory:
  """The stage's tile and L-BFGS history under ``limit`` bytes.

  Args:
    tile: ``'auto'`` (untiled if it fits, else the (tile, history) of least
      estimated time that fits: :func:`_auto_fit`),
      ``0`` (never tile) or a tile side in pixels.
    limit, limit_source: from :func:`device_limit`.
    **kw: the rest of :func:`estimate`'s arguments.

  Raises:
    NSTError: nothing fits (one line: estimate, limit, fixes).
  """
  kw = dict(kw, limit=limit)
  untiled = estimate(hw, tile=0, lbfgs_memory=lbfgs_memory, **kw)
  where = f'{name} ({hw[1]}x{hw[0]} px)'
  fixes = 'memory_limit_gb, activation_dtype=bfloat16, fewer images per batch'
  if tile == 'auto' and untiled.total <= limit:
    return untiled
  if tile == 0:
    if untiled.total <= limit:
      return untiled
    tiled = _auto_fit(hw, limit, lbfgs_memory, kw)
    shorter = (f', L-BFGS m={tiled.lbfgs_memory}' if tiled and tiled.lbfgs_memory <
               lbfgs_memory else '')
    how = 'tiled' if tiled and tiled.tile else 'untiled'
    hint = (f'--config.tile=auto ({how}: {tiled.total / GB:.1f} GB{shorter})' if tiled
            else '--config.tile=auto')
    raise NSTError(f'{where} needs an estimated {untiled.total / GB:.1f} GB untiled, more '
                   f'than the {limit / GB:.1f} GB limit ({limit_source}); use {hint}, or '
                   f'set {fixes}')
  if tile != 'auto':
    halo, _ = tiling.halo_and_align(kw['layers'])
    if int(tile) < 2 * halo:
      log.warning('%s: tile %s is less than twice the halo (%d px): each window '
                  'computes %.0fx its tile', where, tile, halo,
                  ((int(tile) + 2 * halo) / int(tile)) ** 2)
    fixed = estimate(hw, tile=int(tile), lbfgs_memory=lbfgs_memory, **kw)
    if fixed.total > limit:
      raise NSTError(f'{where} needs an estimated {fixed.total / GB:.1f} GB with tile '
                     f'{tile}, more than the {limit / GB:.1f} GB limit ({limit_source}); '
                     f'use --config.tile=auto or a smaller tile, or set {fixes}')
    return fixed
  fit = _auto_fit(hw, limit, lbfgs_memory, kw)
  if fit is not None:
    if fit.why:
      log.info('%s: tile %d, L-BFGS m=%d, the least estimated time (%s)', where, fit.tile,
               fit.lbfgs_memory, fit.why)
    if fit.lbfgs_memory < lbfgs_memory:
      fits_asked = _first_fit(hw, limit, lbfgs_memory, kw) is not None
      log.warning('%s: L-BFGS history shortened from %d to %d (%s; %.1f GB, %s)',
                  where, lbfgs_memory, fit.lbfgs_memory,
                  'faster by the estimate' if fits_asked else 'to fit', limit / GB,
                  limit_source)
    return fit
  histories = _histories(lbfgs_memory, kw)
  lbfgs = kw.get('optimizer', 'lbfgs') == 'lbfgs'
  smallest = estimate(hw, tile=_tile_candidates(hw, kw['layers'])[-1],
                      lbfgs_memory=histories[-1], **kw)
  history = f' and L-BFGS history {smallest.lbfgs_memory}' if lbfgs else ''
  raise NSTError(f'{where} needs an estimated {smallest.total / GB:.1f} GB even with the '
                 f'smallest tile{history}, more than the {limit / GB:.1f} GB limit '
                 f'({limit_source}); set {fixes}, or a smaller size')


def _histories(lbfgs_memory: int, kw) -> list[int]:
  """L-BFGS histories to try, longest first (down to MIN_LBFGS_MEMORY)."""
  if kw.get('optimizer', 'lbfgs') != 'lbfgs':
    return [lbfgs_memory]
  return list(range(lbfgs_memory, min(lbfgs_memory, MIN_LBFGS_MEMORY) - 1, -1))


def _auto_fit(hw, limit, lbfgs_memory, kw) -> StageMemory | None:
  """``tile='auto'``'s choice when the stage does not fit untiled: for each
  history (longest first) the tile of least estimated time among those that
  fit (:func:`time_factor`; the largest that fits is not always it: tiles of
  the same count are as many full windows), then the history of least time
  (ties: the longer one); None if nothing fits. A history longer than the
  measured ones (``HISTORY_TIME_FACTOR``) is only shortened to fit."""
  optimizer = kw.get('optimizer', 'lbfgs')
  candidates = _tile_candidates(hw, kw['layers'])
  timed = []
  for m in _histories(lbfgs_memory, kw):
    first = _first_fit_index(hw, limit, m, kw, candidates)
    if first is None:
      continue
    tile = min(candidates[first:], key=lambda t: time_factor(hw, t, m, lbfgs_memory,
                                                              kw['layers'], optimizer))
    fit = estimate(hw, tile=tile, lbfgs_memory=m, **kw)
    timed.append(fit._replace(time=time_factor(hw, fit.tile, m, lbfgs_memory, kw['layers'],
                                               optimizer)))
    if lbfgs_memory > max(HISTORY_TIME_FACTOR):   # not measured: the longest that fits
      break
  if not timed:
    return None
  best = min(timed, key=lambda f: f.time)
  why = ', '.join(f'tile {f.tile} m={f.lbfgs_memory} {f.time:.2f}x' for f in timed)
  return best._replace(why=f'est. time over untiled: {why}' if len(timed) > 1 else '')


def _first_fit_index(hw, limit, lbfgs_memory, kw, candidates) -> int | None:
  """Index of the largest tile in ``candidates`` (largest first) that fits;
  bisection, as the estimate grows with the tile."""
  fits = lambda i: estimate(hw, tile=candidates[i], lbfgs_memory=lbfgs_memory,
                            **kw).total <= limit
  lo, hi = 0, len(candidates) - 1
  if not fits(hi):
    return None
  while lo < hi:
    mid = (lo + hi) // 2
    if fits(mid):
      hi = mid
    else:
      lo = mid + 1
  return lo


def _first_fit(hw, limit, lbfgs_memory, kw) -> StageMemory | None:
  """The largest tile that fits with ``lbfgs_memory``, or None."""
  candidates = _tile_candidates(hw, kw['layers'])
  i = _first_fit_index(hw, limit, lbfgs_memory, kw, candidates)
  return None if i is None else estimate(hw, tile=candidates[i], lbfgs_memory=lbfgs_memory,
                                         **kw)


def is_cpu() -> bool:
  return jax.local_devices()[0].platform == 'cpu'
