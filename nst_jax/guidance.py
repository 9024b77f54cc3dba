"""Spatial control (Gatys et al. 2017, sec. 4): guidance channels per layer.

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

Each layer's channel is then scaled so that mean(T²) = 1 over the layer, as
in the paper's reference code: regions of any size then contribute on the
same scale, and with an all-ones mask the guided Gram is the plain Gram.
A region empty at a layer gets T = 0 and is reported by :func:`empty_regions`;
the losses skip it rather than divide by zero.

Example:
  >>> masks = halves((64, 96), 'x')                 # left / right, [64, 96, 2]
  >>> t = layer_guidance(masks, ['relu1_1', 'relu3_1'], 'inside')
  >>> t['relu3_1'].shape
  (16, 24, 2)
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nst_jax import image_io
from nst_jax import vgg
from nst_jax.vgg import float32_precision
from nst_jax.errors import NSTError

log = logging.getLogger(__name__)

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


def empty_regions(guidance: Mapping[str, jax.Array]) -> list[tuple[str, int]]:
  """(layer, region) pairs whose channel is all zero."""
  out = []
  for name, t in guidance.items():
    energy = np.asarray(jnp.sum(t * t, axis=(0, 1)))
    out += [(name, r) for r in np.flatnonzero(energy <= 0)]
  return out


def guided_gram(features: jax.Array, guidance: jax.Array) -> jax.Array:
  """Gʳ = (Tʳ∘F)ᵀ(Tʳ∘F) / (h·w) for every region: ``[h,w,C] x [h,w,R] -> [R,C,C]``."""
  f = features.astype(jnp.float32)
  m = f.shape[0] * f.shape[1]
  tf = guidance[..., :, None] * f[..., None, :]              # [h, w, R, C]
  return jnp.einsum('hwrc,hwrd->rcd', tf, tf,
                    precision=float32_precision()) / m


def guided_mean(features: jax.Array, guidance: jax.Array) -> jax.Array:
  """Per-region mean of Tʳ∘F: ``[h,w,C] x [h,w,R] -> [R, C]``."""
  f = features.astype(jnp.float32)
  return jnp.einsum('hwr,hwc->rc', guidance, f,
                    precision=float32_precision()) / (f.shape[0] * f.shape[1])


# --------------------------------------------------------------------------
# Masks from files and procedural masks.
# --------------------------------------------------------------------------


def halves(hw, axis: str = 'x', soft: int = 0) -> np.ndarray:
  """Two regions: left/right (``'x'``) or top/bottom (``'y'``)."""
  h, w = hw
  coord = (np.arange(w) + 0.5) / w if axis == 'x' else (np.arange(h) + 0.5) / h
  first = (coord < 0.5).astype(np.float32)
  first = np.broadcast_to(first[None, :] if axis == 'x' else first[:, None], (h, w))
  return np.stack([first, 1.0 - first], axis=-1)


def disc(hw, radius: float = 0.3) -> np.ndarray:
  """Two regions: a centred disc (radius as a fraction of the short side) and the rest."""
  h, w = hw
  y, x = np.mgrid[:h, :w]
  d = np.hypot(y + 0.5 - h / 2, x + 0.5 - w / 2) / min(h, w)
  inside = (d < radius).astype(np.float32)
  return np.stack([inside, 1.0 - inside], axis=-1)


def horizon(hw, height: float = 0.5) -> np.ndarray:
  """Two regions: sky above a horizontal line at ``height`` (from the top), ground below."""
  h, w = hw
  sky = ((np.arange(h) + 0.5) / h < height).astype(np.float32)
  sky = np.broadcast_to(sky[:, None], (h, w))
  return np.stack([sky, 1.0 - sky], axis=-1)


PROCEDURAL = {'halves_x': lambda hw, a: halves(hw, 'x'),
              'halves_y': lambda hw, a: halves(hw, 'y'),
              'disc': lambda hw, a: disc(hw, a if a is not None else 0.3),
              'horizon': lambda hw, a: horizon(hw, a if a is not None else 0.5)}


def _label_map(path, max_pixels) -> np.ndarray:
  """One image whose distinct colours are the regions (sorted by RGB value)."""
  rgb = np.round(image_io.load_image(path, max_pixels) * 255).astype(np.int32)
  codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
  colours = np.unique(codes)
  if len(colours) > 32:
    raise NSTError(f'{path}: label map has {len(colours)} colours (max 32); '
                   'use flat colours, one per region')
  return np.stack([(codes == c).astype(np.float32) for c in colours], axis=-1)


def load_guidance(spec: str, hw, max_pixels: int = image_io.DEFAULT_MAX_PIXELS
                  ) -> np.ndarray:
  """Region masks ``[H, W, R]`` for an image of size ``hw`` from a spec string.

  ``spec`` is one of:
    * ``''`` or ``whole``: one channel of ones — the whole image serves every
      region (the usual choice for a style image in multi-style runs);
    * a label map path (``labels.png``): each distinct colour is a region;
    * greyscale mask paths joined by ``+`` (``sky.png+ground.png``), soft ok;
    * procedural: ``halves_x``, ``halves_y``, ``disc[:radius]``,
      ``horizon[:height]``.
  Masks of another size are resized; another aspect ratio is an error.
  """
  if spec in ('', 'whole'):
    return np.ones(tuple(hw) + (1,), np.float32)
  name, _, arg = spec.partition(':')
  if name in PROCEDURAL:
    try:
      a = float(arg) if arg else None
    except ValueError:
      raise NSTError(f'guidance {spec!r}: {arg!r} is not a number') from None
    return PROCEDURAL[name](hw, a)
  paths = spec.split('+')
  if len(paths) == 1:
    masks = _label_map(paths[0], max_pixels)
  else:
    masks = np.stack([image_io.load_image(p, max_pixels).mean(axis=-1)
                      for p in paths], axis=-1)
  mh, mw = masks.shape[:2]
  h, w = hw
  if abs(mh / mw - h / w) > 0.02 * (h / w) + 1.0 / min(mh, mw):
    raise NSTError(f'guidance {spec!r} is {mw}x{mh}, its aspect ratio differs '
                   f'from its image ({w}x{h})')
  if (mh, mw) != (h, w):
    masks = np.asarray(jax.image.resize(jnp.asarray(masks), (h, w, masks.shape[-1]),
                                        'linear', antialias=True)).clip(0, 1)
  return masks
