r"""The fast-network demo: train it, bundle it, picture it, test the paper's claim.

  python tools/make_fast_demo.py --work /tmp/nst_fast_demo \
      [--held-out coffee.png rocket.jpg] [--steps 1500] [--guided-steps 800] \
      [--plain-model DIR] [--skip-train] [--skip-guided] [--skip-optimize]

1. Training images: ../shared/images minus the held-out photo (chelsea.png)
   and minus the style paintings (starry_night.jpg, the_scream.jpg), i.e.
   astronaut.png, shipwreck.jpg, woman-with-hat-matisse.jpg, linked into
   WORK/train_images. ``configs/fast_train.py`` trains on their crops
   (Starry Night) in a subprocess; wall time, the child's CPU time and the
   load average go to WORK/timing.json. Rerunning resumes (a finished model
   is only re-exported).
2. The model files go to nst_jax/assets/fast_demo/ (the bundled demo).
3. On photos the network never saw (chelsea.png and ``--held-out``), at 512 px
   long side: the network's result with its time (after compiling), and for
   the first photo the optimisation's (configs/default.py: 256 -> 512 px,
   150 + 50 L-BFGS steps) with its time -> docs/images/fast_demo.jpg.
4. Spatial control: a second network trained on the fixed mask ``halves_x``
   (left Starry Night, right The Scream) is applied with ``disc:0.3`` and
   ``horizon:0.5`` (and ``halves_x``), each also with its two channels
   swapped; for each region the masked (guided) Gram distance of the output
   to each style is printed and saved (WORK/generalisation.json), and the
   pictures go to docs/images/fast_guided.jpg.

The masked Gram distance of region r to style s: over the paper's style
layers (equal weights), ‖G_r,l − A_s,l‖² / ‖A_s,l‖², G_r,l the guided Gram of
the output's features with region r's channel (``simple`` propagation,
mean T² = 1) and A_s,l the Gram of style s at the training scale
(``train_size * style_scale`` px long side).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from _common import ROOT, SHARED_IMAGES as SHARED, load1
from contact_sheet import contact_sheet, mask_picture

HELD_OUT = 'chelsea.png'
STYLES = ('starry_night.jpg', 'the_scream.jpg')


def train_images(work: str) -> str:
  folder = os.path.join(work, 'train_images')
  os.makedirs(folder, exist_ok=True)
  for name in sorted(os.listdir(SHARED)):
    if name.lower().endswith(('.png', '.jpg')) and name != HELD_OUT and name not in STYLES:
      link = os.path.join(folder, name)
      if not os.path.exists(link):
        os.symlink(os.path.join(SHARED, name), link)
  return folder


def train(work: str, name: str, images: str, extra: list[str]) -> dict:
  """Runs (or resumes) configs/fast_train.py into WORK/name; returns its timing."""
  model = os.path.join(work, name)
  timing_path = os.path.join(work, f'{name}_timing.json')
  cmd = [sys.executable, '-m', 'nst_jax', '--config=configs/fast_train.py',
         f'--workdir={model}', f'--config.train_images={images}', *extra]
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  load_start, t = load1(), time.perf_counter()
  r = subprocess.run(cmd, cwd=ROOT, check=False)
  wall = time.perf_counter() - t
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if r.returncode:
    sys.exit(f'training {name} failed ({r.returncode})')
  timing = dict(command=' '.join(cmd[1:]), wall_s=wall,
                cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                load1_start=load_start, load1_end=load1())
  if os.path.exists(timing_path) and wall < 120:       # only re-exported a finished model
    with open(timing_path, encoding='utf-8') as f:
      return json.load(f)
  with open(timing_path, 'w', encoding='utf-8') as f:
    json.dump(timing, f, indent=1)
  return timing


def fit(image, side):
  from nst_jax import image_io
  return np.asarray(image_io.resize(image, image_io.fit_long_side(image.shape[:2], side)))


def timed_stylize(model, image, guidance=None):
  import nst_jax
  nst_jax.fast.stylize(model, image, guidance)                  # compile for this shape
  t = time.perf_counter()
  out = nst_jax.fast.stylize(model, image, guidance)
  return out, time.perf_counter() - t


def demo_pictures(model_dir, photos, params, optimize: bool, out_path: str) -> list:
  import nst_jax
  model = nst_jax.fast.load(model_dir)
  style = os.path.join(SHARED, STYLES[0])
  items, rows = [], []
  for path in photos:
    photo = fit(nst_jax.load_image(path), 512)
    fast, fast_s = timed_stylize(model, photo)
    row = dict(photo=os.path.basename(path), size=list(photo.shape[:2]), fast_s=fast_s,
               load1=load1())
    items += [(f'{row["photo"]} (never seen)', photo), (f'network: {fast_s:.2f} s', fast)]
    if optimize and not rows:                # the optimisation on the first photo only
      t = time.perf_counter()
      opt = nst_jax.stylize(photo, style, params=params)   # configs/default.py
      row['optimize_s'] = time.perf_counter() - t
      items.append((f'optimisation: {row["optimize_s"]:.0f} s', opt))
    elif optimize:
      items.append(('', np.ones_like(photo)))
    rows.append(row)
    print(json.dumps(row), flush=True)
  sheet = contact_sheet(items, cols=3 if optimize else 2, height=240)
  sheet.save(out_path, quality=90)
  return rows


def region_distances(params, image, mask, style_grams, layers) -> np.ndarray:
  """``[R, S]``: masked Gram distance of output region r to style s (see module doc)."""
  from nst_jax import layer_masks, losses, objective
  feats = objective.features(params, image, layers)
  t = layer_masks.layer_guidance(mask, layers, 'simple')
  d = np.zeros((mask.shape[-1], len(style_grams)))
  for r in range(mask.shape[-1]):
    for s, grams in enumerate(style_grams):
      for l in layers:
        g = np.asarray(losses.guided_gram(feats[l], t[l][..., r:r + 1])[0])
        a = np.asarray(grams[l])
        d[r, s] += np.sum((g - a) ** 2) / np.sum(a * a) / len(layers)
  return d


def generalisation(model_dir, photos, params, out_path, json_path) -> list:
  import nst_jax
  from nst_jax import objective
  model = nst_jax.fast.load(model_dir)
  side = round(model.meta['train_size'] * model.meta['style_scale'])
  layers = objective.PAPER_STYLE_LAYERS
  grams = [objective.style_grams(params, fit(nst_jax.load_image(os.path.join(SHARED, s)),
                                             side), layers) for s in STYLES]
  items, rows = [], []
  for path in photos:
    photo = fit(nst_jax.load_image(path), 512)
    items.append((os.path.basename(path), photo))
    for form in ('halves_x', 'disc:0.3', 'horizon:0.5'):
      base = nst_jax.mask_io.load_guidance(form, photo.shape[:2])
      # Swapped: the same areas with the region channels exchanged; the
      # styles must follow the channels (not the positions) to stay "own".
      for swapped, mask in ((False, base), (True, base[..., ::-1].copy())):
        out, secs = timed_stylize(model, photo, mask)
        d = region_distances(params, out, mask, grams, layers)
        own = [float(d[r, model.meta['region_styles'][r]]) for r in range(2)]
        other = [float(d[r, 1 - model.meta['region_styles'][r]]) for r in range(2)]
        rows.append(dict(photo=os.path.basename(path), mask=form, swapped=swapped,
                         distances=d.round(4).tolist(), own=own, other=other,
                         closer_to_own=[bool(o < x) for o, x in zip(own, other)],
                         stylize_s=secs))
        print(json.dumps(rows[-1]), flush=True)
        if form == 'disc:0.3':
          if not swapped:
            items.append((f'mask {form}', mask_picture(mask)))
          items.append((f'network, {form}' + (' swapped' if swapped else ''), out))
        elif form != 'halves_x' and not swapped:
          items += [(f'mask {form}', mask_picture(mask)), (f'network, {form}', out)]
  sheet = contact_sheet(items, cols=6, height=200)       # 0.8x, q85: < 200 KB
  sheet.resize((round(sheet.width * 0.8), round(sheet.height * 0.8)),
               Image.LANCZOS).save(out_path, quality=85)
  with open(json_path, 'w', encoding='utf-8') as f:
    json.dump(rows, f, indent=1)
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--work', default='/tmp/nst_fast_demo')
  p.add_argument('--held-out', nargs='*', default=[],
                 help='more photos the networks never saw (e.g. scikit-image coffee.png)')
  p.add_argument('--steps', type=int, default=0, help='override train_steps (0: the config)')
  p.add_argument('--guided-steps', type=int, default=800)
  p.add_argument('--plain-model', default='',
                 help='an already trained Starry Night model dir instead of training one')
  p.add_argument('--skip-train', action='store_true')
  p.add_argument('--skip-guided', action='store_true')
  p.add_argument('--skip-optimize', action='store_true')
  p.add_argument('--skip-demo', action='store_true',
                 help='keep the bundled model and docs/images/fast_demo.jpg as they are')
  a = p.parse_args()
  import nst_jax
  os.makedirs(a.work, exist_ok=True)
  images = train_images(a.work)
  steps = [f'--config.train_steps={a.steps}'] if a.steps else []
  plain = a.plain_model or os.path.join(a.work, 'starry')
  if not a.skip_train and not a.plain_model:
    print('plain model:', train(a.work, 'starry', images,
                                [f'--config.styles={os.path.join(SHARED, STYLES[0])}', *steps]))
  params = nst_jax.load_vgg19()
  photos = [os.path.join(SHARED, HELD_OUT), *a.held_out]
  docs = os.path.join(ROOT, 'docs', 'images')
  if not a.skip_demo:
    bundled = nst_jax.config.asset(nst_jax.config.DEMO_MODEL)
    os.makedirs(bundled, exist_ok=True)
    for name in ('model.json', 'model.npz'):
      shutil.copyfile(os.path.join(plain, name), os.path.join(bundled, name))
    demo_pictures(plain, photos, params, not a.skip_optimize,
                  os.path.join(docs, 'fast_demo.jpg'))
  if not a.skip_guided:
    guided = os.path.join(a.work, 'halves')
    styles = ','.join(os.path.join(SHARED, s) for s in STYLES)
    if not a.skip_train:
      print('guided model:', train(a.work, 'halves', images, [
          f'--config.styles={styles}', '--config.content_guidance=halves_x',
          f'--config.train_steps={a.guided_steps}']))
    generalisation(guided, photos, params, os.path.join(docs, 'fast_guided.jpg'),
                   os.path.join(a.work, 'generalisation.json'))


if __name__ == '__main__':
  main()
