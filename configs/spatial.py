r"""Spatial control: sky texture on the top half, village texture below.

The content's top half takes its style from the top 65 % of The Starry Night
(the swirling sky), the bottom half from the rest (village and hills):
guided Gram matrices, one per region (Gatys et al. 2017, sec. 4).

Run:

  nst-jax --config=configs/spatial.py --workdir=/tmp/nst_spatial

Expect: ~3 minutes on a 2-core CPU (as default.py). The cat's upper half is
covered in large sky swirls and stars, the lower half in the smaller,
darker brush strokes of the village. Try ``--config.guidance_mode=inside``
(less bleeding across the border) or ``--config.guided_statistic=mean``.
"""

from nst_jax.config import get_default_config


def get_config():
  config = get_default_config()   # = configs/default.py
  config.content_guidance = 'horizon:0.5'
  config.style_guidance = ('horizon:0.65',)
  config.guidance_mode = 'simple'
  config.style_weight = 300.0
  return config
