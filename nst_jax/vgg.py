"""VGG19 features as a pure function of (params, image).

Layer names follow the papers: ``conv1_1, relu1_1, conv1_2, relu1_2, pool1,
conv2_1, ..., relu5_4, pool5``. Only the layers up to the deepest requested one
are computed. Works under ``jit``, ``grad`` and ``vmap``.

Example:
  >>> params = nst_jax.load_vgg19()
  >>> feats = nst_jax.vgg_features(params, jnp.zeros((64, 64, 3)),
  ...                              ['relu1_1', 'relu4_2'])
  >>> feats['relu4_2'].shape
  (8, 8, 512)
"""

from __future__ import annotations

import functools
from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax import winograd
from nst_jax.errors import NSTError

# The mean pixel of the Caffe VGG training set, in BGR order, 0-255 scale.
MEAN_PIXEL_BGR = (103.939, 116.779, 123.68)

# The architecture: (block, number of 3x3 convs) and each block's channels.
# Every conv is followed by a ReLU, every block by a 2x2 stride-2 pooling.
VGG19_BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
BLOCK_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}


def conv_shapes() -> dict[str, tuple[int, int, int, int]]:
  """HWIO kernel shape of every VGG19 conv layer."""
  shapes, cin = {}, 3
  for b, n in VGG19_BLOCKS:
    for i in range(1, n + 1):
      shapes[f'conv{b}_{i}'] = (3, 3, cin, BLOCK_CHANNELS[b])
      cin = BLOCK_CHANNELS[b]
  return shapes


def _layer_names() -> tuple[str, ...]:
  names = []
  for b, n in VGG19_BLOCKS:
    for i in range(1, n + 1):
      names += [f'conv{b}_{i}', f'relu{b}_{i}']
    names.append(f'pool{b}')
  return tuple(names)


LAYER_NAMES = _layer_names()
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}
POOLINGS = ('max', 'avg')


def check_layers(layers: Iterable[str], what: str = 'layer') -> list[str]:
  """Returns ``layers`` as a list, or raises NSTError naming an unknown one."""
  layers = list(layers)
  for name in layers:
    if name not in LAYER_INDEX:
      raise NSTError(f'unknown {what} {name!r}; VGG19 layers are '
                     f'{LAYER_NAMES[0]} ... {LAYER_NAMES[-1]} (e.g. relu4_2)')
  return layers


def layer_channels(name: str) -> int:
  """Number of channels of a layer's activation."""
  return BLOCK_CHANNELS[int(name[4])]   # 'conv3_1', 'relu3_1', 'pool3' -> 3


def layer_stride(name: str) -> int:
  """Downsampling factor of a layer's grid relative to the input."""
  idx = LAYER_INDEX[name]
  return 2 ** sum(1 for n in LAYER_NAMES[:idx + 1] if n.startswith('pool'))


def receptive_radius(name: str) -> int:
  """How far a layer's receptive field reaches past its own stride block.

  A neuron at position q of a layer with stride s sees input rows
  ``[q*s - r, q*s + s - 1 + r]``: each 3x3 convolution adds one cell of its
  grid on either side. relu5_1: 2 + 2*2 + 4*4 + 4*8 + 16 = 70, i.e. a field
  of 16 + 2*70 = 156 px.
  """
  radius = 0
  for n in LAYER_NAMES[:LAYER_INDEX[name] + 1]:
    if n.startswith('conv'):
      radius += layer_stride(n)
  return radius


def float32_precision():
  """Matmul/conv precision that keeps true float32 on every backend.

  GPU/TPU need ``HIGHEST`` (their default rounds inputs to bf16/tf32). On CPU
  the default already is float32, and ``HIGHEST`` makes XLA:CPU pick a slower
  dot for the Gram matrices' long contraction (0.638 vs 0.596 s per 256²
  evaluation, measured), so we leave it unset there.
  """
  return None if jax.default_backend() == 'cpu' else lax.Precision.HIGHEST


def preprocess(image: jax.Array) -> jax.Array:
  """RGB in [0, 1] -> the Caffe convention: BGR, 0-255, minus the mean pixel."""
  bgr = image[..., ::-1] * 255.0
  return bgr - jnp.asarray(MEAN_PIXEL_BGR, dtype=image.dtype)


