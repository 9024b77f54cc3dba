r"""Several styles on several regions: left half van Gogh, right half Munch.

Region 1 of the content (left half) takes The Starry Night, region 2 (right
half) The Scream; each style image serves its region whole.

Run:

  nst-jax --config=configs/two_style_regions.py --workdir=/tmp/nst_two

Expect: ~3 minutes on a 2-core CPU. The left half of the cat is blue with
yellow swirls, the right half orange-red with Munch's long wavy strokes; the
seam follows the mask (``--config.content_guidance=disc:0.3`` puts one style
on a central disc instead).
"""

from nst_jax.config import get_default_config
from nst_jax.config import asset


def get_config():
  config = get_default_config()   # = configs/default.py
  config.styles = (asset('starry_night.jpg'), asset('the_scream.jpg'))
  config.content_guidance = 'halves_x'
  config.style_guidance = ('whole', 'whole')
  config.region_styles = (0, 1)
  config.style_weight = 300.0
  return config
