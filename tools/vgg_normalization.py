r"""Gatys et al.'s normalised VGG19: the per-filter mean activations, from photos.

Computes μ_l,i, the mean ReLU output of every conv filter of the original
VGG19 over a set of public-domain photos (each resized to --side px on its
long side, every image weighted equally), writes them where
``nst_jax.networks`` reads them, and reports how stable they are: the
largest relative change of any filter's factor when one photo is left out,
and between two disjoint halves of the set.

The shipped factors (nst_jax/assets/vgg19_normalization.npz) come from

  python tools/vgg_normalization.py --skimage-wheel /tmp/skw/scikit_image-*.whl \
      --out nst_jax/assets/vgg19_normalization.npz

with the photos scikit-image ships in its wheel that it marks as CC0 or public
domain (see PHOTOS; the wheel comes from `pip download --no-deps scikit-image`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# scikit-image's sample photos whose docstrings say CC0 or public domain
# (skimage/data/_fetchers.py, 0.26.0); greyscale ones are used as grey RGB.
PHOTOS = ('astronaut.png', 'camera.png', 'chelsea.png', 'coffee.png', 'rocket.jpg',
          'hubble_deep_field.jpg', 'coins.png', 'clock_motion.png', 'brick.png',
          'grass.png', 'gravel.png')


def _photos_from_wheel(wheel: str) -> dict[str, np.ndarray]:
  out = {}
  with zipfile.ZipFile(wheel) as z:
    for name in PHOTOS:
      with z.open(f'skimage/data/{name}') as f:
        out[name] = np.asarray(Image.open(io.BytesIO(f.read())).convert('RGB'),
                               np.float32) / 255.0
  return out


def _relative_change(a: dict, b: dict) -> dict:
  """Quantiles over every filter of |f_a − f_b| / f_b, f the factors used."""
  from nst_jax import networks
  fa, fb = networks.factors(a), networks.factors(b)
  r = np.concatenate([np.abs(fa[c] - fb[c]) / fb[c] for c in fb])
  return {q: round(float(np.quantile(r, p)), 4)
          for q, p in (('median', 0.5), ('p95', 0.95), ('max', 1.0))}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--skimage-wheel', required=True)
  p.add_argument('--side', type=int, default=512, help='long side the photos are resized to')
  p.add_argument('--out', default=None, help='write the means here (.npz)')
  args = p.parse_args(argv)
  import nst_jax
  from nst_jax import image_io, networks
  params = nst_jax.load_vgg19()
  photos = _photos_from_wheel(args.skimage_wheel)
  images = {n: np.asarray(image_io.resize(x, image_io.fit_long_side(x.shape[:2], args.side)))
            for n, x in photos.items()}
  per = {n: networks.channel_means(params, [x]) for n, x in images.items()}
  mean = lambda names: {c: np.mean([per[n][c] for n in names], axis=0).astype(np.float32)
                        for c in networks.conv_names()}
  names = list(images)
  full = mean(names)
  loo = {n: _relative_change(mean([m for m in names if m != n]), full) for n in names}
  halves = _relative_change(mean(names[0::2]), mean(names[1::2]))
  floored = {c: int(np.sum(v < networks.MEAN_FLOOR * np.median(v))) for c, v in full.items()}
  report = dict(photos=names, side=args.side,
                leave_one_out_relative_change=loo,
                halves_relative_change=halves,
                floored_filters={c: n for c, n in floored.items() if n},
                mean_range={c: [float(v.min()), float(np.median(v)), float(v.max())]
                            for c, v in full.items()})
  print(json.dumps(report, indent=1))
  if args.out:
    from nst_jax.files import atomic_write
    atomic_write(args.out, lambda f: np.savez(f, **full))
  return 0


if __name__ == '__main__':
  sys.exit(main())
