"""Statistics of VGG features and the style-transfer losses, as pure functions.

Notation (Gatys et al. 2016): F_l is the [M_l, N_l] matrix of layer l's
activations of the image being optimised (M_l = h*w positions, N_l channels),
P_l the content image's, A_l the style target's Gram matrix.

  gram:          G_l = F_lᵀ F_l / M_l                       (mean over positions)
  content loss:  L_c = Σ_l v_l · s_c,l · Σ (F_l − P_l)²
  style loss:    L_s = Σ_l w_l · s_s,l · Σ (G_l − A_l)²
  TV:            L_tv = mean (x[i+1,j] − x[i,j])² + mean (x[i,j+1] − x[i,j])²
  total:         α L_c + β L_s + γ L_tv,   Σ v_l = Σ w_l = 1

The normalisers s depend on ``normalization``:

* ``'relative'`` (default): s_c = 1 / Σ P_l², s_s = 1 / Σ A_l². Every layer's
  term is a relative squared error, so no layer dominates because its
  activations happen to be large, and the same α/β works at any resolution and
  for any number of layers. With α = 1, β = 1e4 … 1e5 the style is strong and
  the content recognisable.
* ``'gatys'``: s_c = 1 / (2 M_l N_l), s_s = 1 / (4 N_l²) — exactly eq. 4 of
  Gatys et al. 2016 once G is divided by M_l, and their content loss divided by
  M_l N_l (so it too is resolution-independent). Layer magnitudes then differ
  by ~10⁵ (relu4_1 dominates) and α/β needs tuning per layer set.

Several style images with blend weights b_s (Σ b_s = 1) use the blended target
A_l = Σ_s b_s A_l,s: Σ_s b_s‖G − A_s‖² = ‖G − Σ_s b_s A_s‖² + const, so the
gradient is that of the per-style sum, at the cost of one Gram comparison.

**Position sums.** Every statistic a loss compares is a sum over a layer's
positions (Σ FᵀF, Σ (Tʳ∘F)ᵀ(Tʳ∘F), Σ Tʳ∘F, the content's Σ (F − P)²), and a
loss is a function of those sums: :func:`position_sums` (what
:class:`Wanted` asks for) then :func:`loss_from_sums`. That one definition
serves the whole image and the tiles of :mod:`nst_jax.tiling` (whose sums
over owned positions add up to the image's), so a new statistic is added
here once — its sum in :func:`position_sums`, its distance in
:func:`loss_from_sums` — for both paths.

Example:
  >>> f = jnp.ones((4, 4, 2))
  >>> nst_jax.gram(f)
  Array([[1., 1.], [1., 1.]], dtype=float32)
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax import linalg
from nst_jax import vgg
from nst_jax.errors import NSTError
from nst_jax.vgg import float32_precision

NORMALIZATIONS = ('relative', 'gatys')
STYLE_STATISTICS = ('gram', 'w2')        # what style targets compare
STATISTICS = ('gram', 'mean', 'w2')      # what guided targets compare
W2_EPS = 1e-5       # Σ + ε I, ε = W2_EPS · tr(Σ_s) / N: keeps the square roots finite


# ---------------------------------------------------------------------------
# Statistics of features.
# ---------------------------------------------------------------------------


def _gram_sum(f: jax.Array) -> jax.Array:
  """Σ FᵀF over the positions of ``[..., h, w, C]`` -> ``[..., C, C]``."""
  f = f.reshape(f.shape[:-3] + (-1, f.shape[-1])).astype(jnp.float32)
  return jnp.einsum('...mc,...md->...cd', f, f, precision=float32_precision())


def _guided_sum(f: jax.Array, t: jax.Array, statistic: str):
  """Σ (Tʳ∘F)ᵀ(Tʳ∘F) ``[R, C, C]`` (``'gram'``), Σ Tʳ∘F ``[R, C]`` (``'mean'``),
  or both moments of the distribution weighted by (Tʳ)²: (Σ (Tʳ∘F)ᵀ(Tʳ∘F),
  Σ (Tʳ)² F) (``'w2'``), of ``[h,w,C]`` x ``[h,w,R]``."""
  f = f.astype(jnp.float32)
  if statistic == 'mean':
    return jnp.einsum('hwr,hwc->rc', t, f, precision=float32_precision())
  tf = t[..., :, None] * f[..., None, :]                     # [h, w, R, C]
  second = jnp.einsum('hwrc,hwrd->rcd', tf, tf, precision=float32_precision())
  if statistic == 'w2':
    return second, jnp.einsum('hwr,hwc->rc', t * t, f, precision=float32_precision())
  return second


def gram(features: jax.Array) -> jax.Array:
  """Gram matrix FᵀF / (h·w) of ``[..., h, w, C]`` features -> ``[..., C, C]``."""
  return _gram_sum(features) / (features.shape[-3] * features.shape[-2])


def guided_gram(features: jax.Array, guidance: jax.Array) -> jax.Array:
  """Gʳ = (Tʳ∘F)ᵀ(Tʳ∘F) / (h·w) for every region: ``[h,w,C] x [h,w,R] -> [R,C,C]``."""
  return _guided_sum(features, guidance, 'gram') / (features.shape[0] * features.shape[1])


def guided_mean(features: jax.Array, guidance: jax.Array) -> jax.Array:
  """Per-region mean of Tʳ∘F: ``[h,w,C] x [h,w,R] -> [R, C]``."""
  return _guided_sum(features, guidance, 'mean') / (features.shape[0] * features.shape[1])


def layer_positions(hw, name: str) -> int:
  """M_l: positions of layer ``name``'s grid for an ``hw`` image."""
  s = vgg.layer_stride(name)
  return (hw[0] // s) * (hw[1] // s)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Wanted:
  """What :func:`position_sums` sums over a layer's positions.

  Attributes:
    content: ``{layer: P}``: Σ (F − P)² (P the full layer map).
    guided: ``{layer: T [h, w, R]}``: the guided sums of ``statistic``
      (see :func:`_guided_sum`); T the full layer map.
    grams: static: layers whose Σ FᵀF is wanted.
    maps: static: layers whose feature maps themselves are wanted.
    statistic: static: what ``guided`` sums, ``'gram'``, ``'mean'`` or ``'w2'``.
    means: static: layers whose Σ F is wanted.
  """
  content: dict = dataclasses.field(default_factory=dict)
  guided: dict = dataclasses.field(default_factory=dict)
  grams: tuple = dataclasses.field(default=(), metadata=dict(static=True))
  maps: tuple = dataclasses.field(default=(), metadata=dict(static=True))
  statistic: str = dataclasses.field(default='gram', metadata=dict(static=True))
  means: tuple = dataclasses.field(default=(), metadata=dict(static=True))

  @property
  def layers(self) -> tuple[str, ...]:
    """Every layer the sums need, in first-use order."""
    return tuple(dict.fromkeys((*self.content, *self.grams, *self.guided, *self.maps,
                                *self.means)))

  @classmethod
  def of(cls, targets) -> 'Wanted':
    """What the loss against ``targets`` (:class:`nst_jax.Targets`) needs."""
    return cls({k: t.value for k, t in targets.content.items()},
               {k: t.guidance for k, t in targets.guided.items()},
               tuple(targets.style), (), targets.statistic,
               tuple(k for k, t in targets.style.items() if isinstance(t.value, W2Target)))


def _part(full, corner, hw):
  """The ``hw`` part of a full layer map at ``corner`` (None: all of it)."""
  if corner is None:
    return full
  return lax.dynamic_slice(full, (*corner, *(0,) * (full.ndim - 2)),
                           (*hw, *full.shape[2:]))


def position_sums(feats: Mapping[str, jax.Array], wanted: Wanted, own=None,
                  corner=None) -> dict:
  """The sums ``wanted`` asks for, over the positions of ``feats``.

  Returns ``{'content': {l: Σ(F-P)²}, 'grams': {l: Σ FᵀF}, 'guided': {l: ...},
  'maps': {l: F}}``. ``own`` (``{layer: [h, w]}`` 0/1) and ``corner``
  (``{layer: (row, col)}`` of ``feats`` in the full layer grid) restrict the
  sums to the positions a tile owns (:mod:`nst_jax.tiling`); by default
  ``feats`` are the whole image's.
  """
  def owned(name):
    f = feats[name].astype(jnp.float32)
    return f if own is None else f * own[name][..., None]

  def at(name):
    return None if corner is None else corner[name]

  out = {'content': {}, 'grams': {}, 'guided': {}, 'maps': {}, 'means': {}}
  for name, p in wanted.content.items():
    f = feats[name].astype(jnp.float32)
    d = f - _part(p, at(name), f.shape[:2])
    d = d if own is None else d * own[name][..., None]
    out['content'][name] = jnp.sum(d * d)
  for name in wanted.grams:
    out['grams'][name] = _gram_sum(owned(name))
  for name, t in wanted.guided.items():
    t = _part(t, at(name), feats[name].shape[:2])
    t = t if own is None else t * own[name][..., None]
    out['guided'][name] = _guided_sum(feats[name], t, wanted.statistic)
  for name in wanted.maps:
    out['maps'][name] = owned(name)
  for name in wanted.means:
    out['means'][name] = jnp.sum(owned(name), axis=(0, 1))
  return out


def loss_from_sums(sums: dict, targets, positions: Mapping[str, int]) -> dict:
  """``{'content': L_c, 'style': L_s}`` (unweighted; guided terms included in
  L_s) from an image's :func:`position_sums`.

  ``targets``: anything with ``content``/``style`` ``{layer: Target}`` and
  ``guided`` ``{layer: GuidedTarget}`` (:class:`nst_jax.Targets`);
  ``positions``: M_l per layer (:func:`layer_positions`).
  """
  content = jnp.zeros((), jnp.float32)
  for name, t in targets.content.items():
    content = content + t.scale * sums['content'][name]
  style = jnp.zeros((), jnp.float32)
  for name, t in targets.style.items():
    m = positions[name]
    if isinstance(t.value, W2Target):
      d = w2_distance(sums['means'][name] / m, sums['grams'][name] / m, t.value)
    else:
      d = sums['grams'][name] / m - t.value
      d = jnp.sum(d * d)
    style = style + t.scale * d
  for name, t in targets.guided.items():
    m = positions[name]
    if isinstance(t.value, W2Target):
      second, first = sums['guided'][name]
      per_region = w2_distance(first / m, second / m, t.value)
    else:
      d = sums['guided'][name] / m - t.value
      per_region = jnp.sum(d.reshape(d.shape[0], -1) ** 2, axis=1)
    style = style + jnp.sum(t.scale * per_region)
  return {'content': content, 'style': style}


# ---------------------------------------------------------------------------
# The Wasserstein-2 statistic.
# ---------------------------------------------------------------------------


class W2Target(NamedTuple):
  """A style layer's feature distribution as a Gaussian (μ_s, Σ_s + εI);
  every field has a leading ``[R]`` axis for guided regions."""
  mean: jax.Array        # μ_s [C]
  cov_sqrt: jax.Array    # (Σ_s + εI)^½ [C, C]
  cov_trace: jax.Array   # tr(Σ_s + εI)
  eps: jax.Array         # ε, added to the optimised image's Σ too


def _sym(a):
  return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _covariance(mean, second):
  """Σ = S − μμᵀ from the first and second moments (``[..., C]``, ``[..., C, C]``)."""
  return _sym(second - mean[..., :, None] * mean[..., None, :])


def w2_target(mean: jax.Array, second: jax.Array) -> W2Target:
  """The target of a style layer from its moments μ_s = ΣF/M and S_s = ΣFᵀF/M.

  Σ_s^½ is computed once here (``eigh``; not differentiated); the loss's own
  square root, of a matrix that changes every step, is
  :func:`nst_jax.linalg.trace_sqrt` (Newton–Schulz).
  """
  cov = _covariance(mean, second)
  n = cov.shape[-1]
  eps = W2_EPS * jnp.trace(cov, axis1=-2, axis2=-1) / n
  cov = cov + eps[..., None, None] * jnp.eye(n, dtype=cov.dtype)
  w, v = jnp.linalg.eigh(cov)
  root = jnp.einsum('...ij,...j,...kj->...ik', v, jnp.sqrt(jnp.maximum(w, 0.0)), v,
                    precision=float32_precision())
  return W2Target(mean, _sym(root), jnp.trace(cov, axis1=-2, axis2=-1), eps)


def w2_distance(mean: jax.Array, second: jax.Array, target: W2Target,
                method: str | None = None) -> jax.Array:
  """Squared 2-Wasserstein distance between N(μ, Σ + εI) and the target's
  Gaussian: ‖μ − μ_s‖² + tr(Σ + εI) + tr(Σ_s + εI) − 2 tr((Σ_s^½ (Σ + εI) Σ_s^½)^½),
  with Σ = S − μμᵀ from the moments μ, S (leading axes: regions). ``method``:
  how tr(·^½) is computed (:func:`nst_jax.linalg.trace_sqrt`)."""
  n = mean.shape[-1]
  cov = _covariance(mean, second) + target.eps[..., None, None] * jnp.eye(n, dtype=mean.dtype)
  r = target.cov_sqrt
  prec = float32_precision()
  m = _sym(jnp.matmul(jnp.matmul(r, cov, precision=prec), r, precision=prec))
  dm = mean - target.mean
  return (jnp.sum(dm * dm, axis=-1) + jnp.trace(cov, axis1=-2, axis2=-1)
          + target.cov_trace - 2.0 * linalg.trace_sqrt(m, method))


def relative_scale(value) -> jax.Array:
  """``'relative'`` normalisation of one style statistic: 1/Σ A² for a Gram
  (or a guided mean), 1/(‖μ_s‖² + tr Σ_s) = 1/W2²(target, δ₀) for a
  :class:`W2Target`: either way the term starts at O(1)."""
  if isinstance(value, W2Target):
    return safe_inverse(jnp.sum(value.mean * value.mean) + value.cov_trace)
  return safe_inverse(jnp.sum(value * value))


def gatys_scale(value) -> float:
  """``'gatys'`` normalisation: 1/(4 N²) for a Gram (eq. 4), 1/N for W2 (a
  sum over N dimensions)."""
  if isinstance(value, W2Target):
    return 1.0 / value.mean.shape[-1]
  return 1.0 / (4.0 * value.shape[-1] ** 2)


# ---------------------------------------------------------------------------
# Targets and losses.
# ---------------------------------------------------------------------------


class Target(NamedTuple):
  """A per-layer target and the scale its squared error is multiplied by."""
  value: jax.Array   # P_l (content), A_l (style Gram) or a W2Target
  scale: jax.Array   # s_l, already multiplied by the layer weight


class GuidedTarget(NamedTuple):
  """Per-region targets at one layer for spatial control (Gatys et al. 2017)."""
  value: jax.Array      # [R, C, C] guided Grams, [R, C] guided means, or a
  #                       W2Target with a leading [R]
  scale: jax.Array      # [R]: λ_r · w_l · s_l,r (0 for skipped regions)
  guidance: jax.Array   # [h, w, R]: the *content's* guidance channels


def _check_normalization(normalization):
  if normalization not in NORMALIZATIONS:
    raise NSTError(f'unknown loss normalization {normalization!r}; use one of '
                   f'{NORMALIZATIONS}')


def safe_inverse(x):
  return jnp.where(x > 0, 1.0 / jnp.where(x > 0, x, 1.0), 0.0)


def content_targets(features: Mapping[str, jax.Array],
                    layer_weights: Mapping[str, float],
                    normalization: str = 'relative') -> dict[str, Target]:
  """Content targets P_l with their scales v_l·s_c,l."""
  _check_normalization(normalization)
  out = {}
  for name, weight in layer_weights.items():
    p = features[name].astype(jnp.float32)
    if normalization == 'relative':
      s = safe_inverse(jnp.sum(p * p))
    else:
      s = jnp.asarray(1.0 / (2.0 * p.size), jnp.float32)
    out[name] = Target(p, weight * s)
  return out


def style_targets(grams_per_style: list[Mapping[str, jax.Array]],
                  blend: list[float] | jax.Array,
                  layer_weights: Mapping[str, float],
                  normalization: str = 'relative',
                  means_per_style: list[Mapping[str, jax.Array]] | None = None
                  ) -> dict[str, Target]:
  """Blended style targets A_l = Σ_s b_s A_l,s with scales w_l·s_s,l.

  Args:
    grams_per_style: one ``{layer: Gram}`` per style image.
    blend: blend weights b_s, already normalised to sum to 1.
    layer_weights: w_l per style layer, already normalised to sum to 1.
    normalization: ``'relative'`` or ``'gatys'`` (see module docstring).
    means_per_style: one ``{layer: mean feature}`` per style image: the
      targets are then :class:`W2Target` Gaussians of the blended moments
      (μ = Σ b_s μ_s, S = Σ b_s S_s: the blend of the styles' distributions,
      not of their covariances).
  """
  _check_normalization(normalization)
  out = {}
  for name, weight in layer_weights.items():
    a = sum(b * g[name] for b, g in zip(blend, grams_per_style))
    if means_per_style is not None:
      a = w2_target(sum(b * m[name] for b, m in zip(blend, means_per_style)), a)
    s = (relative_scale(a) if normalization == 'relative'
         else jnp.asarray(gatys_scale(a), jnp.float32))
    out[name] = Target(a, weight * s)
  return out


def _positions(features: Mapping[str, jax.Array]) -> dict[str, int]:
  return {k: f.shape[0] * f.shape[1] for k, f in features.items()}


def content_loss(features: Mapping[str, jax.Array],
                 targets: Mapping[str, Target]) -> jax.Array:
  """L_c = Σ_l scale_l · Σ (F_l − P_l)² (whole feature maps)."""
  sums = position_sums(features, Wanted(content={k: t.value for k, t in targets.items()}))
  return loss_from_sums(sums, _Targets(content=targets), _positions(features))['content']


def style_loss(features: Mapping[str, jax.Array],
               targets: Mapping[str, Target]) -> jax.Array:
  """L_s = Σ_l scale_l · Σ (G_l − A_l)² with G_l = gram(F_l) (or, for
  :class:`W2Target` targets, Σ_l scale_l · W2²)."""
  t = _Targets(style=targets)
  sums = position_sums(features, Wanted.of(t))      # W2 targets need the means too
  return loss_from_sums(sums, t, _positions(features))['style']


def guided_style_loss(features: Mapping[str, jax.Array],
                      targets: Mapping[str, GuidedTarget],
                      statistic: str = 'gram') -> jax.Array:
  """Σ_l Σ_r scale_l,r · Σ (Gʳ_l − Aʳ_l)² with guided Grams (or guided means)."""
  t = _Targets(guided=targets, statistic=statistic)
  sums = position_sums(features, Wanted.of(t))
  return loss_from_sums(sums, t, _positions(features))['style']


class _Targets(NamedTuple):
  """The parts of :class:`nst_jax.Targets` the losses read (for the helpers above)."""
  content: dict = {}
  style: dict = {}
  guided: dict = {}
  statistic: str = 'gram'


def total_variation(image: jax.Array) -> jax.Array:
  """Mean squared difference between vertical and horizontal neighbours."""
  dy = image[..., 1:, :, :] - image[..., :-1, :, :]
  dx = image[..., :, 1:, :] - image[..., :, :-1, :]
  return jnp.mean(dy * dy) + jnp.mean(dx * dx)
