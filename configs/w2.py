r"""W2 style statistic: the 2-Wasserstein distance between feature Gaussians.

Run:

  nst-jax --config=configs/w2.py --workdir=/tmp/nst_w2

Expect: stage 1, 256x170 px, 150 L-BFGS steps; stage 2, 512x341 px, 50
steps; about 2 min 10 s on the 2-core CPU (129 s measured for 144 + 48 steps
with tools/schedule_benchmark.py, warm compilation cache). A cat that stays
a cat, painted in the style's strokes and colours. Style β = 5: the judged
content distance of crowsonkb/style-transfer-pytorch's defaults (0.69 vs its
0.68 at 256 px, tools/compare_peers.py; README "Side by side with the
peers"), where at equal time (60 s) it beats that peer on content, Gram and
W2 style distance. β = 30 keeps only as much of the photo as the Gram
default (β = 100) does.

Why this schedule: at equal wall time (tools/schedule_benchmark.py, 120 s at
512 px, 45 s at 256 px, at β = 30) L-BFGS on the x2 schedule beat Adam with
or without iterate averaging and the sqrt(2) schedule (`sizes=auto`) on the
judged distances at 512 px; see README "Optimisers and schedules at equal
time".
"""

from nst_jax.config import get_default_config


def get_config():
  config = get_default_config()   # = configs/default.py
  config.style_statistic = 'w2'
  config.style_weight = 5.0
  config.sizes = (256, 512)
  config.steps = (150, 50)
  return config
