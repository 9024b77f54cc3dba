r"""Quality: 512 -> 1024 px, more L-BFGS steps; meant for a GPU or TPU.

Run:

  nst-jax --config=configs/quality.py --workdir=/tmp/nst_quality

Expect: stage 1, 512x341 px, 400 steps; stage 2, 1024x682 px, 200 steps.
On a 2-core CPU about 45 minutes (from the measured ~1.5 s and ~7 s per
iteration at these sizes); GPU time not measured yet (no GPU was available
when this was written; tools/benchmark.py measures it). A 1024-px-wide image
with finer, sharper brush strokes than the default config's.
"""

from nst_jax.config import get_default_config


def get_config():
  config = get_default_config()   # = configs/default.py
  config.sizes = (512, 1024)
  config.steps = (400, 200)
  config.log_every = 25
  return config
