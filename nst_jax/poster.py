"""Posters: physical sizes, DPI and the derived coarse-to-fine schedule.

``poster='A2'`` (ISO A0-A6, B1-B4, letter, legal, tabloid) or
``print_size='60x40cm'`` / ``'24x18in'`` with ``dpi`` gives the final pixel
size: the content's aspect ratio is kept and the image fits the sheet in
either orientation. :func:`schedule` then derives the stages: it doubles
from ``start`` px up to the final long side, with fewer steps at each finer
stage (the coarse stages settle the composition; fine ones add detail).

The 16-bit PNG/TIFF writers are in :mod:`nst_jax.image_io`.
"""

from __future__ import annotations

import re

import numpy as np

from nst_jax.errors import NSTError

MM_PER_INCH = 25.4
# (short, long) side in millimetres.
PAPER_MM = {
    'A0': (841, 1189), 'A1': (594, 841), 'A2': (420, 594), 'A3': (297, 420),
    'A4': (210, 297), 'A5': (148, 210), 'A6': (105, 148),
    'B1': (707, 1000), 'B2': (500, 707), 'B3': (353, 500), 'B4': (250, 353),
    'LETTER': (215.9, 279.4), 'LEGAL': (215.9, 355.6), 'TABLOID': (279.4, 431.8),
}
MAX_SIDE = 65535
# The top stage's share of its halving schedule's steps (not below min_steps):
# it costs the most per step, and starts from the stage below's result.
# Measured (tools/poster_benchmark.py steps, the cat x Starry Night on A4 at
# 150 dpi, judged content / Gram / W2 at the stage's size): 1753 px top, 50
# of 75 steps: +3.0 / +3.2 / -0.2 %; 1024 px top, 100 of 150: +1.8 / +4.0 /
# +1.1 %; ⅓ fewer steps there cost the last 25 (50) steps' few percent (25
# of 75 at 1753 px: +8 / +20 %, too much).
TOP_STAGE_SHARE = 2 / 3


def sheet_inches(poster: str = '', print_size: str = '') -> tuple[float, float]:
  """(short, long) sheet size in inches from a paper name or 'WxHcm|in|mm'."""
  if poster:
    try:
      short, long = PAPER_MM[poster.strip().upper()]
    except KeyError:
      raise NSTError(f'unknown poster size {poster!r}; use one of '
                     f'{", ".join(sorted(PAPER_MM))} or print_size') from None
    return short / MM_PER_INCH, long / MM_PER_INCH
  m = re.fullmatch(r'\s*([\d.]+)\s*[x×]\s*([\d.]+)\s*(cm|mm|in)\s*', print_size or '')
  if not m:
    raise NSTError(f"print_size {print_size!r} must look like '60x40cm', '24x18in' "
                   "or '600x400mm'")
  a, b = float(m.group(1)), float(m.group(2))
  if a <= 0 or b <= 0:
    raise NSTError(f'print_size {print_size!r} must be positive')
  per_inch = {'cm': 2.54, 'mm': MM_PER_INCH, 'in': 1.0}[m.group(3)]
  return min(a, b) / per_inch, max(a, b) / per_inch


def poster_pixels(content_hw, dpi: float, poster: str = '', print_size: str = '',
                  ) -> tuple[int, int]:
  """Final (h, w) in pixels: content aspect, as large as fits the sheet at ``dpi``."""
  if not dpi or dpi <= 0 or not np.isfinite(dpi):
    raise NSTError(f'dpi must be positive, got {dpi!r}')
  short_in, long_in = sheet_inches(poster, print_size)
  h, w = content_hw
  long_px, short_px = long_in * dpi, short_in * dpi
  scale = min(long_px / max(h, w), short_px / min(h, w))
  out = max(1, int(h * scale)), max(1, int(w * scale))
  if max(out) > MAX_SIDE:
    raise NSTError(f'{out[1]}x{out[0]} px exceeds the {MAX_SIDE}-px limit of the '
                   'output formats; lower dpi')
  return out


def schedule(final_long: int, start: int = 512, first_steps: int = 300,
             min_steps: int = 50) -> list[tuple[int, int]]:
  """Coarse-to-fine stages (long side, steps) doubling from ``start`` to the end.

  Steps halve at each doubling (a finer stage starts close to its optimum
  and costs 4x per step), never below ``min_steps``; the top stage (of
  several) gets ``TOP_STAGE_SHARE`` of that (measured above).

  Example:
    >>> schedule(4961)
    [(512, 300), (1024, 150), (2048, 75), (4096, 50), (4961, 50)]
    >>> schedule(1753)                          # A4 at 150 dpi
    [(512, 300), (1024, 150), (1753, 50)]
  """
  sizes = []
  s = start
  while s < final_long:
    sizes.append(s)
    s *= 2
  if sizes and final_long < sizes[-1] * 1.15:   # no tiny last step up
    sizes.pop()
  sizes.append(final_long)
  steps = [max(min_steps, first_steps >> i) for i in range(len(sizes))]
  if len(steps) > 1:
    steps[-1] = max(min_steps, round(steps[-1] * TOP_STAGE_SHARE))
  return list(zip(sizes, steps))
