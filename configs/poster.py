r"""Poster: A3 at 150 dpi (2480 px long side), 16-bit PNG, preemption-safe.

The final size comes from the sheet and the DPI; the coarse-to-fine stages
(512, 1024, 2048, 2480 px) and their steps (300, 150, 75, 50: halving, the
top stage 2/3 of that, at least 50) are derived. Checkpoints every 50 steps:
if the VM is preempted, run the same command again and it resumes.

Run:

  nst-jax --config=configs/poster.py --workdir=/tmp/nst_poster
  nst-jax --config=configs/poster.py --config.poster=A4 --workdir=/tmp/a4
  # bigger: --config.poster=A2 --config.dpi=300   (7016 px; a GPU with >= 40 GB)

Expect: ``poster.png`` 2480x1649, 16 bits per channel, 150 dpi recorded in
the file. On a 2-core CPU ~1.5 h (estimate, README "Posters"); A4 at 150
dpi (1753x1166) took 24 min end to end, measured. GPU time not measured
yet (tools/benchmark.py --scaling measures it).
"""

from nst_jax.config import get_default_config


def get_config():
  config = get_default_config()   # = configs/default.py
  config.poster = 'A3'
  config.dpi = 150.0
  config.poster_start = 512
  config.steps = (300,)
  config.output = 'poster.png'
  config.output_bits = 16
  config.checkpoint_every = 50
  config.log_every = 25
  return config
