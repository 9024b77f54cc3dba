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

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

_DN = ('NHWC', 'HWIO', 'NHWC')


def _conv(x, w, stride):
  return lax.conv_general_dilated(x, w, (stride, stride), 'VALID', dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_valid(x, w, stride: int):
  """VALID conv ``[N,H,W,Ci] x [k,k,Ci,Co]`` with a loop-friendly gradient.

  Inside ``lax.scan`` (many training steps per compiled call) XLA:CPU keeps
  autodiff's weight-gradient conv in its non-canonical layout
  (``f01b_i01o->01bf``) and runs it through a generic emitter, 5-25x slower
  than outside a loop (measured, WORKSPACE.md). The backward pass here
  writes both gradients as canonical NHWC convs: the input gradient as the
  conv of the (stride-dilated) output gradient with the flipped kernel, the
  weight gradient as a conv of the transposed input with the transposed
  output gradient. Same values as autodiff (tested).
  """
  return _conv(x, w, stride)


def _conv_fwd(x, w, stride):
  return _conv(x, w, stride), (x, w)


def _conv_bwd(stride, residuals, dy):
  x, w = residuals
  k = w.shape[0]
  rh, rw = (x.shape[1] - k) % stride, (x.shape[2] - k) % stride
  flipped = jnp.flip(w, (0, 1)).swapaxes(2, 3)
  dx = lax.conv_general_dilated(dy, flipped, (1, 1), ((k - 1, k - 1 + rh), (k - 1, k - 1 + rw)),
                                lhs_dilation=(stride, stride), dimension_numbers=_DN)
  dw = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1),
                                'VALID', rhs_dilation=(stride, stride), dimension_numbers=_DN)
  return dx, dw[:, :k, :k, :].transpose(1, 2, 0, 3)


conv_valid.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, precision=None, **kwargs):
  """``lax.conv_general_dilated`` for nnx.Conv, through :func:`conv_valid` in
  the case the network uses (VALID after reflection padding, square stride)."""
  simple = (padding == 'VALID' and len(set(window_strides)) == 1 and
            all(d == 1 for d in (lhs_dilation or (1,))) and
            all(d == 1 for d in (rhs_dilation or (1,))) and feature_group_count == 1 and
            precision is None and lhs.ndim == 4 and rhs.shape[0] == rhs.shape[1] and
            not {k: v for k, v in kwargs.items() if v is not None})
  if simple:
    return conv_valid(lhs, rhs, int(window_strides[0]))
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                  rhs_dilation, dimension_numbers, feature_group_count,
                                  precision=precision, **kwargs)


def _conv_layer(cin, cout, kernel, stride=1, *, rngs):
  return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding='REFLECT',
                  conv_general_dilated=conv_general_dilated, rngs=rngs)


# Which low-resolution row (offset from p, after an edge pad of 1) tap i of a
# 3x3 conv reads for output row 2p + a of the 2x nearest-upsampled image.
_UP_TAPS = np.zeros((2, 3, 3), np.float32)
for _a in range(2):
  for _i in range(3):
    _UP_TAPS[_a, _i, (_a - 1 + _i) // 2 + 1] = 1.0


def upsampled_conv3x3(x, w, b):
  """``conv3x3(reflect_pad(upsample2x(x)))`` without the upsampling: the same
  values from a conv of ``x`` itself (sub-pixel form).

  Output row 2p + a of the 2x nearest upsampling's 3x3 conv reads low rows
  p − 1, p, p + 1 with the taps summed per row (``_UP_TAPS``), so one 3x3
  conv of ``x`` (edge-padded by 1: the reflection of the upsampled image is
  the edge of ``x``) with 4·K outputs — one per phase (a, b) — followed by
  depth-to-space gives the ``[N, 2H, 2W, K]`` result with the same
  multiplies at a quarter of the positions and 4x the output channels,
  where XLA:CPU's conv runs far faster than at 16–32 channels (measured:
  WORKSPACE.md "Fast networks").
  """
  n, h, wd, c = x.shape
  k = w.shape[-1]
  taps = jnp.asarray(_UP_TAPS, w.dtype)
  w4 = jnp.einsum('aip,bjq,ijck->pqcabk', taps, taps, w).reshape(3, 3, c, 4 * k)
  y = conv_valid(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='edge'), w4, 1)
  y = y.reshape(n, h, wd, 2, 2, k).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * wd, k)
  return y + b


class ConvNormReLU(nnx.Module):
  """Reflection-padded conv, instance norm, ReLU."""

  def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *,
               rngs: nnx.Rngs):
    self.conv = _conv_layer(cin, cout, kernel, stride, rngs=rngs)
    self.norm = nnx.InstanceNorm(cout, epsilon=1e-5, rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.norm(self.conv(x)))

  def upsampled(self, x, hw):
    """This layer applied to ``x`` resized (nearest) to ``hw``: the sub-pixel
    form when ``hw`` is exactly twice ``x``'s size (:func:`upsampled_conv3x3`)."""
    if tuple(hw) == (2 * x.shape[1], 2 * x.shape[2]) and self.conv.kernel_size == (3, 3):
      y = upsampled_conv3x3(x, self.conv.kernel.value, self.conv.bias.value)
      return jax.nn.relu(self.norm(y))
    return self(jax.image.resize(x, (x.shape[0], *hw, x.shape[-1]), 'nearest'))


class ResidualBlock(nnx.Module):
  """x + norm(conv(relu(norm(conv(x)))))."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.inner = ConvNormReLU(channels, channels, 3, rngs=rngs)
    self.conv = _conv_layer(channels, channels, 3, rngs=rngs)
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
    self.out = _conv_layer(w, channels, 9, rngs=rngs)
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
      x = layer.upsampled(x, hw)
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
