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

from nst_jax import losses
from nst_jax.vgg import vgg_features


class Targets(NamedTuple):
  content: dict      # layer -> losses.Target (P_l, scale)
  style: dict        # layer -> losses.Target (blended A_l, scale)


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
                 style_blend, normalization='relative', pooling='max') -> Targets:
  """Content features and blended style Grams, with their loss scales."""
  feats = _features(params, jnp.asarray(content_image),
                    tuple(content_layer_weights), pooling)
  content = losses.content_targets(feats, content_layer_weights, normalization)
  grams = [style_grams(params, s, tuple(style_layer_weights), pooling)
           for s in style_images]
  style = losses.style_targets(grams, style_blend, style_layer_weights,
                               normalization)
  return Targets(content, style)


def loss_terms(params, image, targets: Targets, weights: LossWeights,
               pooling: str = 'max') -> dict:
  """Weighted loss terms of ``image`` ([H, W, 3] in [0, 1]) and their total."""
  layers = tuple(dict.fromkeys(tuple(targets.content) + tuple(targets.style)))
  feats = vgg_features(params, image, layers, pooling)
  terms = {
      'content': weights.content * losses.content_loss(feats, targets.content),
      'style': weights.style * losses.style_loss(feats, targets.style),
      'tv': weights.tv * losses.total_variation(image),
  }
  terms['total'] = terms['content'] + terms['style'] + terms['tv']
  return terms


def pixels_to_image(pixels: jax.Array) -> jax.Array:
  """The optimised variable is unconstrained; the image is its clip to [0, 1].

  Out-of-range pixels get zero gradient, so they stay at the bound they were
  pushed to: a projection that keeps the objective a plain function of the
  variable, which L-BFGS's curvature pairs and line search need.
  """
  return jnp.clip(pixels, 0.0, 1.0)


def total_loss(pixels, params, targets: Targets, weights: LossWeights,
               pooling: str = 'max') -> jax.Array:
  return loss_terms(params, pixels_to_image(pixels), targets, weights,
                    pooling)['total']
