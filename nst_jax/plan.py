"""The plan of a run: a validated config -> :class:`Plan` of phases and stages.

A run is a sequence of *phases*; each optimises a batch of images through
coarse-to-fine *stages* with one objective:

* ``scale_mix`` (scale control, optional): style B optimised towards style
  A's low-layer Grams; its result becomes the style of the phases after it
  (or the run's only output with ``mode=scale_mix``).
* ``transfer``: the content image(s). A content *folder* becomes one phase
  per group of images whose stage sizes agree (same aspect ratio and size
  class), cut into batches of ``batch_size`` images; one image is a batch of
  one. Every control works the same for one image and for a batch.
* ``frame``: a clip (Ruder et al. 2016): one phase per frame, in order. The
  first runs the coarse-to-fine stages like a still; every later frame one
  stage at the final size (``frame_steps``), started from the previous result
  warped along the flow, with the temporal loss against the results of the
  frames ``temporal_frames`` back (``Phase.temporal``: which earlier phases).
  With ``passes`` > 1 the clip is Ruder et al.'s multi-pass algorithm
  instead: pass 1 stylises every frame as a still (the frames on the batch
  axis, ``batch_size`` of them per phase, sharded over the mesh's ``b``
  devices); each later pass starts every frame from its newest result
  blended with both neighbours' (t − 1, t + 1) warped along the flow and
  adds the temporal loss against them (``Phase.sweep``), visiting the frames
  in ``pass_order``'s batches (default: the even frames, then the odd). The
  passes before the last are kind ``pass``; the last pass's phases are the
  clip's ``frame`` phases.

:func:`make_plan` decides everything that can be decided before an image is
decoded: phases, stage sizes (rounded for the device mesh), steps, names, and
each stage's memory plan (tile, L-BFGS history; :mod:`nst_jax.memory`). It
reads image headers only and runs nothing; the result is plain frozen data.
What the engine then materialises per phase and stage (decoded images, colour
control, masks, VGG targets, start images) is :mod:`nst_jax.inputs`.

Example:
  >>> spec = config.validate(config.get_default_config())
  >>> plan = make_plan(spec)
  >>> [(s.hw, s.steps) for s in plan.phases[0].stages]
  [((170, 256), 150), ((340, 512), 50)]
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os

import jax

from nst_jax import color
from nst_jax import config as config_lib
from nst_jax import image_io
from nst_jax import memory
from nst_jax import poster as poster_lib
from nst_jax import sharding
from nst_jax import vgg
from nst_jax.errors import NSTError

log = logging.getLogger(__name__)

MIXED_STYLE = 'mixed_style'        # a phase's style that is the scale mix's output


@dataclasses.dataclass(frozen=True)
class Source:
  """An input image: a path (decoded when its phase starts) or an array."""
  image: object                    # path or array
  name: str                        # output stem / description
  hw: tuple[int, int]              # full-resolution size
  index: int = 0                   # position in the content folder / clip
  frame: int = -1                  # frame of the video file ``image`` (-1: an image)


@dataclasses.dataclass(frozen=True)
class Earlier:
  """A clip's frame t − ``distance``: its content and the phase whose output it is."""
  source: Source
  phase: int                       # index of that frame's phase in the plan
  distance: int                    # j
  position: int = 0                # its image in that phase's outputs


@dataclasses.dataclass(frozen=True)
class Sweep:
  """What a multi-pass phase reads (Ruder et al. 2016, sec. 3.3): per frame,
  its own newest result and its neighbours' (frames t − 1, t + 1; one at
  the clip's ends) — this pass's where their batch already ran, else the
  previous pass's."""
  number: int                      # the pass, 2 .. passes
  direction: int                   # +1 forward, −1 backward (the paper's
  #                                  alternation: the order of 'sequential')
  own: tuple                       # Earlier per image (distance 0)
  neighbour: tuple                 # per image, the Earliers of frames t − 1, t + 1
  blend: float                     # δ of the start's blend
  temporal: bool                   # the temporal loss against the neighbours


@dataclasses.dataclass(frozen=True)
class StagePlan:
  hw: tuple[int, int]              # the optimised images' size
  steps: int
  style_side: int                  # style images' long side
  tile: int = 0                    # tiled evaluation's tile side; 0 = untiled
  lbfgs_memory: int = 10           # L-BFGS history (the memory plan may shorten it)
  memory: object = None            # memory.StageMemory: the estimate behind tile
  mesh_shape: tuple | None = None  # (b, h) when not the phase's: too short for bands


