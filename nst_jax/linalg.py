"""tr((A + δI)^½) of symmetric PSD matrices, with gradients, per backend.

Both ways compute the square root of A shifted by δ = ``NS_SHIFT`` · ‖A‖_F
(1e-7): float32 cannot resolve A's eigenvalues below ~1e-7·‖A‖ (an
eigensolver returns them as noise of that size), and the gradient ½λ^−½ of
an eigenvalue that small would be that noise amplified; shifted, it is at
most ½δ^−½ and the same in both ways:

* ``'newton_schulz'`` (the default, ``METHOD``): matrix products only, so it
  runs at matmul speed on TPU/GPU; on the 2-core CPU it was faster than
  LAPACK at 256² and a little slower at 512² (W2 loss+gradient 1.41 vs 2.92 s
  with ``eigh`` at 256², 1.98 vs 1.76 s at 512²; Gram 0.71 / 1.48 s; one run
  at load ~3, 20 iterations). :func:`sqrtm` is the coupled Newton–Schulz
  iteration (Higham 2008, eq. 6.35) on the shifted, scaled A + δI
  (δ = ``NS_SHIFT`` · ‖A‖_F; Y₀ = (A + δI)/‖A + δI‖_F, Z₀ = I):

      T_k = (3I − Z_k Y_k) / 2,   Y_{k+1} = Y_k T_k,   Z_{k+1} = T_k Z_k.

  The scaling puts every eigenvalue in (0, 1], where it converges; a small
  eigenvalue first grows ~1.5x per iteration, and in float32 the rounding
  noise in its direction grows with it: unshifted, the VGG covariance
  products of the style loss (condition ~1e15) diverged after 25
  iterations (measured, WORKSPACE.md). The shift bounds the condition at
  1e7, so ``NS_ITERATIONS`` = 24 converge and any more stay put; it moves
  tr(A^½) by Σ(√(λ+δ) − √λ): 7e-5 … 3.2e-3 of the W2 term's scale
  ‖μ_s‖² + tr Σ_s on the VGG19 layers at a photo (tools/statistic_cost.py),
  in both ways. The gradient is closed-form (a custom VJP):
  d tr((A + δI)^½)/dA = ½ (A + δI)^-½ (+ the term through δ), and the
  inverse root is the coupled iteration's Z, computed anyway — so the
  backward pass costs no matrix product. Autodiff through the unrolled loop
  (before) cost twice the forward: W2 / Gram loss+gradient time went from
  5.4x / 2.25x / 1.32x to 2.3x / 1.39x / 1.09x at 128² / 256² / 512²
  (one run, 2-core CPU, medians of 5 evaluations each; tools/statistic_cost.py
  times the same evaluation).
* ``'eigh'`` (the reference, for tests): Σ √(λ_i + δ) from a symmetric
  eigendecomposition, with the closed-form gradient V diag(1 / (2√(λ_i +
  δ))) Vᵀ (plus the term through δ). Not for the loss: its gradient is
  noisier (float32 eigenvectors of eigenvalues near δ are resolved only to
  ~eps‖A‖/δ: tiled vs untiled W2 gradients 7.6e-4 apart, Newton–Schulz
  2e-5), and a batched eigh inside the compiled, tiled guided loss hung
  XLA:CPU (jaxlib 0.10.2, every thread in a futex wait).

Both are tested against each other, closed forms and finite differences.

Example:
  >>> a = jnp.array([[4.0, 0.0], [0.0, 9.0]])
  >>> trace_sqrt(a, 'eigh'), trace_sqrt(a, 'newton_schulz')
  (Array(5., dtype=float32), Array(5., dtype=float32))
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax.vgg import float32_precision

METHODS = ('eigh', 'newton_schulz')
NS_ITERATIONS = 24
NS_SHIFT = 1e-7


METHOD = 'newton_schulz'           # what trace_sqrt uses unless told


def _sym(a):
  return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def sqrtm(a: jax.Array, iterations: int = NS_ITERATIONS, shift: float = NS_SHIFT
          ) -> jax.Array:
  """(A + δI)^½ of symmetric PSD ``a`` (``[..., n, n]``), δ = ``shift``·‖A‖_F,
  by Newton–Schulz (matrix products only)."""
  return _newton_schulz(a, iterations, shift)[0]


def _newton_schulz(a, iterations, shift):
  """``((A + δI)^½, (A + δI)^-½, δ-free ‖A‖_F)`` by the coupled iteration."""
  prec = float32_precision()
  mm = lambda x, y: jnp.matmul(x, y, precision=prec)
  eye = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)
  ss = jnp.sum(a * a, axis=(-2, -1), keepdims=True)
  frob = jnp.where(ss > 0, jnp.sqrt(jnp.where(ss > 0, ss, 1.0)), 0.0)  # a = 0: 0, finite grad
  a = a + shift * frob * eye
  ss = jnp.sum(a * a, axis=(-2, -1), keepdims=True)
  norm = jnp.sqrt(jnp.where(ss > 0, ss, 1.0))

  def step(carry, _):
    y, z = carry
    t = 1.5 * eye - 0.5 * mm(z, y)
    return (mm(y, t), mm(t, z)), None

  (y, z), _ = lax.scan(step, (a / norm, eye), None, length=iterations)
  return y * jnp.sqrt(norm), z / jnp.sqrt(norm), frob


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _trace_sqrt_ns(a, iterations, shift):
  return jnp.trace(_newton_schulz(a, iterations, shift)[0], axis1=-2, axis2=-1)


def _trace_sqrt_ns_fwd(a, iterations, shift):
  root, inverse_root, frob = _newton_schulz(a, iterations, shift)
  return jnp.trace(root, axis1=-2, axis2=-1), (a, inverse_root, frob)


def _trace_sqrt_ns_bwd(iterations, shift, residuals, g):
  """d tr((A + δI)^½) / dA = ½ (A + δI)^-½ + ½ tr((A + δI)^-½) · δ'(A): the
  inverse root is the coupled iteration's Z, so the backward pass is free."""
  del iterations
  a, inverse_root, frob = residuals
  half = 0.5 * g[..., None, None]
  grad = half * _sym(inverse_root)
  through_shift = jnp.trace(inverse_root, axis1=-2, axis2=-1)[..., None, None] * shift * a \
      / jnp.where(frob > 0, frob, 1.0)
  return (grad + half * through_shift,)


