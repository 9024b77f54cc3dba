"""The image-transformation network of fast style transfer (Johnson et al. 2016), in flax NNX.

Layout (``w`` = ``width``, 32 in Johnson et al.):

  [image (C channels) | guidance (R channels)]
  -> 9x9 conv w        -> 3x3 conv 2w, stride 2 -> 3x3 conv 4w, stride 2
  -> ``res_blocks`` x residual block (3x3 conv, norm, ReLU, 3x3 conv, norm, + skip)
  -> resize to the stride-2 input's size + 3x3 conv 2w
  -> resize to the input's size + 3x3 conv w        (no transposed convs:
                                                    no checkerboard artefacts)
  -> 9x9 conv C -> sigmoid                          output in [0, 1]

Every conv but the last is followed by instance normalisation and a ReLU;
convolutions pad by reflection. The upsampling steps resize to the *recorded*
sizes of the down path, so the output has exactly the input's size, odd
sizes included (the net is fully convolutional). A spatially guided network
(Gatys et al. 2017, sec. 7) takes its R guidance channels next to the image.

The module is used functionally: :func:`create` returns ``(graphdef,
params)`` and :func:`apply` merges them, so parameters are a plain pytree for
optax, orbax and ``jax.jit`` (flax NNX's split/merge API).

Example:
  >>> graphdef, params = create(width=16, seed=0)
  >>> y = apply(graphdef, params, jnp.zeros((1, 37, 53, 3)))
  >>> y.shape
  (1, 37, 53, 3)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class ConvNormReLU(nnx.Module):
  """Reflection-padded conv, instance norm, ReLU."""

  def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *,
               rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides=stride,
                         padding='REFLECT', rngs=rngs)
    self.norm = nnx.InstanceNorm(cout, epsilon=1e-5, rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.norm(self.conv(x)))


class ResidualBlock(nnx.Module):
  """x + norm(conv(relu(norm(conv(x)))))."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.inner = ConvNormReLU(channels, channels, 3, rngs=rngs)
    self.conv = nnx.Conv(channels, channels, (3, 3), padding='REFLECT', rngs=rngs)
    self.norm = nnx.InstanceNorm(channels, epsilon=1e-5, rngs=rngs)

  def __call__(self, x):
    return x + self.norm(self.conv(self.inner(x)))


class TransformNet(nnx.Module):
  """Johnson et al.'s transformation network; see the module docstring.

  Args:
    channels: image channels in and out (3 = RGB, 1 = luminance network).
    guidance_channels: R guidance channels taken next to the image (0 = none).
    width: channels of the first conv (2x and 4x deeper down).
    res_blocks: number of residual blocks at 1/4 resolution.
  """

  def __init__(self, channels: int = 3, guidance_channels: int = 0, width: int = 32,
               res_blocks: int = 5, *, rngs: nnx.Rngs):
    w = width
    self.down = nnx.List([ConvNormReLU(channels + guidance_channels, w, 9, rngs=rngs),
                          ConvNormReLU(w, 2 * w, 3, 2, rngs=rngs),
                          ConvNormReLU(2 * w, 4 * w, 3, 2, rngs=rngs)])
    self.res = nnx.List([ResidualBlock(4 * w, rngs=rngs) for _ in range(res_blocks)])
    self.up = nnx.List([ConvNormReLU(4 * w, 2 * w, 3, rngs=rngs),
                        ConvNormReLU(2 * w, w, 3, rngs=rngs)])
    self.out = nnx.Conv(w, channels, (9, 9), padding='REFLECT', rngs=rngs)
    self.guidance_channels = guidance_channels

  def __call__(self, image, guidance=None):
    """``image`` ``[N, H, W, C]`` in [0, 1] (+ ``guidance`` ``[N, H, W, R]``) -> ``[N, H, W, C]``."""
    x = image
    if self.guidance_channels:
      x = jnp.concatenate([x, guidance.astype(x.dtype)], axis=-1)
    x = x * 2.0 - 1.0                          # centre the inputs
    sizes = []
    for layer in self.down:
      sizes.append(x.shape[1:3])
      x = layer(x)
    for block in self.res:
      x = block(x)
    for layer, hw in zip(self.up, (sizes[2], sizes[1])):
      x = jax.image.resize(x, (x.shape[0], *hw, x.shape[-1]), 'nearest')
      x = layer(x)
    return jax.nn.sigmoid(self.out(x))


def create(channels: int = 3, guidance_channels: int = 0, width: int = 32,
           res_blocks: int = 5, *, seed: int = 0, abstract: bool = False):
  """A :class:`TransformNet` split into ``(graphdef, params)``.

  ``abstract=True`` makes shapes only (for loading saved parameters).
  """
  make = lambda: TransformNet(channels, guidance_channels, width, res_blocks,
                              rngs=nnx.Rngs(seed))
  return nnx.split(nnx.eval_shape(make) if abstract else make())


def apply(graphdef, params, image, guidance=None):
  """The network's output for ``image`` ``[N, H, W, C]`` (a pure function of params)."""
  return nnx.merge(graphdef, params)(image, guidance)


def num_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
