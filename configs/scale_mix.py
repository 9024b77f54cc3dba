r"""Scale control: The Starry Night's fine brush work on The Scream's layout.

First a new style image is made: starting from The Scream (colour-matched to
The Starry Night) only the Gram loss of The Starry Night on relu1_1 and
relu2_1 (the fine scale) is optimised, which keeps The Scream's large-scale
structure. The cat is then stylised with that new style (Gatys et al. 2017,
sec. 6). ``mixed_style.png`` is written beside ``final.png``.

Run:

  nst-jax --config=configs/scale_mix.py --workdir=/tmp/nst_scale
  # only the new style image:
  nst-jax --config=configs/scale_mix.py --config.mode=scale_mix --workdir=/tmp/nst_mix

Expect: ~5 minutes on a 2-core CPU (1 min for the 384-px mixed style). The
new style shows The Scream's composition painted in small van Gogh strokes.
The naive one-run variant is ``--config.styles=A,B
--config.style_layer_styles=0,0,1,1,1``.
"""

from nst_jax.config import get_default_config
from nst_jax.config import asset


def get_config():
  config = get_default_config()   # = configs/default.py
  config.scale_fine_style = asset('starry_night.jpg')
  config.scale_coarse_style = asset('the_scream.jpg')
  config.scale_layers = ('relu1_1', 'relu2_1')
  config.scale_size = 384
  config.scale_steps = 150
  config.style_weight = 300.0
  return config
