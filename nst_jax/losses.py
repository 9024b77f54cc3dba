"""Gram matrices and the style-transfer losses, as pure functions.

Notation (Gatys et al. 2016): F_l is the [M_l, N_l] matrix of layer l's
activations of the image being optimised (M_l = h*w positions, N_l channels),
P_l the content image's, A_l the style target's Gram matrix.

  gram:          G_l = F_lᵀ F_l / M_l                       (mean over positions)
  content loss:  L_c = Σ_l v_l · s_c,l · Σ (F_l − P_l)²
  style loss:    L_s = Σ_l w_l · s_s,l · Σ (G_l − A_l)²
  TV:            L_tv = mean (x[i+1,j] − x[i,j])² + mean (x[i,j+1] − x[i,j])²
  total:         α L_c + β L_s + γ L_tv,   Σ v_l = Σ w_l = 1

The normalisers s depend on ``normalization``:

* ``'relative'`` (default): s_c = 1 / Σ P_l², s_s = 1 / Σ A_l². Every layer's
  term is a relative squared error, so no layer dominates because its
  activations happen to be large, and the same α/β works at any resolution and
  for any number of layers. With α = 1, β = 1e4 … 1e5 the style is strong and
  the content recognisable.
* ``'gatys'``: s_c = 1 / (2 M_l N_l), s_s = 1 / (4 N_l²) — exactly eq. 4 of
  Gatys et al. 2016 once G is divided by M_l, and their content loss divided by
  M_l N_l (so it too is resolution-independent). Layer magnitudes then differ
  by ~10⁵ (relu4_1 dominates) and α/β needs tuning per layer set.

Several style images with blend weights b_s (Σ b_s = 1) use the blended target
A_l = Σ_s b_s A_l,s: Σ_s b_s‖G − A_s‖² = ‖G − Σ_s b_s A_s‖² + const, so the
gradient is that of the per-style sum, at the cost of one Gram comparison.

Example:
  >>> f = jnp.ones((4, 4, 2))
  >>> nst_jax.gram(f)
  Array([[1., 1.], [1., 1.]], dtype=float32)
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

from nst_jax import guidance
from nst_jax.errors import NSTError
from nst_jax.vgg import float32_precision

NORMALIZATIONS = ('relative', 'gatys')


def gram(features: jax.Array) -> jax.Array:
  """Gram matrix FᵀF / (h·w) of ``[..., h, w, C]`` features -> ``[..., C, C]``."""
  f = features.reshape(features.shape[:-3] + (-1, features.shape[-1]))
  f = f.astype(jnp.float32)
  return jnp.einsum('...mc,...md->...cd', f, f, precision=float32_precision()) / f.shape[-2]


class Target(NamedTuple):
  """A per-layer target and the scale its squared error is multiplied by."""
  value: jax.Array   # P_l (content) or A_l (style Gram)
  scale: jax.Array   # s_l, already multiplied by the layer weight


def _check_normalization(normalization):
  if normalization not in NORMALIZATIONS:
    raise NSTError(f'unknown loss normalization {normalization!r}; use one of '
                   f'{NORMALIZATIONS}')


def safe_inverse(x):
  return jnp.where(x > 0, 1.0 / jnp.where(x > 0, x, 1.0), 0.0)


def content_targets(features: Mapping[str, jax.Array],
                    layer_weights: Mapping[str, float],
                    normalization: str = 'relative') -> dict[str, Target]:
  """Content targets P_l with their scales v_l·s_c,l."""
  _check_normalization(normalization)
  out = {}
  for name, weight in layer_weights.items():
    p = features[name].astype(jnp.float32)
    if normalization == 'relative':
      s = safe_inverse(jnp.sum(p * p))
    else:
      s = jnp.asarray(1.0 / (2.0 * p.size), jnp.float32)
    out[name] = Target(p, weight * s)
  return out


def style_targets(grams_per_style: list[Mapping[str, jax.Array]],
                  blend: list[float] | jax.Array,
                  layer_weights: Mapping[str, float],
                  normalization: str = 'relative') -> dict[str, Target]:
  """Blended style targets A_l = Σ_s b_s A_l,s with scales w_l·s_s,l.

  Args:
    grams_per_style: one ``{layer: Gram}`` per style image.
    blend: blend weights b_s, already normalised to sum to 1.
    layer_weights: w_l per style layer, already normalised to sum to 1.
    normalization: ``'relative'`` or ``'gatys'`` (see module docstring).
  """
  _check_normalization(normalization)
  out = {}
  for name, weight in layer_weights.items():
    a = sum(b * g[name] for b, g in zip(blend, grams_per_style))
    if normalization == 'relative':
      s = safe_inverse(jnp.sum(a * a))
    else:
      s = jnp.asarray(1.0 / (4.0 * a.shape[-1] ** 2), jnp.float32)
    out[name] = Target(a, weight * s)
  return out


def content_loss(features: Mapping[str, jax.Array],
                 targets: Mapping[str, Target]) -> jax.Array:
  """L_c = Σ_l scale_l · Σ (F_l − P_l)²."""
  total = jnp.zeros((), jnp.float32)
  for name, t in targets.items():
    d = features[name].astype(jnp.float32) - t.value
    total = total + t.scale * jnp.sum(d * d)
  return total


def style_loss(features: Mapping[str, jax.Array],
               targets: Mapping[str, Target]) -> jax.Array:
  """L_s = Σ_l scale_l · Σ (G_l − A_l)² with G_l = gram(F_l)."""
  total = jnp.zeros((), jnp.float32)
  for name, t in targets.items():
    d = gram(features[name]) - t.value
    total = total + t.scale * jnp.sum(d * d)
  return total


def total_variation(image: jax.Array) -> jax.Array:
  """Mean squared difference between vertical and horizontal neighbours."""
  dy = image[..., 1:, :, :] - image[..., :-1, :, :]
  dx = image[..., :, 1:, :] - image[..., :, :-1, :]
  return jnp.mean(dy * dy) + jnp.mean(dx * dx)


class GuidedTarget(NamedTuple):
  """Per-region targets at one layer for spatial control (Gatys et al. 2017)."""
  value: jax.Array      # [R, C, C] guided Grams, or [R, C] guided means
  scale: jax.Array      # [R]: λ_r · w_l · s_l,r (0 for skipped regions)
  guidance: jax.Array   # [h, w, R]: the *content's* guidance channels


def guided_style_loss(features: Mapping[str, jax.Array],
                      targets: Mapping[str, GuidedTarget],
                      statistic: str = 'gram') -> jax.Array:
  """Σ_l Σ_r scale_l,r · Σ (Gʳ_l − Aʳ_l)² with guided Grams (or guided means)."""
  stat = guidance.guided_gram if statistic == 'gram' else guidance.guided_mean
  total = jnp.zeros((), jnp.float32)
  for name, t in targets.items():
    d = stat(features[name], t.guidance) - t.value
    per_region = jnp.sum((d * d).reshape(d.shape[0], -1), axis=1)
    total = total + jnp.sum(t.scale * per_region)
  return total
