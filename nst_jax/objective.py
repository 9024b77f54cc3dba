"""The style-transfer objective: targets from images, loss of an image.

Data flows one way: images -> :func:`make_targets` (VGG features of content
and styles, Gram matrices, blended and normalised) -> :func:`loss_terms` of the
image being optimised. Everything here is a pure function of pytrees, so the
compiled loop passes targets and VGG params as arguments, never as baked-in
constants.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

from nst_jax import guidance as guidance_lib
from nst_jax import losses
from nst_jax.vgg import vgg_features


class Targets(NamedTuple):
  content: dict      # layer -> losses.Target (P_l, scale)
  style: dict        # layer -> losses.Target (blended A_l, scale); {} if unused
  guided: dict = {}  # layer -> losses.GuidedTarget (spatial control)


class LossWeights(NamedTuple):
  content: jax.Array  # alpha
  style: jax.Array    # beta
  tv: jax.Array       # gamma


_features = jax.jit(vgg_features, static_argnames=('layers', 'pooling'))


def style_grams(params, style_image, layers, pooling='max') -> dict:
  """Gram matrices of one style image at ``layers``."""
  feats = _features(params, jnp.asarray(style_image), tuple(layers), pooling)
  return {k: losses.gram(v) for k, v in feats.items()}


def make_targets(params, content_image, style_images, *, content_layer_weights:
                 Mapping[str, float], style_layer_weights: Mapping[str, float],
                 style_blend, normalization='relative', pooling='max',
                 layer_styles=None, global_weight: float = 1.0) -> Targets:
  """Content features and blended style Grams, with their loss scales.

  Args:
    layer_styles: optional ``{layer: style index}``: that layer's target is
      that style's Gram alone instead of the blend (scale control's naive
      variant: one style's fine scale, another's coarse scale).
    global_weight: λ_global, the weight of these (unguided) style targets;
      0 drops them (used with guided targets, see :func:`make_guided_targets`).
  """
  feats = _features(params, jnp.asarray(content_image),
                    tuple(content_layer_weights), pooling)
  content = losses.content_targets(feats, content_layer_weights, normalization)
  style = {}
  if global_weight > 0:
    grams = [style_grams(params, s, tuple(style_layer_weights), pooling)
             for s in style_images]
    if layer_styles:
      grams = [{l: grams[layer_styles.get(l, 0)][l] for l in style_layer_weights}]
      style_blend = [1.0]
    style = losses.style_targets(grams, style_blend, style_layer_weights,
                                 normalization)
    style = {k: losses.Target(t.value, t.scale * global_weight)
             for k, t in style.items()}
  return Targets(content, style)


def make_guided_targets(params, content_guidance, style_images, style_guidances,
                        region_styles, region_weights, *, style_layer_weights,
                        mode='simple', extra=0, statistic='gram',
                        normalization='relative', pooling='max'):
  """Per-region targets: region r of the content takes style ``region_styles[r]``.

  Args:
    content_guidance: ``[H, W, R]`` masks of the content (at stage size).
    style_images: the style images.
    style_guidances: per style image, its ``[H_s, W_s, R]`` masks.
    region_styles: per region, the index of its style image.
    region_weights: λ_r per region (normalised to sum 1 by the caller).

  Returns:
    ``({layer: GuidedTarget}, [(layer, region, where)] skipped as empty)``.
  """
  layers = tuple(style_layer_weights)
  content_t = guidance_lib.layer_guidance(content_guidance, layers, mode, extra)
  per_style = {}
  for s in sorted(set(region_styles)):
    feats = _features(params, jnp.asarray(style_images[s]), layers, pooling)
    t = guidance_lib.layer_guidance(style_guidances[s], layers, mode, extra)
    per_style[s] = (feats, t)
  stat = guidance_lib.guided_gram if statistic == 'gram' else guidance_lib.guided_mean
  out, skipped = {}, []
  for name, w in style_layer_weights.items():
    values, scales = [], []
    for r, s in enumerate(region_styles):
      feats, t = per_style[s]
      a = stat(feats[name], t[name][..., r:r + 1])[0]
      empty_style = float(jnp.sum(t[name][..., r] ** 2)) <= 0
      empty_content = float(jnp.sum(content_t[name][..., r] ** 2)) <= 0
      if empty_style or empty_content:
        skipped.append((name, r, 'content' if empty_content else f'style {s + 1}'))
        scale = 0.0
      elif normalization == 'relative':
        norm = float(jnp.sum(a * a))
        scale = region_weights[r] * w / norm if norm > 0 else 0.0
      else:
        scale = region_weights[r] * w / (4.0 * a.shape[-1] ** 2)
      values.append(a)
      scales.append(scale)
    out[name] = losses.GuidedTarget(jnp.stack(values), jnp.asarray(scales, jnp.float32),
                                    content_t[name])
  return out, skipped


def loss_terms(params, image, targets: Targets, weights: LossWeights,
               pooling: str = 'max', statistic: str = 'gram', **vgg_options) -> dict:
  """Weighted loss terms of ``image`` ([H, W, 3] in [0, 1]) and their total.

  ``statistic`` is what guided targets compare: ``'gram'`` (guided Gram
  matrices) or ``'mean'`` (guided feature means). ``vgg_options``:
  ``remat``, ``activation_dtype`` (see :func:`nst_jax.vgg_features`).
  """
  layers = tuple(dict.fromkeys(tuple(targets.content) + tuple(targets.style)
                               + tuple(targets.guided)))
  feats = vgg_features(params, image, layers, pooling, **vgg_options)
  style = losses.style_loss(feats, targets.style)
  if targets.guided:
    style = style + losses.guided_style_loss(feats, targets.guided, statistic)
  terms = {
      'content': weights.content * losses.content_loss(feats, targets.content),
      'style': weights.style * style,
      'tv': weights.tv * losses.total_variation(image),
  }
  terms['total'] = terms['content'] + terms['style'] + terms['tv']
  return terms


def pixels_to_image(pixels: jax.Array) -> jax.Array:
  """The optimised variable is unconstrained; the image is its clip to [0, 1].

  Out-of-range pixels get zero gradient, so they stay at the bound they were
  pushed to: a projection that keeps the objective a plain function of the
  variable, which L-BFGS's curvature pairs and line search need. A one-channel
  variable (luminance-only transfer) is shown to VGG as grey RGB.
  """
  image = jnp.clip(pixels, 0.0, 1.0)
  if image.shape[-1] == 1:
    image = jnp.repeat(image, 3, axis=-1)
  return image


def total_loss(pixels, params, targets: Targets, weights: LossWeights,
               pooling: str = 'max', statistic: str = 'gram', **vgg_options) -> jax.Array:
  return loss_terms(params, pixels_to_image(pixels), targets, weights,
                    pooling, statistic, **vgg_options)['total']
