"""Pure pre-passes: a validated config -> a :class:`Plan` of phases and stages.

A run is a sequence of *phases*; each optimises a batch of images through
coarse-to-fine *stages* with one objective:

* ``scale_mix`` (scale control, optional): style B optimised towards style
  A's low-layer Grams; its result becomes the style of the phases after it
  (or the run's only output with ``mode=scale_mix``).
* ``transfer``: the content image(s). A content *folder* becomes one phase
  per group of images whose stage sizes agree (same aspect ratio and size
  class), cut into batches of ``batch_size`` images; one image is a batch of
  one. Every control works the same for one image and for a batch.

:func:`make_plan` decides everything that can be decided before an image is
decoded: phases, stage sizes (rounded for the device mesh), steps, names. The
engine then asks this module, per phase and stage, for the prepared images
(:func:`prepare`: colour control, masks), the batched targets
(:func:`stage_targets`), the start (:func:`stage_start`) and, at the end, the
output images (:func:`finish`: luminance recombination). All of these are
functions of their arguments only.

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
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import color
from nst_jax import config as config_lib
from nst_jax import image_io
from nst_jax import masks as masks_lib
from nst_jax import memory
from nst_jax import objective
from nst_jax import poster as poster_lib
from nst_jax import sharding

log = logging.getLogger(__name__)

MIXED_STYLE = 'mixed_style'        # a phase's style that is the scale mix's output


@dataclasses.dataclass(frozen=True)
class Source:
  """An input image: a path (decoded when its phase starts) or an array."""
  image: object                    # path or array
  name: str                        # output stem / description
  hw: tuple[int, int]              # full-resolution size
  index: int = 0                   # position in the content folder


@dataclasses.dataclass(frozen=True)
class StagePlan:
  hw: tuple[int, int]              # the optimised images' size
  steps: int
  style_side: int                  # style images' long side
  tile: int = 0                    # tiled evaluation's tile side; 0 = untiled
  lbfgs_memory: int = 10           # L-BFGS history (the memory plan may shorten it)
  memory: object = None            # memory.StageMemory: the estimate behind tile


@dataclasses.dataclass(frozen=True)
class Phase:
  kind: str                        # 'scale_mix' | 'transfer'
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

  @property
  def batch(self) -> int:
    return len(self.contents)

  @property
  def channels(self) -> int:
    return 1 if self.color == 'luminance' else 3


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
  if spec.batch:
    paths = image_io.list_images(spec.content)
    contents = [_source(p, 'content image', n, mp, i)
                for i, (p, n) in enumerate(zip(paths, output_names(paths)))]
  else:
    contents = [_source(spec.content, 'content image', 'final', mp)]
  styles = [] if spec.scale_mix else [
      _source(s, f'style image {i + 1}', f'style{i + 1}', mp)
      for i, s in enumerate(spec.styles)]
  return contents, styles


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
    if row_multiple > 1:          # equal bands of rows on every device
      h = max(row_multiple, round(h / row_multiple) * row_multiple)
    out.append(StagePlan((h, w), stage.steps,
                         max(16, round(stage.long_side * spec.style_scale))))
  return out


def _scale_mix_phase(spec, max_pixels) -> Phase:
  mix = spec.scale_mix
  coarse = _source(mix.coarse, 'scale_coarse_style', MIXED_STYLE, max_pixels)
  fine = _source(mix.fine, 'scale_fine_style', 'scale_fine_style', max_pixels)
  n = len(mix.layers)
  loss = dataclasses.replace(
      spec.loss, content_layer_weights={}, style_layer_weights={l: 1.0 / n for l in mix.layers},
      style_blend=(1.0,), layer_styles={}, content_weight=0.0, style_weight=1.0,
      tv_weight=0.0, statistic='gram', global_style_weight=1.0)
  b, h = sharding.mesh_shape(spec.devices, 1)
  hw = image_io.fit_long_side(coarse.hw, mix.size)
  if h > 1:
    hw = (max(h, round(hw[0] / h) * h), hw[1])
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
    m = memory.plan_stage(
        s.hw, tile=spec.tile, limit=limit[0], limit_source=limit[1],
        name=f'stage {first + k + 1}/{total}', lbfgs_memory=spec.lbfgs_memory,
        batch=phase.batch, channels=phase.channels, layers=layers,
        content_layers=tuple(loss.content_layer_weights), optimizer=spec.optimizer,
        activation_dtype=spec.activation_dtype,
        regions=phase.guidance.regions if phase.guidance else 0,
        mesh_shape=phase.mesh_shape, source_pixels=sources, cpu=memory.is_cpu())
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


# ---------------------------------------------------------------------------
# Per phase: prepared images (host, numpy).
# ---------------------------------------------------------------------------


class Prepared(NamedTuple):
  """A phase's images at full resolution, after colour control."""
  originals: list                  # per image, its RGB content (for finish)
  contents: list                   # per image, the content the loss sees
  styles: list                     # per image, its list of style images
  content_masks: list | None       # per image, [H, W, R] guidance
  style_masks: list | None         # per style, [H_s, W_s, R] guidance
  init_image: np.ndarray | None    # a decoded init file


