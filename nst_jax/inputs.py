"""What a :class:`~nst_jax.plan.Plan` needs at run time: decoded inputs,
colour control, masks, VGG targets, start images, output images.

The plan (:mod:`nst_jax.plan`) is pure data decided before anything is
decoded; this module materialises it for the engine, one phase and one stage
at a time, so that only the images a phase needs are in memory:

* per phase, :func:`prepare` (host, numpy): decodes the contents and the
  styles' files, applies colour control (histogram matching, luminance),
  loads the guidance masks, and for a clip's frame the earlier results
  warped along the content's optical flow with their reliability
  (:mod:`nst_jax.flow`), or for a multi-pass clip's pass the previous
  pass's results blended with their warped neighbours;
* per stage, :func:`stage_targets` (device: runs VGG19 on the content and
  style images, tiled when the stage is) and :func:`stage_start` (the init,
  or the previous stage's images resized);
* at the phase's end, :func:`finish` (luminance recombination).

Each is a function of its arguments; the files it reads are named by the plan.

Example:
  >>> prepared = prepare(phase, style_images(phase, [], spec.max_input_pixels),
  ...                    spec.max_input_pixels)
  >>> targets, skipped = stage_targets(phase, prepared, 0, params)
  >>> start = stage_start(phase, prepared, 0, None, seed=0)      # [B, h, w, C]
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import color
from nst_jax import config as config_lib
from nst_jax import flow
from nst_jax import image_io
from nst_jax import mask_io
from nst_jax import objective
from nst_jax import video_io
from nst_jax.plan import MIXED_STYLE, Phase, Source

log = logging.getLogger(__name__)


class Prepared(NamedTuple):
  """A phase's images at full resolution, after colour control."""
  originals: list                  # per image, its RGB content (for finish)
  contents: list                   # per image, the content the loss sees
  styles: list                     # per image, its list of style images
  content_masks: list | None       # per image, [H, W, R] guidance
  style_masks: list | None         # per style, [H_s, W_s, R] guidance
  init_images: list | None        # per image, its start: a decoded init file, a
  #                                  clip frame's warped start
  temporal: list | None = None     # per image, a frame's (previous [J, H, W, 3],
  #                                  c [J, H, W]) at its final size, or None


def load(source: Source, max_pixels: int) -> np.ndarray:
  """The decoded image of ``source`` (an array source as it is)."""
  if source.frame >= 0:
    return video_io.read_frame(source.image, source.frame)
  if isinstance(source.image, str):
    return image_io.load_image(source.image, max_pixels)
  return source.image


def style_images(phase: Phase, outputs: list, max_pixels: int) -> list:
  """A phase's decoded styles; ``MIXED_STYLE`` is the scale mix phase's output
  (``outputs``: the earlier phases' output images)."""
  return [outputs[0][0] if s == MIXED_STYLE else load(s, max_pixels)
          for s in phase.styles]


def style_guidance_masks(g: config_lib.GuidanceSpec, style_images: list,
                         max_pixels: int) -> list[np.ndarray]:
  """Per style image, its ``[H_s, W_s, R]`` masks (``whole``: ones for every region)."""
  out = []
  for form, s in zip(g.styles, style_images):
    m = mask_io.load_guidance(form, s.shape[:2], max_pixels)
    out.append(np.repeat(m, g.regions, axis=-1) if m.shape[-1] == 1 else m)
  return out


def prepare(phase: Phase, style_images: list, max_pixels: int,
            outputs: list = ()) -> Prepared:
  """Decodes a phase's contents and applies colour control to its styles.

  ``style_images``: the decoded styles (the scale mix output for
  ``MIXED_STYLE``). With ``histogram`` or ``luminance`` every image gets its
  own styles (:func:`nst_jax.color.control_styles`); otherwise all images
  share the same list. ``outputs``: the earlier phases' output images (a
  clip's frame warps those of ``phase.temporal``).
  """
  originals = [load(c, max_pixels) for c in phase.contents]
  contents, styles = list(originals), [list(style_images)] * len(originals)
  if phase.color in ('histogram', 'luminance'):
    styles = [color.control_styles(style_images, c, phase.color, phase.histogram_mode)
              for c in originals]
  if phase.color == 'luminance':
    contents = [color.as_rgb(color.luminance(c)) for c in originals]
  elif phase.color == 'content_to_style':
    contents = [np.clip(color.match_histogram(c, style_images[0], phase.histogram_mode),
                        0, 1) for c in originals]
  content_masks = style_masks = None
  g = phase.guidance
  if g is not None:
    named = lambda c: c.image if isinstance(c.image, str) and c.frame < 0 else c.name
    content_masks = [mask_io.load_guidance(mask_io.for_image(g.content, named(c)),
                                           c.hw, max_pixels)
                     for c in phase.contents]
    style_masks = style_guidance_masks(g, style_images, max_pixels)
  init_images = temporal = None
  if phase.sweep is not None:
    init_images, temporal = _sweep_targets(phase, originals, outputs, max_pixels)
  elif phase.temporal:
    init, target = _frame_targets(phase, originals[0], outputs, max_pixels)
    init_images, temporal = [init], [target]
  elif phase.init not in ('content', 'noise', 'style'):
    init_images = [image_io.load_image(phase.init, max_pixels)] * phase.batch
  return Prepared(originals, contents, styles, content_masks, style_masks, init_images,
                  temporal)


