"""Guidance masks for spatial control, on the host: from files, label maps or shapes.

A guidance is a stack of R region masks ``[H, W, R]`` in [0, 1] (float32,
numpy) for one image. :func:`load_guidance` reads the forms a config accepts;
:mod:`nst_jax.layer_masks` maps masks onto VGG's layers (pure JAX).

Example:
  >>> m = load_guidance('halves_x', (64, 96))        # [64, 96, 2]
  >>> m = load_guidance('sky.png+ground.png', (480, 640))
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import image_io
from nst_jax.errors import NSTError


def halves(hw, axis: str = 'x') -> np.ndarray:
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


def for_image(spec: str, image_name: str | None) -> str:
  """The guidance form for one content image.

  ``spec`` may be a folder holding one mask (or label map) per content image,
  named after it: ``masks/cat.png`` for ``photos/cat.jpg`` (any image
  extension). Any other form serves every image as it is.
  """
  if not spec or not os.path.isdir(spec):
    return spec
  stem = os.path.splitext(os.path.basename(str(image_name or '')))[0]
  for path in image_io.list_images(spec):
    if os.path.splitext(os.path.basename(path))[0] == stem:
      return path
  raise NSTError(f'guidance folder {spec} has no mask named {stem}.* for content '
                 f'image {image_name}')


def count_regions(spec: str, max_pixels: int = image_io.DEFAULT_MAX_PIXELS) -> int:
  """How many regions ``spec`` describes (reads a label map's colours)."""
  if spec in ('', 'whole'):
    return 1
  if spec.partition(':')[0] in PROCEDURAL:
    return 2
  if '+' in spec:
    return len(spec.split('+'))
  return _label_map(spec, max_pixels).shape[-1]
