r"""Quality: 512 -> 1024 px, more L-BFGS steps; meant for a GPU or TPU.

Run:

  nst-jax --config=configs/quality.py --workdir=/tmp/nst_quality

Expect: on one modern GPU well under a minute (stage 1, 512 px, 400 steps;
stage 2, 1024 px, 200 steps); on a 2-core CPU about an hour. A 1024-px-wide
image with finer, sharper brush strokes than the default config's.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.sizes = (512, 1024)
  config.steps = (400, 200)
  config.log_every = 25
  return config
