r"""Can XLA:CPU run VGG19's convolutions in bfloat16 faster? (issue 10, sec. 3)

One loss+gradient evaluation of the default objective at SxS (the cat and
The Starry Night), best of 3 after compiling, in a fresh process per setting:

  python tools/cpu_bf16_probe.py 256 float32 plain
  python tools/cpu_bf16_probe.py 256 bfloat16 plain      # activation_dtype=bfloat16
  python tools/cpu_bf16_probe.py 256 bfloat16 f32acc     # bf16 conv, f32 accumulation
  python tools/cpu_bf16_probe.py 256 bfloat16 im2col     # 3x3 conv = im2col + bf16 dot
  XLA_FLAGS=--xla_cpu_use_onednn=true python tools/cpu_bf16_probe.py 256 bfloat16 plain
  python tools/cpu_bf16_probe.py --dot                   # one dot: f32, bf16, bf16->f32

Prints a JSON line: seconds per evaluation, the loss and its relative
difference from float32, and the gradient's relative difference. Results
are in WORKSPACE.md ("bfloat16 on the CPU").
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

import nst_jax  # noqa: E402
from nst_jax import image_io, objective, vgg  # noqa: E402
from nst_jax.config import asset  # noqa: E402

BF16 = jnp.bfloat16


def _timed(f, *args, n=3):
  jax.block_until_ready(f(*args))
  best = float('inf')
  for _ in range(n):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    best = min(best, time.perf_counter() - t)
  return best


def dot():
  a, b = jnp.ones((16384, 1152)), jnp.ones((1152, 128))      # relu1-size im2col x 3x3x128
  for dt, acc in ((jnp.float32, None), (BF16, None), (BF16, jnp.float32)):
    f = jax.jit(lambda a, b, acc=acc: jnp.dot(a, b, preferred_element_type=acc))
    print(json.dumps(dict(dot=[16384, 1152, 128], dtype=jnp.dtype(dt).name,
                          accumulate=acc and 'float32', ms=round(
                              _timed(f, a.astype(dt), b.astype(dt), n=20) * 1e3, 2),
                          flags=os.environ.get('XLA_FLAGS', ''))))


def _im2col(x):
  n, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], -1)


def _mm(p, k):
  return jnp.einsum('nhwk,ko->nhwo', p, k, preferred_element_type=jnp.float32)


@jax.custom_vjp
def _conv_im2col(x, w):
  return _mm(_im2col(x.astype(BF16)), w.astype(BF16).reshape(-1, w.shape[-1]))


def _im2col_fwd(x, w):
  return _conv_im2col(x, w), (x, w)


def _im2col_bwd(res, dy):
  x, w = res
  dyb = dy.astype(BF16)
  wt = jnp.flip(w, (0, 1)).swapaxes(2, 3).astype(BF16)
  dx = _mm(_im2col(dyb), wt.reshape(-1, wt.shape[-1]))
  dw = jnp.einsum('nhwk,nhwo->ko', _im2col(x.astype(BF16)), dyb,
                  preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dw.reshape(w.shape).astype(w.dtype)


_conv_im2col.defvjp(_im2col_fwd, _im2col_bwd)


def evaluation(size, dtype, mode):
  params = nst_jax.load_vgg19()
  c = image_io.resize(image_io.load_image(asset('chelsea.png')), (size, size))
  s = image_io.resize(image_io.load_image(asset('starry_night.jpg')), (size, size))
  targets = objective.make_targets(params, c, [s])
  weights = objective.LossWeights(1.0, 100.0, 0.0)
  x = jnp.asarray(c)
  ref = jax.jit(jax.value_and_grad(
      lambda x: objective.total_loss(x, params, targets, weights)))(x)
  if mode == 'f32acc':
    vgg._conv = lambda x, w, p: lax.conv_general_dilated(   # pylint: disable=protected-access
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=p,
        preferred_element_type=jnp.float32).astype(x.dtype)
  elif mode == 'im2col':
    vgg._conv_same3x3 = lambda x, w, p: _conv_im2col(x, w).astype(x.dtype)  # pylint: disable=protected-access
  f = jax.jit(jax.value_and_grad(lambda x: objective.total_loss(
      x, params, targets, weights, activation_dtype=dtype)))
  value, grad = f(x)
  print(json.dumps(dict(
      size=size, dtype=dtype, mode=mode, flags=os.environ.get('XLA_FLAGS', ''),
      s_per_eval=round(_timed(f, x), 3), loss=float(value),
      loss_rel=float(abs(value - ref[0]) / ref[0]),
      grad_rel=float(jnp.linalg.norm(grad - ref[1]) / jnp.linalg.norm(ref[1])))))


if __name__ == '__main__':
  if sys.argv[1:] == ['--dot']:
    dot()
  else:
    evaluation(int(sys.argv[1]), sys.argv[2], sys.argv[3])