_trace_sqrt_ns.defvjp(_trace_sqrt_ns_fwd, _trace_sqrt_ns_bwd)


def _frobenius(a):
  ss = jnp.sum(a * a, axis=(-2, -1))
  return jnp.where(ss > 0, jnp.sqrt(jnp.where(ss > 0, ss, 1.0)), 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _trace_sqrt_eigh(a, shift):
  w = jnp.linalg.eigvalsh(_sym(a))
  return jnp.sum(jnp.sqrt(jnp.maximum(w + shift * _frobenius(a)[..., None], 0.0)), axis=-1)


def _trace_sqrt_eigh_fwd(a, shift):
  w, v = jnp.linalg.eigh(_sym(a))
  w = jnp.maximum(w + shift * _frobenius(a)[..., None], 0.0)
  return jnp.sum(jnp.sqrt(w), axis=-1), (a, w, v)


def _trace_sqrt_eigh_bwd(shift, residuals, g):
  a, w, v = residuals
  d = 0.5 / jnp.sqrt(jnp.maximum(w, jnp.finfo(w.dtype).tiny)) * g[..., None]
  grad = jnp.einsum('...ij,...j,...kj->...ik', v, d, v, precision=float32_precision())
  # ... and through δ = shift · ‖A‖_F, as autodiff does for Newton–Schulz.
  frob = _frobenius(a)[..., None, None]
  grad = grad + jnp.sum(d, axis=-1)[..., None, None] * shift * a / jnp.where(
      frob > 0, frob, 1.0)
  return (grad,)


_trace_sqrt_eigh.defvjp(_trace_sqrt_eigh_fwd, _trace_sqrt_eigh_bwd)


def trace_sqrt(a: jax.Array, method: str | None = None,
               iterations: int = NS_ITERATIONS) -> jax.Array:
  """tr(a^½) of symmetric PSD ``a`` (``[..., n, n]`` -> ``[...]``).

  ``method``: ``'newton_schulz'`` (``iterations``) or ``'eigh'``; default
  ``METHOD``.
  """
  method = method or METHOD
  if method == 'eigh':
    return _trace_sqrt_eigh(a, NS_SHIFT)
  if method != 'newton_schulz':
    raise ValueError(f'unknown method {method!r}; use one of {METHODS}')
  return _trace_sqrt_ns(a, iterations, NS_SHIFT)
