r"""Colour control: luminance-only transfer (the cat keeps its own colours).

Content and style go to YIQ; the style's luminance is matched to the
content's mean and spread; only a luminance image is optimised; the result
is recombined with the content's I and Q (Gatys et al. 2017, sec. 5).

Run:

  nst-jax --config=configs/luminance.py --workdir=/tmp/nst_luminance

Expect: ~3 minutes on a 2-core CPU. Munch's brush strokes in the cat's own
brown/grey colours; ``--config.color_control=luminance_swap`` is the
post-hoc variant (stylise in colour, then keep the content's chroma).
"""

from nst_jax.config import get_default_config
from nst_jax.config import asset


def get_config():
  config = get_default_config()   # = configs/default.py
  config.styles = (asset('the_scream.jpg'),)
  config.color_control = 'luminance'
  config.style_weight = 300.0
  return config
