r"""Render a contact sheet: a labelled grid of images as one PNG.

  python tools/contact_sheet.py --out sheet.png --cols 4 \
      'content=photo.jpg' 'style=painting.jpg' 'mask=mask.png' 'result=out/final.png'

Each item is ``label=path``; a path may also be a guidance spec prefixed with
``mask:`` and sized like an image (``mask:halves_x@photo.jpg``), drawn with one
grey level per region. Used by tools/make_readme_pictures.py.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image, ImageDraw

import _common  # noqa: F401  pylint: disable=unused-import  (the repository on sys.path)


def mask_picture(masks: np.ndarray) -> np.ndarray:
  """``[H, W, R]`` region masks -> an RGB picture, a distinct grey per region."""
  r = masks.shape[-1]
  levels = np.linspace(0.15, 0.95, r) if r > 1 else np.array([1.0])
  grey = np.tensordot(masks, levels, axes=([-1], [0]))
  return np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=-1).astype(np.float32)


def contact_sheet(items, cols: int = 4, height: int = 200, pad: int = 8,
                  label_h: int = 18) -> Image.Image:
  """``items``: (label, float RGB array in [0, 1]) pairs -> one PIL image."""
  thumbs = []
  for label, arr in items:
    img = Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8), 'RGB')
    w = max(1, round(img.width * height / img.height))
    thumbs.append((label, img.resize((w, height), Image.LANCZOS)))
  cols = max(1, min(cols, len(thumbs)))
  rows = (len(thumbs) + cols - 1) // cols
  cell_w = max(t.width for _, t in thumbs)
  sheet = Image.new('RGB', (cols * (cell_w + pad) + pad,
                            rows * (height + label_h + pad) + pad), 'white')
  draw = ImageDraw.Draw(sheet)
  for i, (label, t) in enumerate(thumbs):
    x = pad + (i % cols) * (cell_w + pad) + (cell_w - t.width) // 2
    y = pad + (i // cols) * (height + label_h + pad)
    sheet.paste(t, (x, y))
    draw.text((x, y + height + 3), label, fill='black')
  return sheet


def _load(spec: str) -> np.ndarray:
  from nst_jax import image_io, mask_io
  if spec.startswith('mask:'):
    mask_spec, _, like = spec[5:].partition('@')
    hw = image_io.load_image(like).shape[:2] if like else (200, 300)
    return mask_picture(mask_io.load_guidance(mask_spec, hw))
  return image_io.load_image(spec)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('items', nargs='+', help='label=path')
  p.add_argument('--out', required=True)
  p.add_argument('--cols', type=int, default=4)
  p.add_argument('--height', type=int, default=200)
  args = p.parse_args()
  from nst_jax.errors import NSTError
  from nst_jax.files import atomic_write
  try:
    items = []
    for item in args.items:
      label, sep, path = item.partition('=')
      if not sep:
        raise NSTError(f'item {item!r} is not label=path')
      items.append((label, _load(path)))
    sheet = contact_sheet(items, args.cols, args.height)
    atomic_write(args.out, lambda f: sheet.save(f, format='PNG'))
  except NSTError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
