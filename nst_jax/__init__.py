"""nst_jax: neural style transfer (Gatys et al. 2016, 2017) in JAX.

Pure pieces (weights, features, Grams, losses) compose with jit/grad/vmap;
:func:`stylize` runs the whole coarse-to-fine optimisation.

Example:
  >>> import nst_jax
  >>> image = nst_jax.stylize('photo.jpg', 'painting.jpg', sizes=(256,), steps=(100,))
"""

from nst_jax.config import get_default_config
from nst_jax.errors import NSTError
from nst_jax.image_io import load_image, save_image
from nst_jax.losses import content_loss, gram, style_loss, total_variation
from nst_jax.objective import loss_terms, make_targets
from nst_jax.pipeline import run, stylize
from nst_jax.vgg import LAYER_NAMES, vgg_features
from nst_jax.weights import load_vgg19

__version__ = '0.1.0'

__all__ = [
    'LAYER_NAMES',
    'NSTError',
    'content_loss',
    'get_default_config',
    'gram',
    'load_image',
    'load_vgg19',
    'loss_terms',
    'make_targets',
    'run',
    'save_image',
    'style_loss',
    'stylize',
    'total_variation',
    'vgg_features',
]