def stage_mesh(phase, stage: StagePlan) -> tuple[int, int]:
  """The (b, h) mesh a stage of ``phase`` runs on."""
  return stage.mesh_shape or phase.mesh_shape


def _unbanded(phase, stage: StagePlan, name: str):
  """``None``, or the mesh without bands for a stage too short for them
  (``sharding.MIN_BAND_FEATURE_ROWS``): the images over the devices where the
  batch allows (b = gcd(batch, devices)), else one device per image."""
  b, h = phase.mesh_shape
  layers = (*phase.loss.content_layer_weights, *phase.loss.style_layer_weights)
  stride = max(vgg.layer_stride(l) for l in layers)
  if h == 1 or sharding.bands_fit([stage.hw[0]], stride):
    return None
  rows = sharding.MIN_BAND_FEATURE_ROWS * stride
  if jax.process_count() > 1:
    raise NSTError(f'{name} ({stage.hw[1]}x{stage.hw[0]} px) is too short for bands of rows '
                   f'over {b * h} devices of {jax.process_count()} processes (at least '
                   f'{rows} rows: XLA computed wrong values for thinner bands); use larger '
                   'sizes or one process')
  shape = (math.gcd(phase.batch, b * h), 1)
  log.info('%s (%dx%d px): fewer than %d rows, no bands: mesh b=%d x h=1', name,
           stage.hw[1], stage.hw[0], rows, shape[0])
  return shape


@dataclasses.dataclass(frozen=True)
class Phase:
  kind: str                        # 'scale_mix' | 'transfer' | 'frame' | 'pass'
  contents: tuple                  # Source per image of the batch
  styles: tuple                    # Source per style, or MIXED_STYLE
  loss: config_lib.LossSpec
  guidance: config_lib.GuidanceSpec | None
  stages: tuple                    # StagePlan per stage
  init: str                        # 'content' | 'noise' | 'style' | a path
  color: str                       # 'none' | 'luminance' | 'luminance_swap' |
  #                                  'histogram' | 'content_to_style' (scale mix)
  histogram_mode: str
  mesh_shape: tuple[int, int]      # (b, h) devices for batch and bands
  temporal: tuple = ()             # Earlier per j, increasing (frames after a
  #                                  clip's first: 1 and the loss's temporal_frames)
  flow: str = 'dis_medium'         # a clip's optical flow method
  loss_frames: tuple = ()          # the distances j the temporal loss compares with
  sweep: Sweep | None = None       # a multi-pass clip's passes after the first

  @property
  def reads(self) -> tuple:
    """Every earlier phase output this phase reads, as :class:`Earlier`."""
    if self.sweep is None:
      return self.temporal
    return self.sweep.own + tuple(e for near in self.sweep.neighbour for e in near)

  @property
  def temporal_terms(self) -> int:
    """Warped earlier frames in this phase's temporal loss (per image)."""
    if self.sweep is not None:
      return 2 * int(self.sweep.temporal)
    return len(self.loss_frames) if self.temporal else 0

  @property
  def batch(self) -> int:
    return len(self.contents)

  @property
  def channels(self) -> int:
    return color.channels(self.color)


@dataclasses.dataclass(frozen=True)
class Plan:
  phases: tuple
  spec: config_lib.RunSpec

  @property
  def stages(self) -> list[tuple[int, StagePlan]]:
    """Every stage of every phase, in order, as (phase index, stage)."""
    return [(i, s) for i, p in enumerate(self.phases) for s in p.stages]

  def signature(self) -> list:
    """What fixes the optimisation's shapes (goes into the checkpoint
    fingerprint). Not the memory plan's choices (tile, a shortened L-BFGS
    history), which depend on the memory free at the time: a resumed stage
    keeps the ones it was saved with (:meth:`Checkpointer.stage_as_saved`)."""
    return [[p.kind, [c.name for c in p.contents], [[*s.hw, s.steps] for s in p.stages]]
            for p in self.phases]


def _source(image, what: str, name: str, max_pixels: int, index: int = 0) -> Source:
  if isinstance(image, (str, os.PathLike)):
    return Source(str(image), name, image_io.image_size(str(image), max_pixels), index)
  array = image_io.as_image_array(image, what)
  return Source(array, name, array.shape[:2], index)