def _xla_conv(x, w, precision):
  return lax.conv_general_dilated(
      x, w, window_strides=(1, 1), padding='SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=precision)


def _flip(w):
  """The kernel whose same-padded conv is the input gradient of ``w``'s."""
  return jnp.flip(w, (0, 1)).swapaxes(2, 3)


def _conv(x, w, u, precision, algorithm):
  if algorithm == 'xla':
    return _xla_conv(x, w, precision)
  return winograd.conv3x3_same(x, w, m=WINOGRAD_TILES[algorithm], u=u)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _conv_same3x3(x, w, u, u_t, precision, algorithm):
  del u_t
  return _conv(x, w, u, precision, algorithm)


def _conv_fwd(x, w, u, u_t, precision, algorithm):
  return _conv(x, w, u, precision, algorithm), (x, w, u, u_t)


def _conv_bwd(precision, algorithm, residuals, dy):
  # The input gradient of a same-padded 3x3 conv is the same conv with the
  # kernel flipped spatially and in/out swapped. Writing it so, rather than
  # leaving it to autodiff, keeps XLA:CPU on its fast convolution path inside
  # while loops (autodiff's reversed '01oi' kernel falls to a ~3x slower
  # generic emitter there; measured in WORKSPACE.md) and lets the gradient use
  # the same algorithm as the forward pass. The kernel's gradient (unused by
  # the optimisation, removed by XLA then) is XLA's; the transformed
  # kernels' are zero (they are constants of the loss).
  x, w, u, u_t = residuals
  dx = _conv(dy, _flip(w), u_t, precision, algorithm)
  dw = jax.vjp(lambda k: _xla_conv(x, k, precision), w)[1](dy)[0]
  zero = lambda a: None if a is None else jnp.zeros_like(a)
  return dx, dw, zero(u), zero(u_t)


_conv_same3x3.defvjp(_conv_fwd, _conv_bwd)

# conv3x3's algorithms: XLA's convolution, or Winograd F(2x2, 3x3) / F(4x4, 3x3)
# (nst_jax/winograd.py); 'auto' is F(4x4, 3x3) where :func:`winograd_kernels`
# prepared the layer's transformed kernels, else XLA's.
CONV_ALGORITHMS = ('auto', 'xla', 'winograd2', 'winograd4')
WINOGRAD_TILES = {'winograd2': 2, 'winograd4': 4}
# Layers with 256 or more output channels (conv3_1 ... conv5_4): there F(4x4,
# 3x3) with prepared kernels is 1.2-2.2x faster than XLA:CPU's conv (fwd +
# input gradient); at 64-128 it is slower (its transforms move more bytes
# than the multiplies save). Measured per layer shape: WORKSPACE.md "Winograd".
WINOGRAD_MIN_CHANNELS = 256
# ... and grids of at least 32 x 32: the Winograd layers cost ~0.3 s more
# each to compile (a stage 4 s instead of 1.6 at 256², measured), which the
# 18-20 ms a 512-channel layer saves per evaluation at 32² repays within ~20
# evaluations; smaller grids (and the suite's small test images) keep XLA's.
WINOGRAD_MIN_POSITIONS = 32 * 32


def winograd_layers(upto: Iterable[str] = ('conv5_4',), dtype=jnp.float32,
                    activation_dtype: str = 'float32') -> tuple[str, ...]:
  """The conv layers :func:`winograd_kernels` prepares on this backend for a
  loss that reads the layers ``upto``: on CPU in float32 the convs of
  :data:`WINOGRAD_MIN_CHANNELS` outputs up to the deepest of them; none on GPU/TPU
  (cuDNN and the MXU have their own fast paths) or with bfloat16 activations."""
  if (jax.default_backend() != 'cpu' or jnp.dtype(dtype) != jnp.float32
      or activation_dtype != 'float32'):
    return ()
  last = max((LAYER_INDEX[n] for n in upto), default=-1)
  return tuple(n for n, (_, _, c, k) in conv_shapes().items()
               if k >= WINOGRAD_MIN_CHANNELS and LAYER_INDEX[n] <= last)


def winograd_kernel_bytes(layers) -> int:
  """Bytes of :func:`winograd_kernels`' transforms of ``layers`` (two per layer)."""
  shapes = conv_shapes()
  return sum(2 * 36 * shapes[n][2] * shapes[n][3] * 4 for n in layers)


def winograd_kernels(params, layers=None, m: int = 4):
  """``params`` with each layer of ``layers`` (default :func:`winograd_layers`)
  also holding its F(m×m, 3×3) transformed kernels: ``'u'`` for the
  forward conv and ``'u_t'`` for its input gradient (4x a kernel's size
  each for m = 4). Compute once, outside the optimisation loop (XLA does not
  hoist them out of it: measured 4x slower per conv). :func:`conv3x3`
  with ``algorithm='auto'`` runs those layers by Winograd.

  Example:
    >>> fast = winograd_kernels(params)           # once per run
    >>> feats = vgg_features(fast, image, ['relu4_1'])
  """
  layers = winograd_layers() if layers is None else layers
  out = dict(params)
  for name in layers:
    if name in params:
      w = jnp.asarray(params[name]['w'], jnp.float32)
      out[name] = dict(params[name], u=winograd.transform_kernel(w, m),
                       u_t=winograd.transform_kernel(_flip(w), m))
  return out


def conv_algorithm(cin: int, dtype, algorithm: str = 'auto', prepared: bool = False,
                   positions: int = WINOGRAD_MIN_POSITIONS) -> str:
  """The algorithm :func:`conv3x3` runs: ``algorithm`` unless ``'auto'``,
  which is ``'winograd4'`` for a ``prepared`` layer (transformed kernels
  given) in float32 with at least 4 input channels and a grid of at least
  :data:`WINOGRAD_MIN_POSITIONS` ``positions``, else ``'xla'``."""
  if algorithm not in CONV_ALGORITHMS:
    raise NSTError(f'unknown conv algorithm {algorithm!r}; use one of {CONV_ALGORITHMS}')
  if algorithm != 'auto':
    return algorithm
  if (prepared and jnp.dtype(dtype) == jnp.float32 and cin >= 4
      and positions >= WINOGRAD_MIN_POSITIONS):
    return 'winograd4'
  return 'xla'


def conv3x3(x, w, b, precision=None, algorithm: str = 'auto', u=None, u_t=None):
  """Same-padded 3x3 convolution plus bias, NHWC x HWIO (float32 by default).

  ``algorithm``: see :func:`conv_algorithm`; ``u``, ``u_t``: the kernel's
  F(4x4, 3x3) transforms for 'auto'/'winograd4' (:func:`winograd_kernels`;
  computed here if absent).
  """
  if precision is None:
    precision = float32_precision()
  algorithm = conv_algorithm(w.shape[2], x.dtype, algorithm, u is not None,
                             x.shape[-3] * x.shape[-2])
  if algorithm != 'winograd4' or x.dtype != jnp.float32:
    u = u_t = None                               # only F(4, 3) in float32 uses them
  return _conv_same3x3(x, w.astype(x.dtype), u, u_t, precision, algorithm) + b.astype(x.dtype)


def reduce2x2(x, how: str):
  """Reduces 2x2 stride-2 blocks of ``[..., h, w, c]`` by ``'max'|'mean'|'min'``.

  Odd sizes drop their last row/column, as VALID pooling does. Written as a
  reshape and a reduction rather than ``reduce_window``: the gradient is
  then elementwise (ties share it equally) instead of XLA's
  select-and-scatter, which is ~10 % of a whole VGG19 evaluation on CPU.
  """
  *lead, h, w, c = x.shape
  x = x[..., :h // 2 * 2, :w // 2 * 2, :].reshape(*lead, h // 2, 2, w // 2, 2, c)
  return {'max': jnp.max, 'mean': jnp.mean, 'min': jnp.min}[how](x, axis=(-4, -2))


def pool2x2(x, pooling: str = 'max'):
  """VGG's 2x2 stride-2 pooling, ``'max'`` or ``'avg'`` (see :func:`reduce2x2`)."""
  if pooling not in POOLINGS:
    raise NSTError(f'unknown pooling {pooling!r}; use one of {POOLINGS}')
  return reduce2x2(x, 'max' if pooling == 'max' else 'mean')


REMATS = ('none', 'block')
ACTIVATION_DTYPES = ('float32', 'bfloat16')


def vgg_features(params: Mapping, image: jax.Array, layers: Iterable[str],
                 pooling: str = 'max', *, precision=None, remat: str = 'none',
                 activation_dtype: str = 'float32', conv: str = 'auto'
                 ) -> dict[str, jax.Array]:
  """VGG19 activations of ``image`` at ``layers``.

  Args:
    params: from :func:`nst_jax.load_vgg19`.
    image: float RGB in [0, 1], ``[H, W, 3]`` or ``[N, H, W, 3]``. The
      Caffe preprocessing (BGR, 0-255, mean pixel) is done here.
    layers: names from :data:`LAYER_NAMES`, e.g. ``['relu4_2']``.
    pooling: ``'max'`` (as trained) or ``'avg'`` (Gatys et al. 2016 prefer it
      for image synthesis).
    precision: convolution precision; None = true float32 on every backend
      (:func:`float32_precision`).
    remat: ``'block'`` wraps each VGG block in ``jax.checkpoint`` (policy:
      save nothing inside the block), so the backward pass recomputes a
      block's activations from its input instead of keeping them: less
      memory, ~1 extra forward pass of compute.
    activation_dtype: ``'bfloat16'`` runs the convolutions and keeps the
      activations in bfloat16 (half the activation memory); the returned
      features are cast back to float32, so Grams, losses and the optimiser
      stay float32.
    conv: the 3x3 convolutions' algorithm (:func:`conv_algorithm`): ``'auto'``
      (Winograd F(4x4, 3x3) for the layers whose transformed kernels
      ``params`` holds, :func:`winograd_kernels`; else XLA's), ``'xla'``,
      ``'winograd2'``, ``'winograd4'``.

  Returns:
    ``{layer: activation}``, each ``[h, w, C]`` (or ``[N, h, w, C]``), float32.
  """
  layers = check_layers(layers)
  if pooling not in POOLINGS:
    raise NSTError(f'unknown pooling {pooling!r}; use one of {POOLINGS}')
  if remat not in REMATS:
    raise NSTError(f'unknown remat {remat!r}; use one of {REMATS}')
  if activation_dtype not in ACTIVATION_DTYPES:
    raise NSTError(f'unknown activation dtype {activation_dtype!r}; use one of '
                   f'{ACTIVATION_DTYPES}')
  if image.ndim not in (3, 4) or image.shape[-1] != 3:
    raise NSTError(f'image must be [H, W, 3] or [N, H, W, 3], got {image.shape}')
  if not layers:
    return {}
  batched = image.ndim == 4
  x = preprocess(image if batched else image[None]).astype(activation_dtype)
  wanted = set(layers)
  last = max(LAYER_INDEX[n] for n in layers)
  names = LAYER_NAMES[:last + 1]
  # Split into blocks (conv..pool); each block maps x -> (x, {wanted outputs}).
  blocks, current = [], []
  for name in names:
    current.append(name)
    if name.startswith('pool'):
      blocks.append(current)
      current = []
  if current:
    blocks.append(current)

  def run_block(block, p, x):
    outs = {}
    for name in block:
      kind = name[:4]
      if kind == 'conv':
        x = conv3x3(x, p[name]['w'], p[name]['b'], precision, conv, p[name].get('u'),
                    p[name].get('u_t'))
      elif kind == 'relu':
        x = jax.nn.relu(x)
      else:
        x = pool2x2(x, pooling)
      if name in wanted:
        outs[name] = x
    return x, outs

  out = {}
  for block in blocks:
    fn = functools.partial(run_block, block)
    if remat == 'block':
      fn = jax.checkpoint(fn, policy=jax.checkpoint_policies.nothing_saveable)
    x, outs = fn({n: params[n] for n in block if n.startswith('conv')}, x)
    for name, v in outs.items():
      v = v.astype(jnp.float32)
      out[name] = v if batched else v[0]
  return out
