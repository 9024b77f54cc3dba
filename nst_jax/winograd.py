"""Winograd minimal filtering for VGG's same-padded 3x3 convolutions (CPU).

Lavin & Gray 2016, *Fast Algorithms for Convolutional Neural Networks*:
F(m×m, 3×3) computes an m×m block of outputs from an (m+2)×(m+2) block of
input with (m+2)² multiplies per channel pair instead of 9m², as one batched
matrix product between small transforms:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

per input tile d and kernel g; summed over input channels, the ⊙ becomes,
for each of the (m+2)² transform positions, a product ``[tiles, C] @ [C, K]``.
F(2, 3) has 2.25× fewer multiplies than the direct convolution, F(4, 3) 4×;
the transforms are additions (and a few small constants) fused by XLA into
one pass over the input and one over the output.

Everything is float32; F(4, 3)'s transform constants (up to 8 and 1/24)
cost accuracy: the error against ``lax.conv`` is stated and tested in
``tests/test_winograd.py`` and WORKSPACE.md. Which variant a layer uses is
:func:`nst_jax.vgg.conv3x3`'s choice (by backend and shape, measured).

Example:
  >>> y = conv3x3_same(x, w, m=4)        # x [N, H, W, C], w [3, 3, C, K]
  >>> jnp.allclose(y, lax.conv_general_dilated(x, w, (1, 1), 'SAME',
  ...     dimension_numbers=('NHWC', 'HWIO', 'NHWC')), atol=1e-3)
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

# Bᵀ, G, Aᵀ for F(2, 3) (points 0, ±1, ∞) and F(4, 3) (0, ±1, ±2, ∞).
_MATRICES = {
    2: (np.array([[1, 0, -1, 0],
                  [0, 1, 1, 0],
                  [0, -1, 1, 0],
                  [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0],
                  [1 / 2, 1 / 2, 1 / 2],
                  [1 / 2, -1 / 2, 1 / 2],
                  [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0],
                  [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0],
                  [0, -4, -4, 1, 1, 0],
                  [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0],
                  [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0],
                  [-1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6],
                  [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0],
                  [0, 1, -1, 2, -2, 0],
                  [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}
TILES = tuple(_MATRICES)                     # the output tile sides m supported


def matrices(m: int):
  """``(Bᵀ, G, Aᵀ)`` of F(m×m, 3×3) as float64 numpy arrays."""
  if m not in _MATRICES:
    raise ValueError(f'F({m}, 3) is not implemented; use m in {TILES}')
  return _MATRICES[m]


def _combine(rows, coefficients):
  """Σ_i c_i · rows[i] over the non-zero c_i (small constants, fused by XLA)."""
  out = None
  for c, r in zip(coefficients, rows):
    if c == 0:
      continue
    term = r if c == 1 else (-r if c == -1 else r * np.float32(c))
    out = term if out is None else out + term
  return out


def transform_kernel(w, m: int):
  """U = G g Gᵀ of a ``[3, 3, C, K]`` kernel: ``[(m+2)², C, K]`` (fused
  sums of the 9 taps; an einsum here lowered to transposes 10x slower)."""
  _, g, _ = matrices(m)
  rows = [_combine([w[i] for i in range(3)], g[a]) for a in range(m + 2)]     # [3, C, K]
  return jnp.stack([_combine([r[j] for j in range(3)], g[b])
                    for r in rows for b in range(m + 2)])


def conv3x3_same(x, w, m: int = 4, u=None):
  """Same-padded, stride-1 3×3 convolution of ``x`` ``[N, H, W, C]`` with
  ``w`` ``[3, 3, C, K]`` (HWIO; cross-correlation, as ``lax.conv``) by
  F(m×m, 3×3). ``u``: the kernel already transformed (:func:`transform_kernel`).

  The tiles' transforms are one contraction each with Bᵀ ⊗ Bᵀ and Aᵀ ⊗ Aᵀ
  (36 × 36 and 16 × 36 for m = 4): as fast on XLA:CPU as unrolled sums of
  the slices and ~35 % quicker to compile (measured).
  """
  bt, _, at = matrices(m)
  a = m + 2
  n, h, wd, c = x.shape
  th, tw = -(-h // m), -(-wd // m)
  # Pad by 1 (SAME) and up to whole tiles; tile (i, j) reads rows
  # m·i ... m·i + a − 1 and the same columns of the padded input.
  xp = jnp.pad(x, ((0, 0), (1, th * m + 1 - h), (1, tw * m + 1 - wd), (0, 0)))
  d = jnp.stack([xp[:, r:r + (th - 1) * m + 1:m, s:s + (tw - 1) * m + 1:m]
                 for r in range(a) for s in range(a)])                 # [a², N, th, tw, C]
  v = jnp.tensordot(jnp.asarray(np.kron(bt, bt), x.dtype), d, axes=1)  # Bᵀ d B per tile
  if u is None:
    u = transform_kernel(w, m)
  prod = jnp.matmul(v.reshape(a * a, n * th * tw, c), u.astype(x.dtype))   # [a², tiles, K]
  k = prod.shape[-1]
  y = jnp.tensordot(jnp.asarray(np.kron(at, at), x.dtype), prod, axes=1)  # Aᵀ M A
  y = jnp.transpose(y.reshape(m, m, n, th, tw, k), (2, 3, 0, 4, 1, 5))  # [N, th, m, tw, m, K]
  return y.reshape(n, th * m, tw * m, k)[:, :h, :wd]


def buffer_ratio(m: int) -> float:
  """The transformed input (and output) per pixel relative to the
  activation: (m+2)² / m² (4 for F(2, 3), 2.25 for F(4, 3))."""
  return (m + 2) ** 2 / m ** 2