def output_names(paths) -> list[str]:
  """Output stems of a folder's images: the file's stem, or ``stem_ext`` where
  two files share a stem (``cat.png``, ``cat.jpg`` -> ``cat_png``, ``cat_jpg``)."""
  stems = [os.path.splitext(os.path.basename(p)) for p in paths]
  counts = {}
  for stem, _ in stems:
    counts[stem] = counts.get(stem, 0) + 1
  return [stem if counts[stem] == 1 else f'{stem}_{ext.lstrip(".").lower()}'
          for stem, ext in stems]


def read_sources(spec) -> tuple[list[Source], list[Source]]:
  """Content and style sources (image headers only; arrays are checked)."""
  mp = spec.max_input_pixels
  if spec.video is not None:
    info = spec.video.info
    contents = [Source(info.paths[k] if info.paths else spec.video.path, f'{k + 1:05d}',
                       info.hw, k, -1 if info.paths else k) for k in range(info.frames)]
  elif spec.batch:
    paths = image_io.list_images(spec.content)
    contents = [_source(p, 'content image', n, mp, i)
                for i, (p, n) in enumerate(zip(paths, output_names(paths)))]
  else:
    contents = [_source(spec.content, 'content image', 'final', mp)]
  styles = [] if spec.scale_mix else [
      _source(s, f'style image {i + 1}', f'style{i + 1}', mp)
      for i, s in enumerate(spec.styles)]
  return contents, styles


def _band_rows(h: int, multiple: int) -> int:
  """``h`` rounded to equal bands of rows on ``multiple`` devices."""
  return max(multiple, round(h / multiple) * multiple) if multiple > 1 else h


def style_side(long_side: int, style_scale: float) -> int:
  """The style images' long side for images of long side ``long_side``."""
  return max(16, round(long_side * style_scale))


def stage_sizes(spec, hw, row_multiple: int = 1) -> list[StagePlan]:
  """The stages of one content image of size ``hw`` (posters derive theirs)."""
  stages = spec.stages
  if spec.poster:
    poster_name, print_size, start = spec.poster
    final = poster_lib.poster_pixels(hw, spec.dpi, poster_name, print_size)
    stages = [config_lib.Stage(s, n) for s, n in
              poster_lib.schedule(max(final), start, first_steps=spec.stages[0].steps)]
  out = []
  for stage in stages:
    h, w = image_io.fit_long_side(hw, stage.long_side)
    h = _band_rows(h, row_multiple)
    out.append(StagePlan((h, w), stage.steps, style_side(stage.long_side, spec.style_scale)))
  return out


def _scale_mix_phase(spec, max_pixels) -> Phase:
  mix = spec.scale_mix
  coarse = _source(mix.coarse, 'scale_coarse_style', MIXED_STYLE, max_pixels)
  fine = _source(mix.fine, 'scale_fine_style', 'scale_fine_style', max_pixels)
  n = len(mix.layers)
  loss = dataclasses.replace(
      spec.loss, content_layer_weights={}, style_layer_weights={l: 1.0 / n for l in mix.layers},
      style_blend=(1.0,), layer_styles={}, content_weight=0.0, style_weight=1.0,
      tv_weight=0.0, statistic='gram', global_style_weight=1.0, style_statistic='gram')
  b, h = sharding.mesh_shape(spec.devices, 1)
  hw = image_io.fit_long_side(coarse.hw, mix.size)
  hw = (_band_rows(hw[0], h), hw[1])
  return Phase('scale_mix', (coarse,), (fine,), loss, None,
               (StagePlan(hw, mix.steps, mix.size),), 'content',
               'content_to_style' if mix.color_match else 'none', spec.histogram_mode,
               (b, h))


