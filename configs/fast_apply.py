r"""Apply a trained fast network to a photo or a folder of photos.

Run:

  nst-jax --config=configs/fast_apply.py --config.model=MODEL \
    --config.content=photo.jpg --workdir=OUT        # -> OUT/final.png
  nst-jax --config=configs/fast_apply.py --config.content=photos/ --workdir=OUT
                                                    # -> OUT/batch/<name>.png

Each output has its input's size. ``--config.model`` is a workdir written by
configs/fast_train.py; left empty, the bundled demo model (Starry Night,
width 16). A spatially guided model takes any mask:
``--config.content_guidance=disc:0.35`` (or ``horizon:0.6``, a label map, a
folder of masks named like the photos); unset, the mask it was trained
with. A luminance model keeps each photo's own colours.

Expect: well under a second per 512-px photo on a 2-core CPU after the
first (compiling) one; see README "Fast networks" for the measured times.
"""

from nst_jax.config import get_default_config


def get_config():
  config = get_default_config()
  config.job = 'fast_apply'
  return config
