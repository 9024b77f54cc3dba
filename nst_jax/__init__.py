"""nst_jax: neural style transfer (Gatys et al. 2016, 2017) in JAX.

Pure pieces (weights, features, Grams, targets, losses) compose with
jit/grad/vmap; :func:`stylize` runs the whole coarse-to-fine optimisation.

Example:
  >>> import nst_jax
  >>> image = nst_jax.stylize('photo.jpg', 'painting.jpg', sizes=(256,), steps=(100,))
  >>> params = nst_jax.load_vgg19()
  >>> targets = nst_jax.make_targets(params, content, [style])
  >>> loss = lambda x: nst_jax.total_loss(x, params, targets,
  ...                                     nst_jax.LossWeights(1.0, 100.0, 0.0))
  >>> out = nst_jax.fast.stylize(nst_jax.fast.load(), 'photo.jpg')  # feed-forward
  >>> frames = nst_jax.stylize('clip.mp4', 'painting.jpg')   # a clip (Ruder et al.)
"""

import warnings

# `python -m nst_jax.weights` (the offline weights converter) runs a module this
# package has already imported; runpy's warning about that is noise here.
warnings.filterwarnings('ignore', message="'nst_jax.weights' found in sys.modules",
                        category=RuntimeWarning)

from nst_jax import fast  # pylint: disable=g-import-not-at-top,wrong-import-position
from nst_jax import flow
from nst_jax import mask_io
from nst_jax import video_io
from nst_jax.api import make_config, run, stylize
from nst_jax.config import get_default_config
from nst_jax.errors import NSTError
from nst_jax.layer_masks import layer_guidance
from nst_jax import image_io
from nst_jax.image_io import load_image, save_image
from nst_jax.losses import (content_loss, gram, guided_gram, guided_mean, style_loss,
                            total_variation)
from nst_jax.objective import (LossWeights, Targets, Temporal, loss_terms,
                               make_guided_targets, make_targets, pixels_to_image,
                               temporal_loss, total_loss)
from nst_jax.vgg import LAYER_NAMES, vgg_features
from nst_jax.weights import load_vgg19

__version__ = '0.2.0'

__all__ = [
    'LAYER_NAMES',
    'LossWeights',
    'NSTError',
    'Targets',
    'Temporal',
    'content_loss',
    'fast',
    'flow',
    'get_default_config',
    'gram',
    'guided_gram',
    'guided_mean',
    'layer_guidance',
    'load_image',
    'load_vgg19',
    'loss_terms',
    'make_config',
    'make_guided_targets',
    'make_targets',
    'mask_io',
    'pixels_to_image',
    'run',
    'save_image',
    'stylize',
    'style_loss',
    'temporal_loss',
    'total_loss',
    'total_variation',
    'vgg_features',
    'video_io',
]