def _memory_plan(spec, phase: Phase, limit: tuple[int, str], first: int, total: int
                 ) -> Phase:
  """``phase`` with every stage's tile and L-BFGS history from the memory plan."""
  loss = phase.loss
  layers = tuple(dict.fromkeys((*loss.content_layer_weights, *loss.style_layer_weights)))
  sources = sum(c.hw[0] * c.hw[1] for c in phase.contents) + sum(
      s.hw[0] * s.hw[1] for s in phase.styles if isinstance(s, Source))
  stages = []
  for k, s in enumerate(phase.stages):
    name = f'stage {first + k + 1}/{total}'
    s = dataclasses.replace(s, mesh_shape=_unbanded(phase, s, name))
    m = memory.plan_stage(
        s.hw, tile=spec.tile, limit=limit[0], limit_source=limit[1],
        name=name, lbfgs_memory=spec.lbfgs_memory,
        batch=phase.batch, channels=phase.channels, layers=layers,
        content_layers=tuple(loss.content_layer_weights), optimizer=spec.optimizer,
        average=bool(spec.average_decay),
        activation_dtype=spec.activation_dtype,
        regions=phase.guidance.regions if phase.guidance else 0,
        temporal=phase.temporal_terms,
        mesh_shape=stage_mesh(phase, s), source_pixels=sources, cpu=memory.is_cpu())
    stages.append(dataclasses.replace(s, tile=m.tile, lbfgs_memory=m.lbfgs_memory,
                                      memory=m))
  return dataclasses.replace(phase, stages=tuple(stages))


def make_plan(spec, limit: tuple[int, str] | None = None) -> Plan:
  """Phases and stages of a run (reads image headers, decodes nothing).

  ``limit``: (bytes, source) per device for the memory plan; default
  :func:`nst_jax.memory.device_limit` of ``spec.memory_limit_gb``.
  """
  phases = _phases(spec)
  limit = limit or memory.device_limit(spec.memory_limit_gb)
  total = sum(len(p.stages) for p in phases)
  planned, first = [], 0
  for p in phases:
    planned.append(_memory_plan(spec, p, limit, first, total))
    first += len(p.stages)
  return Plan(tuple(planned), spec)


def _phases(spec) -> list[Phase]:
  contents, styles = read_sources(spec)
  phases = []
  if spec.scale_mix:
    phases.append(_scale_mix_phase(spec, spec.max_input_pixels))
    if spec.mode == 'scale_mix':
      return phases
    styles = [MIXED_STYLE]
  if spec.video is not None and spec.video.passes > 1:
    return phases + _pass_phases(spec, contents, styles, len(phases))
  if spec.video is not None:
    return phases + _frame_phases(spec, contents, styles, len(phases))
  # Group images whose stage sizes agree (mesh rows depend on the batch size,
  # so group at one device first, then size each batch for its own mesh).
  groups: dict = {}
  for c in contents:
    key = tuple(s.hw for s in stage_sizes(spec, c.hw))
    groups.setdefault(key, []).append(c)
  size = spec.batch_size or len(contents)
  for members in groups.values():
    for start in range(0, len(members), size):
      batch = tuple(members[start:start + size])
      b, h = sharding.mesh_shape(spec.devices, len(batch))
      phases.append(Phase(
          'transfer', batch, tuple(styles), spec.loss, spec.guidance,
          tuple(stage_sizes(spec, batch[0].hw, h)), spec.init, spec.color_control,
          spec.histogram_mode, (b, h)))
  return phases


def _frame_phases(spec, frames, styles, first: int) -> list[Phase]:
  """A clip's phases: frame 0 as a still, each later one a final-size stage
  from the warped previous result with the temporal loss (module docstring)."""
  v = spec.video
  b, h = sharding.mesh_shape(spec.devices, 1)
  stages = tuple(stage_sizes(spec, frames[0].hw, h))
  later = (dataclasses.replace(stages[-1], steps=v.frame_steps),)
  # The warped init needs frame t-1 whatever the loss uses; the temporal term
  # (if temporal_weight > 0) takes the distances in temporal_frames.
  distances = sorted(set(v.temporal_frames) | {1})
  phases = []
  for t, source in enumerate(frames):
    earlier = tuple(Earlier(frames[t - j], first + t - j, j) for j in distances if j <= t)
    phases.append(Phase(
        'frame', (source,), tuple(styles), spec.loss, spec.guidance,
        stages if t == 0 else later, spec.init if t == 0 else v.frame_init,
        spec.color_control, spec.histogram_mode, (b, h), earlier, v.flow,
        v.temporal_frames))
  return phases


