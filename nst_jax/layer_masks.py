"""Spatial control (Gatys et al. 2017, sec. 4): guidance masks on VGG's layers (pure JAX).

A guidance is a stack of R region masks ``[H, W, R]`` in [0, 1] (soft masks
allowed) at image resolution. :func:`layer_guidance` maps it onto each VGG
layer's grid, following the network's structure exactly:

* ``'simple'``: the mask resized to the layer's grid (2×2 averages at every
  pooling, identity at convolutions) — the paper's "simply resized" channel.
* ``'inside'``: only neurons whose *whole* receptive field lies inside the
  region: a 3×3 minimum at every convolution and a 2×2 minimum at every
  pooling (exact erosion through the network; soft masks: fuzzy AND).
* ``'all'``: neurons whose receptive field *touches* the region: 3×3 and 2×2
  maxima (dilation; fuzzy OR).

Zero padding at the image border is not a region of its own: border neurons
are judged on their in-image inputs only. ``extra`` erodes (k < 0) or dilates
(k > 0) every layer's channel by |k| further grid cells.

Masks come from :mod:`nst_jax.mask_io` (files, label maps, procedural shapes,
on the host, numpy); this module is pure JAX, and the guided statistics
that use its channels are in :mod:`nst_jax.losses`. Each layer's channel is then scaled so that mean(T²) = 1 over the layer, as
in the paper's reference code: regions of any size then contribute on the
same scale, and with an all-ones mask the guided Gram is the plain Gram.
A region empty at a layer gets T = 0 and is reported by :func:`empty_regions`;
the losses skip it rather than divide by zero.

Example:
  >>> masks = nst_jax.mask_io.halves((64, 96), 'x')   # left / right, [64, 96, 2]
  >>> t = layer_guidance(masks, ['relu1_1', 'relu3_1'], 'inside')
  >>> t['relu3_1'].shape
  (16, 24, 2)
"""

from __future__ import annotations

from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax import vgg
from nst_jax.errors import NSTError

MODES = ('simple', 'inside', 'all')


def _filter3x3(t, op):
  """3x3 min/max over in-image neighbours ([h, w, R])."""
  init = jnp.inf if op is lax.min else -jnp.inf
  return lax.reduce_window(t, init, op, (3, 3, 1), (1, 1, 1),
                           ((1, 1), (1, 1), (0, 0)))


def propagate(mask: jax.Array, layers: Iterable[str], mode: str = 'simple',
              extra: int = 0) -> dict[str, jax.Array]:
  """Raw (unnormalised) guidance of ``mask`` ``[H, W, R]`` at each layer."""
  if mode not in MODES:
    raise NSTError(f'unknown guidance mode {mode!r}; use one of {MODES}')
  layers = vgg.check_layers(layers, 'guidance layer')
  wanted = set(layers)
  last = max(vgg.LAYER_INDEX[n] for n in layers)
  t = jnp.asarray(mask, jnp.float32)
  out = {}
  for name in vgg.LAYER_NAMES[:last + 1]:
    if name.startswith('conv'):
      if mode == 'inside':
        t = _filter3x3(t, lax.min)
      elif mode == 'all':
        t = _filter3x3(t, lax.max)
    elif name.startswith('pool'):
      t = vgg.reduce2x2(t, {'simple': 'mean', 'inside': 'min', 'all': 'max'}[mode])
    if name in wanted:
      u = t
      for _ in range(abs(extra)):
        u = _filter3x3(u, lax.min if extra < 0 else lax.max)
      out[name] = u
  return out


def normalize(t: jax.Array) -> jax.Array:
  """Scales each channel of ``[h, w, R]`` so that mean(T²) = 1 (empty stays 0)."""
  ms = jnp.mean(t * t, axis=(0, 1), keepdims=True)
  return jnp.where(ms > 0, t / jnp.sqrt(jnp.where(ms > 0, ms, 1.0)), 0.0)


def layer_guidance(mask, layers, mode: str = 'simple', extra: int = 0
                   ) -> dict[str, jax.Array]:
  """Normalised guidance channels ``{layer: [h_l, w_l, R]}`` (mean T² = 1)."""
  return {k: normalize(v) for k, v in propagate(mask, layers, mode, extra).items()}


def empty_regions(guidance: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """``{layer: bool [R]}``: True where region r's channel is all zero there.

  Stays on the device (no host sync), so it can be used inside ``jit``.
  """
  return {name: jnp.sum(t * t, axis=(-3, -2)) <= 0 for name, t in guidance.items()}
