"""Fast, feed-forward style transfer networks with spatial and colour control.

Gatys et al. 2017, sec. 7: the controls of the optimisation carry over to
Johnson et al.'s feed-forward networks. A network is trained once per style
(:mod:`nst_jax.fast.train`, ``job=fast_train``) with this package's own
objective, then stylises a photo of any size in one forward pass
(:mod:`nst_jax.fast.apply`).

Example:
  >>> model = nst_jax.fast.load()                  # the bundled demo model
  >>> out = nst_jax.fast.stylize(model, 'photo.jpg')
  >>> nst_jax.save_image('out.png', out)
"""

from nst_jax.fast.apply import FastModel, load, stylize
from nst_jax.fast.network import TransformNet

__all__ = ['FastModel', 'TransformNet', 'load', 'stylize']