def _as_seen(phase: Phase):
  """What the optimised image shows VGG, of an RGB image: luminance runs
  compare and start in luminance (grey RGB)."""
  if phase.color == 'luminance':
    return lambda x: color.as_rgb(color.luminance(x))
  return lambda x: x


def _warped(here, before, result, method: str, reliable: bool = True):
  """``result`` (the stylised frame whose content is ``before``) warped to the
  frame whose content is ``here``: ``(ω, inside, c)``, c the reliability of the
  flow (None unless ``reliable``). All at one size."""
  back = flow.optical_flow(here, before, method)
  omega, inside = flow.warp(result, back)
  c = flow.reliability(flow.optical_flow(before, here, method), back) if reliable else None
  return omega, inside, c


def _frame_targets(phase: Phase, content: np.ndarray, outputs, max_pixels: int):
  """A clip frame's start and temporal targets (Ruder et al.; :mod:`nst_jax.flow`).

  At the frame's final size: the content's flow t → t−j (backward) and
  t−j → t (forward) per earlier frame j; ω_j = result_{t−j} warped by the
  backward flow, c_j its reliability, combined closest first. The start
  (``frame_init``): ``warped`` = ω_1 with the content where the flow leaves
  the frame, ``previous`` = result_{t−1} as it is, ``content``. Luminance
  runs compare and start in luminance (grey RGB), as the loss sees them.
  """
  hw = phase.stages[-1].hw
  here = np.asarray(image_io.resize(content, hw))
  as_seen = _as_seen(phase)
  in_loss = phase.loss.temporal_weight > 0
  warped, weights, init = [], [], here
  for e in phase.temporal:
    compared = in_loss and e.distance in phase.loss_frames
    start = e.distance == 1 and phase.init != 'content'
    if not (compared or start):
      continue
    result = np.asarray(image_io.resize(np.asarray(outputs[e.phase][0]), hw), np.float32)
    if e.distance == 1 and phase.init == 'previous':
      init = result
    if not compared and phase.init == 'previous':
      continue
    before = np.asarray(image_io.resize(load(e.source, max_pixels), hw))
    omega, inside, c = _warped(here, before, result, phase.flow, compared)
    if start and phase.init == 'warped':
      init = np.where(inside[..., None], omega, here)
    if compared:
      warped.append(as_seen(omega))
      weights.append(c)
  temporal = None
  if warped:
    temporal = (np.stack(warped).astype(np.float32),
                np.stack(flow.long_term_weights(weights)).astype(np.float32))
  return np.asarray(as_seen(init), np.float32), temporal


def _sweep_targets(phase: Phase, contents, outputs, max_pixels: int):
  """A multi-pass phase's starts and temporal targets (Ruder et al. sec. 3.3).

  Per frame t, at the final size: x = its latest result, ω_j its neighbours'
  (frames t − 1, t + 1) latest results warped to t, c_j the flows'
  reliability; start = (x + δ Σ c_j ω_j) / (1 + δ Σ c_j) (the paper's blend:
  δ = 1 weighs a reliable neighbour as much as x), temporal targets (ω_j,
  c_j). A missing neighbour (at the clip's ends) has c = 0.
  """
  s = phase.sweep
  hw = phase.stages[-1].hw
  as_seen = _as_seen(phase)
  result = lambda e: np.asarray(image_io.resize(np.asarray(outputs[e.phase][e.position]),
                                                hw), np.float32)
  # The neighbours' content frames, each decoded once and in frame order (a
  # video file decodes forward; red-black neighbours are never in the batch).
  mine = {c.index: x for c, x in zip(phase.contents, contents)}
  wanted = {e.source.index: e.source for near in s.neighbour for e in near}
  frames = {i: mine[i] if i in mine else load(src, max_pixels)
            for i, src in sorted(wanted.items())}
  starts, temporal = [], []
  for content, own, near in zip(contents, s.own, s.neighbour):
    x = result(own)
    here = np.asarray(image_io.resize(content, hw))
    omegas, cs = [], []
    for e in near:
      before = np.asarray(image_io.resize(frames[e.source.index], hw))
      omega, _, c = _warped(here, before, result(e), phase.flow)
      omegas.append(omega)
      cs.append(c)
    while len(omegas) < 2:                       # the clip's first / last frame
      omegas.append(x)
      cs.append(np.zeros(hw, np.float32))
    dc = [s.blend * c[..., None] for c in cs]
    start = (x + sum(d * o for d, o in zip(dc, omegas))) / (1 + sum(dc))
    starts.append(np.asarray(as_seen(start), np.float32))
    temporal.append((np.stack([as_seen(o) for o in omegas]).astype(np.float32),
                     np.stack(cs).astype(np.float32)) if s.temporal else None)
  return starts, temporal


