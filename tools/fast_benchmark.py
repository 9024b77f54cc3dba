r"""Fast networks: stylisation time per image size, training step time and memory.

  python tools/fast_benchmark.py [--sizes 512 1024] [--widths 16 32] [--runs 5]
      [--train 128:4:16 256:4:32] [--steps 4] [--json out.json]

Stylisation: ``nst_jax.fast.stylize`` end to end (array in, float32 array
out: host->device copy, the network, device->host copy) on an S x S image,
after one compiling call; median of ``--runs`` calls. The parameters are a
fresh initialisation (the time does not depend on their values).

Training (``SIZE:BATCH:WIDTH``, each in a fresh subprocess): the compiled
chunk of ``--steps`` Adam steps on real crops of the shared images with the
real loss (Starry Night, the paper's layers), timed after compilation over
two chunks; peak RSS above the process's RSS before the run (the peak is
reset after VGG19 is loaded, Linux ``/proc/self/clear_refs``), and XLA's
temporary buffers of the compiled chunk (``memory_analysis``).

Prints the machine's 1-minute load average before each measurement: on a
shared machine, compare only numbers taken at a low load. On a GPU the same
commands measure the GPU (device peak memory instead of RSS).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import _common
from _common import SHARED_IMAGES as SHARED, load1


def stylize_times(sizes, widths, runs):
  import jax
  import numpy as np
  from nst_jax.fast import apply as apply_lib
  from nst_jax.fast import network
  out = []
  rng = np.random.default_rng(0)
  for width in widths:
    graphdef, params = network.create(3, 0, width, 5, seed=0)
    model = apply_lib.FastModel(dict(channels=3, guidance_channels=0, width=width,
                                     res_blocks=5), graphdef, params)
    for size in sizes:
      image = rng.random((size, size, 3), dtype=np.float32)
      load = load1()
      t = time.perf_counter()
      apply_lib.stylize(model, image)
      first = time.perf_counter() - t
      times = []
      for _ in range(runs):
        t = time.perf_counter()
        apply_lib.stylize(model, image)
        times.append(time.perf_counter() - t)
      out.append(dict(kind='stylize', width=width, size=size, first_call_s=first,
                      median_s=float(np.median(times)), min_s=float(np.min(times)),
                      params=network.num_params(params), load1=load,
                      device=jax.devices()[0].platform))
      print(json.dumps(out[-1]), flush=True)
  return out


def train_worker(size, batch, width, steps):
  """One training configuration; prints a JSON line."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import nst_jax
  from nst_jax import config as config_lib
  from nst_jax import objective
  from nst_jax.fast import network, train
  vgg = nst_jax.load_vgg19()
  jax.block_until_ready(vgg)
  base = _common.reset_peak_rss()     # loading VGG19 does not hide the training's peak
  config = nst_jax.make_config(job='fast_train', train_images=SHARED, train_size=size,
                               batch_size=batch, net_width=width, style_scale=2.0)
  spec = config_lib.validate(config)
  crops = train.Crops(nst_jax.image_io.list_images(SHARED), size)
  targets, guidance = train.training_targets(spec, train.prepare_styles(spec, crops), vgg)
  graphdef, params = network.create(3, 0, width, 5, seed=0)
  optimizer = optax.adam(1e-3)
  state = train._fresh(train.TrainState(params, optimizer.init(params),
                                        jnp.zeros((), jnp.int32)))
  weights = objective.LossWeights(1.0, 100.0, 0.0)
  consts = (guidance, (vgg, targets, weights))
  run = train.make_chunk_fn(train.make_loss_fn(graphdef, spec.loss), optimizer)
  data = [np.stack([crops.batch(k * steps + s, batch) for s in range(steps)])
          for k in range(3)]
  total = jnp.int32(10**6)
  t = time.perf_counter()
  compiled = run.lower(state, data[0], consts, total).compile()
  compile_s = time.perf_counter() - t
  analysis = compiled.memory_analysis()
  temp = getattr(analysis, 'temp_size_in_bytes', 0) if analysis is not None else 0
  state, _ = compiled(state, data[0], consts, total)          # warm-up
  jax.block_until_ready(state)
  load = load1()
  t = time.perf_counter()
  for d in data[1:]:
    state, (terms, _) = compiled(state, d, consts, total)
  jax.block_until_ready(state)
  per_step = (time.perf_counter() - t) / (2 * steps)
  dev = jax.devices()[0]
  if dev.platform == 'cpu':
    peak = _common.peak_rss_mb() - base
  else:
    peak = dev.memory_stats().get('peak_bytes_in_use', 0) / 2**20
  print(json.dumps(dict(kind='train', size=size, batch=batch, width=width,
                        step_s=per_step, compile_s=compile_s, peak_mb=peak,
                        xla_temp_mb=temp / 2**20, load1=load, device=dev.platform,
                        last_loss=float(np.asarray(terms['total'])[-1]))), flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--sizes', type=int, nargs='*', default=[512, 1024])
  p.add_argument('--widths', type=int, nargs='*', default=[16, 32])
  p.add_argument('--runs', type=int, default=5)
  p.add_argument('--train', nargs='*', default=['128:4:16', '256:4:32'],
                 help='SIZE:BATCH:WIDTH training configurations')
  p.add_argument('--steps', type=int, default=4, help='training steps per compiled call')
  p.add_argument('--json', default='', help='also write the results here')
  p.add_argument('--worker', default='', help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.worker:
    train_worker(*map(int, a.worker.split(':')), a.steps)
    return
  results = stylize_times(a.sizes, a.widths, a.runs) if a.sizes else []
  for entry in a.train:
    r = subprocess.run([sys.executable, __file__, '--worker', entry, '--steps', str(a.steps)],
                       capture_output=True, text=True, check=False)
    lines = [l for l in r.stdout.splitlines() if l.startswith('{')]
    if r.returncode or not lines:
      print(f'training {entry} failed: {r.stderr[-1500:]}', file=sys.stderr)
      continue
    results.append(json.loads(lines[-1]))
    print(lines[-1], flush=True)
  if a.json:
    with open(a.json, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
