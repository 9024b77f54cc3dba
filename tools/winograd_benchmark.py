r"""Winograd vs XLA's convolution per VGG19 layer shape, and per evaluation.

  python tools/winograd_benchmark.py layers [--sizes 256 512 1024] [--json out.json]
  python tools/winograd_benchmark.py eval [--sizes 256 512 1024] [--json out.json]
  python tools/winograd_benchmark.py run [--json out.json]

``layers``: for each distinct conv shape of VGG19 up to conv5_1 at an image
of side S (the layer's grid S/stride, C in, K out), the seconds of one
forward convolution plus its input gradient (what the optimisation runs per
layer: :func:`nst_jax.vgg.conv3x3`'s custom VJP) for ``xla``, ``winograd2``
(F(2x2, 3x3), kernels transformed in every call) and ``winograd4`` (F(4x4,
3x3), kernels prepared once as the engine does), median of 5 after a
warm-up, and the direct convolution's FLOPs per second (2·9·H·W·C·K per
conv, twice) so the three compare on one scale; also the maximum error
relative to the output's largest value against ``lax.conv`` at HIGHEST.

``eval``: one loss + gradient evaluation of the default objective
(content relu4_2, style relu1_1 ... relu5_1, Gram) at S x S with XLA's
convs and with ``conv=auto`` on the engine's prepared params
(:func:`nst_jax.vgg.winograd_kernels`) in the same process, alternating,
median of 5, and the loss of each (relative difference).

``run``: the default config (``configs/default.py``: the cat, Starry Night,
256 then 512 px) end to end through the API twice in one process, with XLA's
convs (the Winograd layers switched off) and with the default ``auto``:
wall time, the final loss terms (the same XLA objective evaluated on both
results) and the judged distances (tools/judge.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time

import numpy as np

import _common  # noqa: F401  (puts the repo on sys.path)


def _time(fn, *args, n=5):
  import jax
  jax.block_until_ready(fn(*args))
  out = []
  for _ in range(n):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    out.append(time.perf_counter() - t)
  return statistics.median(out)


def layers(sizes) -> list[dict]:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax import lax
  from nst_jax import vgg
  rng = np.random.default_rng(0)
  shapes = []
  for name, (_, _, c, k) in vgg.conv_shapes().items():
    if vgg.LAYER_INDEX[name] > vgg.LAYER_INDEX['conv5_1']:
      break
    if (c, k, vgg.layer_stride(name)) not in shapes:
      shapes.append((c, k, vgg.layer_stride(name)))
  rows = []
  for size in sizes:
    for c, k, stride in shapes:
      h = size // stride
      x = jnp.asarray(rng.standard_normal((1, h, h, c)), jnp.float32)
      w = jnp.asarray(rng.standard_normal((3, 3, c, k)) / (3 * c ** 0.5), jnp.float32)
      ref = lax.conv_general_dilated(x, w, (1, 1), 'SAME', precision=lax.Precision.HIGHEST,
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      row = dict(size=size, grid=h, cin=c, cout=k)
      flops = 2 * 2 * 9 * h * h * c * k
      for algo in ('xla', 'winograd2', 'winograd4'):
        p = {'w': w, 'b': jnp.zeros(k)}
        if algo == 'winograd4':                  # prepared, as the engine does
          p = vgg.winograd_kernels({'c': p}, ['c'])['c']
        conv = lambda x, p, a=algo: vgg.conv3x3(x, p['w'], p['b'], None, a, p.get('u'),
                                                p.get('u_t'))
        both = jax.jit(lambda x, p, conv=conv: jax.vjp(lambda x: conv(x, p), x)[1](
            jnp.ones((1, h, h, k), jnp.float32))[0] + conv(x, p)[..., :1])
        s = _time(both, x, p)
        err = float(jnp.abs(jax.jit(conv)(x, p) - ref).max() / jnp.abs(ref).max())
        row[algo] = dict(s=s, gflops=flops / s / 1e9, max_rel_error=err)
      print(json.dumps(row), flush=True)
      rows.append(row)
  return rows


def evals(sizes) -> list[dict]:
  import jax
  import nst_jax
  from nst_jax import objective, vgg
  from benchmark import _images
  params = nst_jax.load_vgg19()
  rows = []
  for size in sizes:
    content, style = _images(size)
    targets = objective.make_targets(params, content, [style])
    weights = objective.LossWeights(1.0, 100.0, 0.0)
    fast = vgg.winograd_kernels(params, vgg.winograd_layers(targets.layers))
    loss = lambda x, p, a: objective.total_loss(x, p, targets, weights, conv=a)
    fns = {a: jax.jit(jax.value_and_grad(functools.partial(loss, a=a)))
           for a in ('xla', 'auto')}
    args = {'xla': params, 'auto': fast}
    x = jax.numpy.asarray(content)
    times = {a: [] for a in fns}
    values = {a: float(fns[a](x, args[a])[0]) for a in fns}
    for _ in range(5):
      for a, f in fns.items():
        t = time.perf_counter()
        jax.block_until_ready(f(x, args[a]))
        times[a].append(time.perf_counter() - t)
    row = dict(size=size, **{f'{a}_s': statistics.median(t) for a, t in times.items()},
               loss_rel_diff=abs(values['auto'] - values['xla']) / abs(values['xla']))
    row['speedup'] = row['xla_s'] / row['auto_s']
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def run() -> dict:
  import os
  import jax
  import jax.numpy as jnp
  import nst_jax
  from nst_jax import config as config_lib, image_io, objective, vgg
  import judge as judge_lib
  sys.path.insert(0, os.path.join(_common.ROOT, 'configs'))
  import default as default_config  # configs/default.py
  params = nst_jax.load_vgg19()
  c = default_config.get_config()
  c.compilation_cache, c.tensorboard = False, False
  out, keep = {}, vgg.WINOGRAD_MIN_CHANNELS
  for name, threshold in (('xla', 10 ** 9), ('auto', keep)):
    vgg.WINOGRAD_MIN_CHANNELS = threshold
    try:
      t = time.perf_counter()
      image = nst_jax.stylize(c.content, c.styles, params=params, quiet=True,
                              **{k: v for k, v in c.items() if k not in ('content', 'styles')})
      out[name] = dict(image=np.asarray(image), s=time.perf_counter() - t)
    finally:
      vgg.WINOGRAD_MIN_CHANNELS = keep
  content = image_io.load_image(c.content)
  style = image_io.load_image(c.styles[0])
  hw = out['xla']['image'].shape[:2]
  targets = objective.make_targets(params, image_io.resize(content, hw),
                                   [image_io.resize(style, image_io.fit_long_side(
                                       style.shape[:2], max(hw)))])
  weights = objective.LossWeights(c.content_weight, c.style_weight, c.tv_weight)
  rows = {}
  for name, r in out.items():
    terms = objective.loss_terms(params, jnp.asarray(r['image']), targets, weights, conv='xla')
    rows[name] = dict(wall_s=r['s'], **{f'loss_{k}': float(v) for k, v in terms.items()},
                      **judge_lib.judge(params, r['image'], content, style))
  rows['total_rel_diff'] = (abs(rows['auto']['loss_total'] - rows['xla']['loss_total'])
                            / rows['xla']['loss_total'])
  rows['max_pixel_diff'] = float(np.abs(out['auto']['image'] - out['xla']['image']).max())
  print(json.dumps(rows), flush=True)
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('what', choices=('layers', 'eval', 'run'))
  p.add_argument('--sizes', type=int, nargs='+', default=[256, 512, 1024])
  p.add_argument('--json')
  a = p.parse_args(argv)
  out = {'layers': lambda: layers(a.sizes), 'eval': lambda: evals(a.sizes), 'run': run}[a.what]()
  _common.emit({'what': a.what, 'load1_start': _common.load1(), 'rows': out}, a.json)
  return 0


if __name__ == '__main__':
  sys.exit(main())