def load(source: Source, what: str, max_pixels: int) -> np.ndarray:
  if isinstance(source.image, str):
    return image_io.load_image(source.image, max_pixels)
  return source.image


def _grey(y):
  return np.repeat(np.asarray(y, np.float32), 3, axis=-1)


def style_guidance_masks(g: config_lib.GuidanceSpec, style_images: list,
                         max_pixels: int) -> list[np.ndarray]:
  """Per style image, its ``[H_s, W_s, R]`` masks (``whole``: ones for every region)."""
  out = []
  for form, s in zip(g.styles, style_images):
    m = masks_lib.load_guidance(form, s.shape[:2], max_pixels)
    out.append(np.repeat(m, g.regions, axis=-1) if m.shape[-1] == 1 else m)
  return out


def prepare(phase: Phase, style_images: list, max_pixels: int) -> Prepared:
  """Decodes a phase's contents and applies colour control to its styles.

  ``style_images``: the decoded styles (the scale mix output for
  ``MIXED_STYLE``). With ``histogram`` every image gets its own
  colour-matched styles; otherwise all images share the same list.
  """
  originals = [load(c, 'content image', max_pixels) for c in phase.contents]
  contents, styles = list(originals), [list(style_images)] * len(originals)
  if phase.color == 'histogram':
    styles = [[np.clip(color.match_histogram(s, c, phase.histogram_mode), 0, 1)
               for s in style_images] for c in originals]
  elif phase.color == 'content_to_style':
    contents = [np.clip(color.match_histogram(c, style_images[0], phase.histogram_mode),
                        0, 1) for c in originals]
  elif phase.color == 'luminance':
    ys = [color.luminance(c) for c in originals]
    contents = [_grey(y) for y in ys]
    styles = [[_grey(color.match_luminance(color.luminance(s), y)) for s in style_images]
              for y in ys]
  content_masks = style_masks = None
  g = phase.guidance
  if g is not None:
    content_masks = [masks_lib.load_guidance(masks_lib.for_image(g.content, c.image if
                                                                 isinstance(c.image, str)
                                                                 else c.name),
                                             c.hw, max_pixels)
                     for c in phase.contents]
    style_masks = style_guidance_masks(g, style_images, max_pixels)
  init_image = None
  if phase.init not in ('content', 'noise', 'style'):
    init_image = image_io.load_image(phase.init, max_pixels)
  return Prepared(originals, contents, styles, content_masks, style_masks, init_image)


# ---------------------------------------------------------------------------
# Per stage: targets and start (device arrays).
# ---------------------------------------------------------------------------


def _resize_styles(styles, side):
  return [image_io.resize(s, image_io.fit_long_side(s.shape[:2], side)) for s in styles]


