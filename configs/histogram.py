r"""Colour control: colour histogram matching of the style to the content.

The Scream's pixels are mapped with x' = A (x - mu_s) + mu_c so that their
mean and covariance become the cat photo's, then the transfer runs as usual.

Run:

  nst-jax --config=configs/histogram.py --workdir=/tmp/nst_histogram

Expect: ~3 minutes on a 2-core CPU. Munch's swirling strokes in the photo's
palette instead of orange and blue. ``--config.histogram_mode`` picks A:
``cholesky`` (default), ``eigen`` or ``ot`` (optimal transport).
"""

from nst_jax.config import get_default_config
from nst_jax.config import asset


def get_config():
  config = get_default_config()   # = configs/default.py
  config.styles = (asset('the_scream.jpg'),)
  config.color_control = 'histogram'
  config.histogram_mode = 'cholesky'
  config.style_weight = 300.0
  return config