def _pass_phases(spec, frames, styles, first: int) -> list[Phase]:
  """A multi-pass clip's phases (module docstring).

  Pass 1: every frame as a still, ``batch_size`` frames per phase. Each
  later pass visits the frames in ``pass_order``'s batches; a frame reads
  its own latest result and its neighbours' (t − 1, t + 1) latest: those of
  this pass if their batch ran already, else the previous pass's.
  """
  v = spec.video
  size = spec.batch_size or len(frames)
  n = len(frames)
  cut = lambda ks: [tuple(ks[k:k + size]) for k in range(0, len(ks), size)]
  order = {'jacobi': [list(range(n))],
           'red_black': [list(range(0, n, 2)), list(range(1, n, 2))],
           'sequential': [[k] for k in range(n)]}[v.pass_order]
  batches = [b for ks in order for b in cut(ks)]
  meshes = {len(b): sharding.mesh_shape(spec.devices, len(b))
            for b in batches + cut(list(range(n)))}
  rows = math.lcm(*(h for _, h in meshes.values()))   # one frame size for every batch
  stages = tuple(stage_sizes(spec, frames[0].hw, rows))
  later = (dataclasses.replace(stages[-1], steps=v.pass_steps),)
  latest = {}                                  # frame -> Earlier of its newest result
  phases = []
  for number in range(1, v.passes + 1):
    forward = number % 2 == 1                  # the paper's alternating directions
    run = cut(list(range(n))) if number == 1 else (
        batches if forward or v.pass_order != 'sequential' else batches[::-1])
    made = {}
    for ks in run:
      group = tuple(frames[k] for k in ks)
      sweep = None
      if number > 1:
        near = tuple(tuple(latest[j] for j in (k - 1, k + 1) if 0 <= j < n) for k in ks)
        sweep = Sweep(number, 1 if forward else -1, tuple(latest[k] for k in ks), near,
                      v.pass_blend,
                      number >= v.temporal_from_pass and spec.loss.temporal_weight > 0)
      index = first + len(phases)
      phases.append(Phase(
          'frame' if number == v.passes else 'pass', group, tuple(styles), spec.loss,
          spec.guidance, stages if number == 1 else later,
          spec.init if number == 1 else 'previous_pass', spec.color_control,
          spec.histogram_mode, meshes[len(ks)], flow=v.flow, sweep=sweep))
      for p, k in enumerate(ks):
        made[k] = Earlier(frames[k], index, 0, p)
        if v.pass_order != 'jacobi':           # later batches of this pass see it
          latest[k] = made[k]
    latest.update(made)
  return phases


def reported_stages(plan: Plan) -> list[tuple[tuple[int, int], int, int]]:
  """``(hw, steps, images)`` per stage, what the progress line and log report."""
  return [(s.hw, s.steps, plan.phases[i].batch) for i, s in plan.stages]


def describe(plan: Plan) -> str:
  """The plan for the log: a line per phase, a line per stage with its memory."""
  lines, k = [], 0
  frames = [i for i, p in enumerate(plan.phases) if p.kind == 'frame' and p.batch == 1
            and p.sweep is None]
  for i, p in enumerate(plan.phases):
    if i in frames and i > frames[0] + 1:    # a clip: its first two frames, then a count
      k += len(p.stages)
      if i == frames[0] + 2:
        lines.append(f'  ... {len(frames) - 2} more frames like frame 2')
      continue
    names = ', '.join(c.name for c in itertools.islice(p.contents, 4))
    more = f' +{p.batch - 4}' if p.batch > 4 else ''
    kind = p.kind
    if p.sweep is not None or (p.kind == 'pass'):
      number = p.sweep.number if p.sweep else 1
      way = {1: ', forward', -1: ', backward'}[p.sweep.direction] if p.sweep else ''
      kind = f'{p.kind} (pass {number}{way}' + (
          ', temporal loss)' if p.sweep and p.sweep.temporal else ')')
    lines.append(f'phase {i + 1}/{len(plan.phases)} {kind}: {p.batch} image(s) '
                 f'[{names}{more}], mesh b={p.mesh_shape[0]} x h={p.mesh_shape[1]}')
    for s in p.stages:
      k += 1
      mp = s.hw[0] * s.hw[1] / 1e6
      mesh = (f'mesh b={s.mesh_shape[0]} x h={s.mesh_shape[1]} (too short for bands), '
              if s.mesh_shape else '')
      lines.append(f'  stage {k}: {s.hw[1]}x{s.hw[0]} ({mp:.2f} MP), {s.steps} steps, '
                   + mesh + (s.memory.describe() if s.memory else ''))
  return '\n'.join(lines)