# ---------------------------------------------------------------------------
# Per stage: targets and start (device arrays).
# ---------------------------------------------------------------------------


def resize_styles(styles, side: int) -> list:
  """Each style image resized to long side ``side``."""
  return [image_io.resize(s, image_io.fit_long_side(s.shape[:2], side)) for s in styles]


def _stack(trees):
  return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def loss_weights(loss: config_lib.LossSpec) -> objective.LossWeights:
  """α, β, γ of a loss as float32 scalars."""
  return objective.LossWeights(*(jnp.float32(w) for w in (
      loss.content_weight, loss.style_weight, loss.tv_weight, loss.temporal_weight)))


def style_statistics(params, styles, style_masks, loss: config_lib.LossSpec,
                     guidance: config_lib.GuidanceSpec | None, tile: int = 0):
  """``(style targets, guided style stats or None)`` of style images at the
  size the loss sees them; ``style_masks``: their ``[H_s, W_s, R]`` guidance
  at that size (None when unguided). Pass the result to :func:`image_targets`."""
  style_t = objective.style_targets(params, styles, loss.style_layer_weights, tile=tile,
                                    **loss.style_options())
  side = None
  if guidance is not None:
    side = objective.guided_style_stats(
        params, styles, style_masks, guidance.region_styles, loss.style_layer_weights,
        mode=guidance.mode, extra=guidance.extra, statistic=loss.statistic,
        pooling=loss.pooling, tile=tile)
  return style_t, side


def image_targets(params, statistics, loss: config_lib.LossSpec,
                  guidance: config_lib.GuidanceSpec | None, content=None,
                  content_mask=None, tile: int = 0, temporal=None):
  """``(Targets, {layer: bool [R]} guidance regions skipped as empty)`` of one image.

  ``statistics``: :func:`style_statistics`; ``content``: the content at the
  optimised image's size (None: no content target, as for a fast network's
  crops, whose own features are theirs); ``content_mask``: its ``[h, w, R]``
  guidance; ``temporal``: a clip frame's :class:`~nst_jax.objective.Temporal`.
  """
  style_t, side = statistics
  guided, empty = {}, {}
  if guidance is not None:
    guided, empty = objective.guided_targets(
        side, content_mask, guidance.region_weights, loss.style_layer_weights,
        mode=guidance.mode, extra=guidance.extra, normalization=loss.normalization)
  content_t = {} if content is None else objective.content_targets(
      params, content, loss.content_layer_weights, normalization=loss.normalization,
      pooling=loss.pooling, tile=tile)
  return objective.Targets(content=content_t, style=style_t, guided=guided,
                           temporal=temporal, pooling=loss.pooling,
                           statistic=loss.statistic), empty


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
    if id(styles) not in cache:
      resized = resize_styles(styles, stage.style_side)
      masks = None if g is None else [
          image_io.resize(m, s.shape[:2]) for m, s in zip(prepared.style_masks, resized)]
      cache[id(styles)] = style_statistics(params, resized, masks, loss, g, stage.tile)
    temporal = None
    if prepared.temporal is not None and prepared.temporal[i] is not None:
      previous, c = prepared.temporal[i]
      temporal = objective.Temporal(
          jax.vmap(lambda x: image_io.resize(x, stage.hw))(jnp.asarray(previous)),
          jax.vmap(lambda x: image_io.resize(x[..., None], stage.hw)[..., 0])(
              jnp.asarray(c)))
    targets, empty = image_targets(
        params, cache[id(styles)], loss, g, image_io.resize(content, stage.hw),
        None if g is None else image_io.resize(prepared.content_masks[i], stage.hw),
        stage.tile, temporal)
    per_image.append(targets)
    skipped.append(empty)
  return _stack(per_image), _stack(skipped) if skipped[0] else {}


def warn_skipped(skipped: dict) -> None:
  """One warning listing guidance regions skipped as empty (``{layer: bool
  [..., R]}``, any leading axes; one host sync)."""
  host = jax.device_get(skipped)
  where = [f'region {r + 1} at {name}' for name, empty in host.items()
           for r in np.flatnonzero(np.asarray(empty).reshape(-1, np.shape(empty)[-1])
                                   .any(axis=0))]
  if where:
    log.warning('empty guidance, skipped: %s%s', ', '.join(where[:6]),
                ' ...' if len(where) > 6 else '')


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
        resize_styles(s[:1], phase.stages[k].style_side)[0], hw)
        for s in prepared.styles])
  else:                                         # an init file, a clip frame's start
    start = jnp.stack([image_io.resize(x, hw) for x in prepared.init_images])
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