def _stack(trees):
  return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def stage_targets(phase: Phase, prepared: Prepared, k: int, params):
  """Batched :class:`objective.Targets` of stage ``k`` (leading axis = image).

  Also returns ``{layer: bool [B, R]}`` of guidance regions skipped as empty.
  Style statistics are computed once per distinct list of style images.
  """
  stage = phase.stages[k]
  loss, g = phase.loss, phase.guidance
  per_image, skipped = [], []
  cache = {}
  for i, content in enumerate(prepared.contents):
    styles = prepared.styles[i]
    key = id(styles)
    if key not in cache:
      resized = _resize_styles(styles, stage.style_side)
      style_t = objective.style_targets(
          params, resized, loss.style_layer_weights, style_blend=loss.style_blend,
          normalization=loss.normalization, pooling=loss.pooling,
          layer_styles=loss.layer_styles,
          global_weight=loss.global_style_weight, tile=stage.tile)
      side = None
      if g is not None:
        sm = [image_io.resize(m, s.shape[:2]) for m, s in zip(prepared.style_masks, resized)]
        side = objective.guided_style_side(
            params, resized, sm, g.region_styles, loss.style_layer_weights,
            mode=g.mode, extra=g.extra, statistic=loss.statistic, pooling=loss.pooling,
            tile=stage.tile)
      cache[key] = (style_t, side)
    style_t, side = cache[key]
    guided, empty = {}, {}
    if g is not None:
      guided, empty = objective.guided_targets(
          side, image_io.resize(prepared.content_masks[i], stage.hw), g.region_weights,
          loss.style_layer_weights, mode=g.mode, extra=g.extra,
          normalization=loss.normalization)
    per_image.append(objective.Targets(
        content=objective.content_targets(
            params, image_io.resize(content, stage.hw), loss.content_layer_weights,
            normalization=loss.normalization, pooling=loss.pooling, tile=stage.tile),
        style=style_t, guided=guided, pooling=loss.pooling, statistic=loss.statistic))
    skipped.append(empty)
  return _stack(per_image), _stack(skipped) if skipped[0] else {}


def stage_start(phase: Phase, prepared: Prepared, k: int, previous, seed: int):
  """The ``[B, h, w, C]`` start of stage ``k``: the init at stage 0, else the
  previous stage's images (``previous``, ``[B, h', w', 3]``) resized."""
  hw = phase.stages[k].hw
  if previous is not None:
    start = jax.vmap(lambda x: image_io.resize(x, hw))(jnp.asarray(previous))
  elif phase.init == 'noise':
    # The same noise for every image: each result equals the image run alone.
    noise = jax.random.uniform(jax.random.fold_in(jax.random.PRNGKey(seed), k),
                               tuple(hw) + (3,), jnp.float32)
    start = jnp.stack([noise] * phase.batch)
  elif phase.init == 'content':
    start = jnp.stack([image_io.resize(c, hw) for c in prepared.contents])
  elif phase.init == 'style':
    start = jnp.stack([image_io.resize(
        _resize_styles(s[:1], phase.stages[k].style_side)[0], hw)
        for s in prepared.styles])
  else:
    start = jnp.stack([image_io.resize(prepared.init_image, hw)] * phase.batch)
  return jnp.asarray(start, jnp.float32)[..., :phase.channels]


def finish(phase: Phase, prepared: Prepared, images) -> list[np.ndarray]:
  """The phase's output images (float32 RGB): luminance control recombines
  the optimised (or stylised) luminance with each content's chroma."""
  out = []
  for original, image in zip(prepared.originals, images):
    image = np.asarray(image, np.float32)
    if phase.color in ('luminance', 'luminance_swap'):
      content = np.asarray(image_io.resize(original, image.shape[:2]))
      image = (color.combine_luminance(image[..., :1], content) if phase.color == 'luminance'
               else color.swap_luminance(image, content))
    out.append(image)
  return out


def stage_costs(plan: Plan) -> list[tuple[int, float]]:
  """(steps, pixels x images) per stage, for the progress ETA."""
  return [(s.steps, float(s.hw[0] * s.hw[1] * plan.phases[i].batch))
          for i, s in plan.stages]


def describe(plan: Plan) -> str:
  """The plan for the log: a line per phase, a line per stage with its memory."""
  lines, k = [], 0
  for i, p in enumerate(plan.phases):
    names = ', '.join(c.name for c in itertools.islice(p.contents, 4))
    more = f' +{p.batch - 4}' if p.batch > 4 else ''
    lines.append(f'phase {i + 1}/{len(plan.phases)} {p.kind}: {p.batch} image(s) '
                 f'[{names}{more}], mesh b={p.mesh_shape[0]} x h={p.mesh_shape[1]}')
    for s in p.stages:
      k += 1
      mp = s.hw[0] * s.hw[1] / 1e6
      lines.append(f'  stage {k}: {s.hw[1]}x{s.hw[0]} ({mp:.2f} MP), {s.steps} steps, '
                   + (s.memory.describe() if s.memory else ''))
  return '\n'.join(lines)
