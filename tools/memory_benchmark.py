r"""Peak memory per pixel, and the final loss, for each memory option.

  python tools/memory_benchmark.py [--size 384] [--steps 20]

Combinations: remat none|block x activations float32|bfloat16 x L-BFGS
history 10|3. Each runs in a fresh subprocess: peak RSS on CPU (device peak
on GPU) above the RSS before the run, divided by the image's pixel count;
time per iteration; and the loss reached after ``--steps`` L-BFGS steps,
re-evaluated with the default float32 objective so the numbers compare.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

import _common


def worker(size, steps, remat, dtype, memory):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import nst_jax
  from nst_jax import config as cl, image_io, objective
  params = nst_jax.load_vgg19()
  content = image_io.resize(image_io.load_image(cl.asset('chelsea.png')), (size, size))
  jax.block_until_ready(params)
  base = _common.peak_rss_mb()
  t = time.perf_counter()
  out = nst_jax.stylize(np.asarray(content), cl.asset('starry_night.jpg'), params=params,
                        sizes=(size,), steps=(steps,), remat=remat, activation_dtype=dtype,
                        lbfgs_memory=memory, log_every=steps)
  wall = time.perf_counter() - t
  dev = jax.devices()[0]
  if dev.platform != 'cpu':
    peak_mb = dev.memory_stats().get('peak_bytes_in_use', 0) / 2**20
    base = 0.0
  else:
    peak_mb = _common.peak_rss_mb()
  style = image_io.load_image(cl.asset('starry_night.jpg'))
  style = image_io.resize(style, image_io.fit_long_side(style.shape[:2], size))
  t2 = objective.make_targets(params, content, [style])
  w = objective.LossWeights(1.0, float(cl.get_default_config().style_weight), 0.0)
  loss = float(objective.loss_terms(params, jnp.asarray(out), t2, w)['total'])
  # The loss+gradient executable's own buffers (activations kept for the
  # backward pass, temporaries), from XLA's memory analysis: exact, unlike RSS.
  vg = jax.jit(jax.value_and_grad(lambda x, c: objective.total_loss(
      x, *c, remat=remat, activation_dtype=dtype)))
  analysis = vg.lower(jnp.asarray(content), (params, t2, w)).compile().memory_analysis()
  temp = getattr(analysis, 'temp_size_in_bytes', 0) if analysis is not None else 0
  return dict(xla_temp_mb=temp / 2**20, xla_temp_bytes_per_pixel=temp / size ** 2,size=size, remat=remat, dtype=dtype, lbfgs_memory=memory, steps=steps,
              peak_mb=peak_mb, above_start_mb=peak_mb - base,
              bytes_per_pixel=(peak_mb - base) * 2**20 / size ** 2,
              wall_s=wall, final_loss=loss, device=dev.platform)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--size', type=int, default=384)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--worker', nargs=3, help=argparse.SUPPRESS)
  p.add_argument('--out')
  args = p.parse_args()
  if args.worker:
    remat, dtype, memory = args.worker
    print(json.dumps(worker(args.size, args.steps, remat, dtype, int(memory))))
    return
  rows = []
  for remat, dtype, memory in itertools.product(('none', 'block'), ('float32', 'bfloat16'),
                                                (10, 3)):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), '--size', str(args.size),
                        '--steps', str(args.steps), '--worker', remat, dtype, str(memory)],
                       capture_output=True, text=True)
    if r.returncode != 0:
      raise SystemExit(r.stderr[-3000:])
    rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  print(f'\n| remat | activations | L-BFGS m | peak RSS above start (MB) | RSS bytes/pixel | '
        f'XLA loss+grad temp (MB) | temp bytes/pixel | wall (s, {args.steps} steps incl. '
        f'compile) | final loss |  ({rows[0]["device"]}, {args.size}²)')
  print('|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["remat"]} | {r["dtype"]} | {r["lbfgs_memory"]} | {r["above_start_mb"]:.0f} | '
          f'{r["bytes_per_pixel"]:.0f} | {r["xla_temp_mb"]:.0f} | '
          f'{r["xla_temp_bytes_per_pixel"]:.0f} | {r["wall_s"]:.1f} | {r["final_loss"]:.4g} |')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  main()
