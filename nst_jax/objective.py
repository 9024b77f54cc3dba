"""The style-transfer objective: targets from images, loss of an image.

Data flows one way: images -> :func:`make_targets` (VGG features of content
and styles, Gram matrices, blended and normalised) -> :func:`total_loss` of the
image being optimised. Everything here is a pure function of pytrees:
:class:`Targets` carries the arrays as leaves and how they were computed
(pooling, guided statistic) as static metadata, so ``jit``, ``grad`` and
``vmap`` need no static arguments.

Example:
  >>> params = nst_jax.load_vgg19()
  >>> targets = nst_jax.make_targets(params, content, [style])  # paper's layers
  >>> weights = nst_jax.LossWeights(1.0, 100.0, 0.0)             # alpha, beta, gamma
  >>> loss = lambda x: nst_jax.total_loss(x, params, targets, weights)
  >>> value, grad = jax.jit(jax.value_and_grad(loss))(content)
  >>> losses = jax.vmap(loss)(images)                            # [B, H, W, 3]
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from nst_jax import color
from nst_jax import layer_masks
from nst_jax import losses
from nst_jax import tiling
from nst_jax import vgg
from nst_jax.errors import NSTError

# Gatys et al. 2016: content at relu4_2, style at relu1_1 ... relu5_1, equal weights.
PAPER_CONTENT_LAYERS = ('relu4_2',)
PAPER_STYLE_LAYERS = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')
STATISTICS = losses.STATISTICS


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Targets:
  """What the optimised image is compared with, per VGG layer.

  Attributes:
    content: ``{layer: losses.Target(P_l, scale)}``.
    style: ``{layer: losses.Target(A_l, scale)}`` (blended Grams, or
      :class:`~nst_jax.losses.W2Target` Gaussians); ``{}`` if unused.
    guided: ``{layer: losses.GuidedTarget}`` for spatial control; ``{}`` if off.
    pooling: static: ``'max'`` or ``'avg'``, the VGG the targets were made with.
    statistic: static: what guided targets compare, ``'gram'``, ``'mean'``
      or ``'w2'``.
    temporal: :class:`Temporal` (a video frame's earlier frames, warped), or None.
  """
  content: dict
  style: dict
  guided: dict = dataclasses.field(default_factory=dict)
  temporal: 'Temporal | None' = None
  pooling: str = dataclasses.field(default='max', metadata=dict(static=True))
  statistic: str = dataclasses.field(default='gram', metadata=dict(static=True))

  @property
  def layers(self) -> tuple[str, ...]:
    """Every layer a loss evaluation needs, in first-use order."""
    return tuple(dict.fromkeys((*self.content, *self.style, *self.guided)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Temporal:
  """Ruder et al.'s temporal targets of a video frame t (:mod:`nst_jax.flow`).

  Attributes:
    previous: ``[J, H, W, C]`` the stylised frames t − j warped to frame t by
      the content's optical flow (C as the optimised image shows VGG: RGB).
    weights: ``[J, H, W]`` their per-pixel reliability c_j in [0, 1]
      (long-term weights already combined closest first).
  """
  previous: jax.Array
  weights: jax.Array


def temporal_loss(image, temporal: Temporal) -> jax.Array:
  """Σ_j Σ c_j (x − ω_j)² / D, D = H·W·C (Ruder et al. eqs. 7–8), of ``image``
  ``[H, W, C]`` against the warped earlier frames."""
  d = image[None] - temporal.previous
  return jnp.sum(temporal.weights[..., None] * d * d) / image.size


class LossWeights(NamedTuple):
  """α, β, γ and λ_t (the temporal term of video frames): floats or scalar arrays."""
  content: float | jax.Array
  style: float | jax.Array
  tv: float | jax.Array
  temporal: float | jax.Array = 0.0


def _check_choice(what: str, value: str, choices) -> None:
  if value not in choices:
    raise NSTError(f'unknown {what} {value!r}; use one of {choices}')


def layer_weights(layers, what: str = 'layer') -> dict[str, float]:
  """``['relu1_1', ...]`` (equal) or ``{layer: weight}`` -> weights summing to 1."""
  if isinstance(layers, str):
    layers = (layers,)
  items = (list(layers.items()) if isinstance(layers, Mapping)
           else [(name, 1.0) for name in layers])
  vgg.check_layers([n for n, _ in items], what)
  total = float(sum(w for _, w in items))
  if not items or total <= 0:
    raise NSTError(f'{what} weights must not be empty or sum to zero')
  return {name: float(w) / total for name, w in items}


def position_sums(params, image, wanted: losses.Wanted, pooling: str = 'max',
                  tile: int = 0, mesh=None, vgg_options=()) -> dict:
  """:func:`nst_jax.losses.position_sums` of ``image`` (``[H, W, 3]``, what VGG
  sees): the one place that chooses between the whole image and tiles.

  ``tile``: evaluate in tiles of this side (exact; memory of one window, see
  :mod:`nst_jax.tiling`; ``mesh``: a mesh whose axis ``'h'`` shares the
  tiles); 0, or a tile that covers the image: the whole image at once.
  ``vgg_options``: ``(name, value)`` pairs for :func:`nst_jax.vgg_features`.
  """
  t = tiling.make_tiling(image.shape[:2], tile, wanted.layers)
  if t is not None:
    return tiling.sums(image, params, wanted, t, pooling, mesh, vgg_options)
  feats = vgg.vgg_features(params, image, wanted.layers, pooling, **dict(vgg_options))
  return losses.position_sums(feats, wanted)


_measure = jax.jit(position_sums, static_argnames=('pooling', 'tile'))


def _means(params, image, wanted, pooling, tile) -> dict:
  """Sums of one image divided by M_l: Grams, guided statistics; and maps."""
  image = jnp.asarray(image, jnp.float32)
  s = _measure(params, image, wanted, pooling, tile)
  per = lambda d: {k: jax.tree.map(lambda v: v / losses.layer_positions(image.shape[:2], k),
                                   v) for k, v in d.items()}
  return {'grams': per(s['grams']), 'guided': per(s['guided']), 'means': per(s['means']),
          'maps': s['maps']}


def features(params, image, layers, pooling: str = 'max', tile: int = 0) -> dict:
  """VGG features of one image (compiled once per shape and layer set).

  ``tile``: compute them in tiles of this side (exact; the memory of one
  tile's forward pass), for images too big to run whole.
  """
  return _means(params, image, losses.Wanted(maps=tuple(layers)), pooling, tile)['maps']


def style_grams(params, style_image, layers, pooling: str = 'max', tile: int = 0) -> dict:
  """Gram matrices of one style image at ``layers`` (``tile``: see :func:`features`)."""
  return _means(params, style_image, losses.Wanted(grams=tuple(layers)), pooling,
                tile)['grams']


def style_moments(params, style_image, layers, pooling: str = 'max',
                  tile: int = 0) -> tuple[dict, dict]:
  """(``{layer: ΣF/M}``, ``{layer: ΣFᵀF/M}``): the mean and second moment
  of one style image's features (for :class:`~nst_jax.losses.W2Target`)."""
  layers = tuple(layers)
  m = _means(params, style_image, losses.Wanted(grams=layers, means=layers), pooling, tile)
  return m['means'], m['grams']


def content_targets(params, content_image, content_layers, *,
                    normalization: str = 'relative', pooling: str = 'max',
                    tile: int = 0) -> dict:
  """``{layer: Target}`` of the content image; ``{}`` for no layers."""
  if not content_layers:
    return {}
  weights = layer_weights(content_layers, 'content layer')
  feats = features(params, content_image, weights, pooling, tile)
  return losses.content_targets(feats, weights, normalization)


def style_targets(params, style_images: Sequence, style_layers, *, style_blend=None,
                  normalization: str = 'relative', pooling: str = 'max',
                  layer_styles: Mapping[str, int] | None = None,
                  global_weight: float = 1.0, tile: int = 0,
                  style_statistic: str = 'gram') -> dict:
  """Blended style targets of the style images; ``{}`` when ``global_weight`` is 0.

  Args:
    layer_styles: optional ``{layer: style index}``: that layer's target is
      that style's statistic alone instead of the blend (scale control's
      naive variant: one style's fine scale, another's coarse scale).
    global_weight: a factor on every scale (λ_global in guided runs).
    style_statistic: ``'gram'`` (Gatys et al.) or ``'w2'`` (the Gaussian of
      the features, compared by the 2-Wasserstein distance; see
      :func:`nst_jax.losses.w2_distance`).
  """
  _check_choice('style statistic', style_statistic, losses.STYLE_STATISTICS)
  if global_weight <= 0:
    return {}
  weights = layer_weights(style_layers, 'style layer')
  blend = (tuple(1.0 / len(style_images) for _ in style_images) if style_blend is None
           else tuple(style_blend))
  moments = [style_moments(params, s, tuple(weights), pooling, tile) for s in style_images]
  means, grams = [m for m, _ in moments], [g for _, g in moments]
  if layer_styles:
    pick = lambda per_style: [{l: per_style[layer_styles.get(l, 0)][l] for l in weights}]
    means, grams, blend = pick(means), pick(grams), (1.0,)
  style = losses.style_targets(grams, blend, weights, normalization,
                               means if style_statistic == 'w2' else None)
  return {k: losses.Target(t.value, t.scale * global_weight) for k, t in style.items()}


def make_targets(params, content_image, style_images: Sequence, *,
                 content_layers=PAPER_CONTENT_LAYERS, style_layers=PAPER_STYLE_LAYERS,
                 style_blend=None, normalization: str = 'relative',
                 pooling: str = 'max', layer_styles=None,
                 global_weight: float = 1.0, guided: dict | None = None,
                 statistic: str = 'gram', tile: int = 0,
                 style_statistic: str = 'gram') -> Targets:
  """Content features and blended style statistics of one image, with their scales.

  Args:
    params: from :func:`nst_jax.load_vgg19`.
    content_image: float RGB ``[H, W, 3]`` in [0, 1].
    style_images: a list of style images (any sizes).
    content_layers, style_layers: layer names (equal weights) or
      ``{layer: weight}``; weights are normalised to sum to 1. Default: the
      paper's (relu4_2; relu1_1 ... relu5_1).
    style_blend: per style image, weights summing to 1 (default equal).
    normalization: ``'relative'`` or ``'gatys'`` (see :mod:`nst_jax.losses`).
    pooling: ``'max'`` or ``'avg'``; the loss uses the same.
    layer_styles: ``{layer: style index}`` (see :func:`style_targets`).
    global_weight: λ_global, the weight of the unguided style targets.
    guided: ``{layer: GuidedTarget}`` from :func:`make_guided_targets`.
    statistic: what ``guided`` compares, ``'gram'``, ``'mean'`` or ``'w2'``
      (as it was made with, see :func:`make_guided_targets`).
    tile: compute the features in tiles of this side (same targets; for
      images too big to run whole, see :mod:`nst_jax.tiling`).
    style_statistic: what the style targets compare: ``'gram'`` (the
      paper's) or ``'w2'`` (see :func:`style_targets`).
  """
  _check_choice('guided statistic', statistic, STATISTICS)
  return Targets(
      content=content_targets(params, content_image, content_layers,
                              normalization=normalization, pooling=pooling, tile=tile),
      style=style_targets(params, style_images, style_layers, style_blend=style_blend,
                          normalization=normalization, pooling=pooling,
                          layer_styles=layer_styles, global_weight=global_weight,
                          tile=tile, style_statistic=style_statistic),
      guided=guided or {}, pooling=pooling, statistic=statistic)


class GuidedStyle(NamedTuple):
  """The style images' guided statistics at one layer (shared by content images)."""
  value: jax.Array      # [R, C, C] guided Grams ([R, C] means, or a W2Target with
  #                       a leading [R]) of region r's style
  empty: jax.Array      # bool [R]: region r's style mask is empty at this layer


def _guided_stats(params, image, guidance: dict, statistic, pooling, tile) -> dict:
  """``{layer: [R, ...]}``: the guided statistic of every region of ``image``."""
  stats = _means(params, image, losses.Wanted(guided=guidance, statistic=statistic),
                 pooling, tile)['guided']
  if statistic == 'w2':                # moments of the (Tʳ)²-weighted features
    return {k: losses.w2_target(first, second) for k, (second, first) in stats.items()}
  return stats


def guided_style_stats(params, style_images, style_guidances, region_styles,
                      style_layers, *, mode='simple', extra=0, statistic='gram',
                      pooling='max', tile: int = 0) -> dict[str, GuidedStyle]:
  """Per layer, region r's statistic on style ``region_styles[r]`` inside its mask r."""
  weights = layer_weights(style_layers, 'style layer')
  layers = tuple(weights)
  per_style = {}
  for s in sorted(set(region_styles)):
    t = layer_masks.layer_guidance(style_guidances[s], layers, mode, extra)
    per_style[s] = (_guided_stats(params, style_images[s], t, statistic, pooling, tile),
                    layer_masks.empty_regions(t))
  def regions(i, name):           # region r's value from its style's statistics
    return jax.tree.map(lambda *v: jnp.stack(v), *[
        jax.tree.map(lambda v: v[r], per_style[s][i][name])
        for r, s in enumerate(region_styles)])
  return {name: GuidedStyle(regions(0, name), regions(1, name)) for name in layers}


def guided_targets(style_stats: Mapping[str, GuidedStyle], content_guidance,
                   region_weights, style_layers, *, mode='simple', extra=0,
                   normalization='relative') -> tuple[dict, dict]:
  """Guided targets for one content image from the styles' shared statistics.

  Returns:
    ``({layer: GuidedTarget}, {layer: bool [R]})``: the targets, and which
    regions are skipped as empty (in the content or its style) per layer.
    Skipped regions get scale 0. Nothing here syncs with the host.
  """
  weights = layer_weights(style_layers, 'style layer')
  content_t = layer_masks.layer_guidance(content_guidance, tuple(weights), mode, extra)
  content_empty = layer_masks.empty_regions(content_t)
  lam = jnp.asarray(region_weights, jnp.float32)
  out, skipped = {}, {}
  for name, w in weights.items():
    style = style_stats[name]
    empty = style.empty | content_empty[name]
    if normalization == 'relative':
      scale = lam * w * jax.vmap(losses.relative_scale)(style.value)
    else:
      scale = lam * w * losses.gatys_scale(jax.tree.map(lambda v: v[0], style.value))
    out[name] = losses.GuidedTarget(style.value, jnp.where(empty, 0.0, scale),
                                    content_t[name])
    skipped[name] = empty
  return out, skipped


def make_guided_targets(params, content_guidance, style_images, style_guidances,
                        region_styles, region_weights, *, style_layers=PAPER_STYLE_LAYERS,
                        mode='simple', extra=0, statistic='gram',
                        normalization='relative', pooling='max',
                        tile: int = 0) -> tuple[dict, dict]:
  """Per-region targets: region r of the content takes style ``region_styles[r]``.

  Args:
    content_guidance: ``[H, W, R]`` masks of the content (at its size).
    style_images: the style images.
    style_guidances: per style image, its ``[H_s, W_s, R]`` masks.
    region_styles: per region, the index of its style image.
    region_weights: λ_r per region (normalised to sum 1 by the caller).

  Returns:
    ``({layer: GuidedTarget}, {layer: bool [R] skipped as empty})``; pass the
    first to :func:`make_targets` as ``guided=``.
  """
  side = guided_style_stats(params, style_images, style_guidances, region_styles,
                           style_layers, mode=mode, extra=extra, statistic=statistic,
                           pooling=pooling, tile=tile)
  return guided_targets(side, content_guidance, region_weights, style_layers,
                        mode=mode, extra=extra, normalization=normalization)


def loss_terms(params, image, targets: Targets, weights: LossWeights,
               tile: int = 0, mesh=None, **vgg_options) -> dict:
  """Weighted loss terms of ``image`` ([H, W, 3] in [0, 1]) and their total.

  ``tile``: evaluate in tiles of this side (:mod:`nst_jax.tiling`: the same
  value and gradient in the memory of one tile; ``mesh``: a device mesh whose
  axis ``'h'`` holds the image in bands, its devices share the tiles).
  ``vgg_options``: ``remat``, ``activation_dtype`` (see
  :func:`nst_jax.vgg_features`); they change memory and speed, not the value.
  """
  wanted = losses.Wanted.of(targets)
  sums = position_sums(params, image, wanted, targets.pooling, tile, mesh,
                       tuple(sorted(vgg_options.items())))
  hw = image.shape[:2]
  raw = losses.loss_from_sums(sums, targets,
                              {l: losses.layer_positions(hw, l) for l in wanted.layers})
  terms = {
      'content': weights.content * raw['content'],
      'style': weights.style * raw['style'],
      'tv': weights.tv * losses.total_variation(image),
  }
  if targets.temporal is not None:
    terms['temporal'] = weights.temporal * temporal_loss(image, targets.temporal)
  terms['total'] = sum(terms.values())
  return terms


def pixels_to_image(pixels: jax.Array) -> jax.Array:
  """The optimised variable is unconstrained; the image is its clip to [0, 1].

  Out-of-range pixels get zero gradient, so they stay at the bound they were
  pushed to: a projection that keeps the objective a plain function of the
  variable, which L-BFGS's curvature pairs and line search need. A one-channel
  variable (luminance-only transfer) is shown to VGG as grey RGB.
  """
  return color.as_rgb(jnp.clip(pixels, 0.0, 1.0))


def total_loss(pixels, params, targets: Targets, weights: LossWeights,
               tile: int = 0, mesh=None, **vgg_options) -> jax.Array:
  """α L_content + β L_style + γ L_tv of the image ``clip(pixels, 0, 1)``.

  ``tile``, ``mesh``: evaluate value and gradient in tiles of this side
  (exact; see :func:`loss_terms`), for images whose activations do not fit.

  Example:
    >>> loss = lambda x: total_loss(x, params, targets, LossWeights(1.0, 100.0, 0.0))
    >>> value, grad = jax.value_and_grad(loss)(x)
  """
  return loss_terms(params, pixels_to_image(pixels), targets, weights, tile, mesh,
                    **vgg_options)['total']
