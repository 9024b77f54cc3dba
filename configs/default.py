r"""Default: the bundled cat photo in the style of The Starry Night, 256 -> 512 px.

Run (from the repository root):

  nst-jax --config=configs/default.py --workdir=/tmp/nst_default

Expect: about 3 minutes on a 2-core CPU (stage 1, 256x170, 150 L-BFGS steps;
stage 2, 512x340, 50 steps), a few seconds on a GPU. ``final.png`` shows the
cat clearly, painted in van Gogh's blue-and-yellow swirling brush strokes; the
total loss falls by ~10x in stage 1 (see ``losses.png``).

Everything else is in nst_jax/config.py (``get_default_config``); override
any field, e.g. ``--config.styles=nst_jax/assets/the_scream.jpg``.
"""

from nst_jax.config import get_default_config


def get_config():
  return get_default_config()
