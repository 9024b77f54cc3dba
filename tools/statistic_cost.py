r"""What a style statistic and a network variant cost and change, side by side.

  python tools/statistic_cost.py --sizes 256 512 --repeats 5

For each square size (the bundled cat photo; The Starry Night at the same
pixel count as the style) it times one compiled loss+gradient evaluation
with ``style_statistic=gram`` and ``w2`` (the paper's layers, alternating
gram/w2 ``--repeats`` times, medians), and prints:

* seconds per evaluation and the W2 / Gram ratio (the Newton–Schulz
  products are per layer, N³ each, independent of the image size);
* the error of tr((Σ_s^½ Σ Σ_s^½)^½) per layer at the content image, by
  float32 ``eigh`` and by Newton–Schulz (shifted, and unshifted) at 15 to 60
  iterations, against float64 eigenvalues, relative to the term's scale
  ‖μ_s‖² + tr Σ_s (and W2²/scale itself);
* per style layer, the ``gatys``-normalised style term at the content image
  (the paper's equal layer weights) with the original and the normalised
  VGG19 — how evenly the layers weigh.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _common  # pylint: disable=unused-import  (first: the repository on sys.path)

LAYERS = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')


def _images(size):
  import numpy as np
  import nst_jax
  from nst_jax import image_io
  content = image_io.resize(nst_jax.load_image(nst_jax.config.asset('chelsea.png')),
                            (size, size))
  style = nst_jax.load_image(nst_jax.config.asset('starry_night.jpg'))
  h, w = style.shape[:2]
  k = (size * size / (h * w)) ** 0.5
  return np.asarray(content), np.asarray(image_io.resize(style, (round(h * k), round(w * k))))


def _timed_eval(params, content, style, statistic, repeats):
  import jax
  import jax.numpy as jnp
  from nst_jax import objective
  t = objective.make_targets(params, content, [style], style_statistic=statistic)
  w = objective.LossWeights(1.0, 100.0, 0.0)
  f = jax.jit(jax.value_and_grad(lambda x: objective.total_loss(x, params, t, w)))
  x = jnp.asarray(content)
  jax.block_until_ready(f(x))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(f(x))
    times.append(time.perf_counter() - start)
  return times


def _trace_sqrt_error(params, content, style):
  """Per layer and method: (tr(m^½) − exact) / scale, m = Σ_s^½ Σ Σ_s^½ at
  the content image, exact = float64 eigenvalues, scale = ‖μ_s‖² + tr Σ_s."""
  import numpy as np
  import jax.numpy as jnp
  from nst_jax import linalg, losses, objective
  out = {}
  mc, sc = objective.style_moments(params, content, LAYERS)
  ms, ss = objective.style_moments(params, style, LAYERS)
  for l in LAYERS:
    t = losses.w2_target(ms[l], ss[l])
    n = mc[l].shape[0]
    mu, second = np.asarray(mc[l], np.float64), np.asarray(sc[l], np.float64)
    cov = second - np.outer(mu, mu) + float(t.eps) * np.eye(n)
    r = np.asarray(t.cov_sqrt, np.float64)
    m = r @ cov @ r
    m = (m + m.T) / 2
    exact = np.sqrt(np.clip(np.linalg.eigvalsh(m), 0, None)).sum()
    scale = float(jnp.sum(t.mean ** 2) + t.cov_trace)
    w2 = float(np.sum((mu - np.asarray(t.mean)) ** 2) + np.trace(cov) + float(t.cov_trace)
               - 2 * exact)
    row = {'w2_over_scale': w2 / scale}
    m32 = jnp.asarray(m, jnp.float32)
    row['eigh'] = float((linalg.trace_sqrt(m32, 'eigh') - exact) / scale)
    for it in (15, 20, 30, 60):
      row[f'newton_schulz_{it}'] = float(
          (linalg.trace_sqrt(m32, 'newton_schulz', it) - exact) / scale)
      row[f'unshifted_{it}'] = float(
          (jnp.trace(linalg.sqrtm(m32, it, shift=0.0)) - exact) / scale)
    out[l] = row
  return out


def _layer_terms(params, content, style):
  from nst_jax import losses, objective
  t = objective.make_targets(params, content, [style], normalization='gatys',
                             content_layers=())
  feats = objective.features(params, content, LAYERS)
  return {l: float(losses.style_loss({l: feats[l]}, {l: t.style[l]})) for l in LAYERS}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sizes', type=int, nargs='+', default=[256, 512])
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--out', help='write the results as JSON here')
  args = p.parse_args(argv)
  import nst_jax
  params = nst_jax.load_vgg19()
  normalized = nst_jax.load_vgg19(network='normalized')
  result = {'load_before': _common.load1(), 'sizes': {}}
  for size in args.sizes:
    content, style = _images(size)
    runs = {'gram': [], 'w2': []}
    for _ in range(2):                    # alternate, so machine noise hits both
      for s in runs:
        runs[s] += _timed_eval(params, content, style, s, args.repeats)
    med = {s: statistics.median(v) for s, v in runs.items()}
    result['sizes'][size] = dict(seconds=med, ratio_w2_gram=med['w2'] / med['gram'])
    print(f'{size}²: gram {med["gram"]:.3f} s, w2 {med["w2"]:.3f} s per evaluation '
          f'(x{med["w2"] / med["gram"]:.2f})', flush=True)
  content, style = _images(args.sizes[0])
  result['trace_sqrt_error'] = _trace_sqrt_error(params, content, style)
  result['gatys_layer_terms'] = {'original': _layer_terms(params, content, style),
                                 'normalized': _layer_terms(normalized, content, style)}
  result['load_after'] = _common.load1()
  print(json.dumps(result, indent=1))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
