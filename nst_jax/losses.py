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

from nst_jax import vgg
from nst_jax.errors import NSTError
from nst_jax.vgg import float32_precision

NORMALIZATIONS = ('relative', 'gatys')
STATISTICS = ('gram', 'mean')     # what guided targets compare


# ---------------------------------------------------------------------------
# Statistics of features.
# ---------------------------------------------------------------------------


def _gram_sum(f: jax.Array) -> jax.Array:
  """Σ FᵀF over the positions of ``[..., h, w, C]`` -> ``[..., C, C]``."""
  f = f.reshape(f.shape[:-3] + (-1, f.shape[-1])).astype(jnp.float32)
  return jnp.einsum('...mc,...md->...cd', f, f, precision=float32_precision())


def _guided_sum(f: jax.Array, t: jax.Array, statistic: str) -> jax.Array:
  """Σ (Tʳ∘F)ᵀ(Tʳ∘F) ``[R, C, C]`` (or Σ Tʳ∘F ``[R, C]``) of ``[h,w,C]`` x ``[h,w,R]``."""
  f = f.astype(jnp.float32)
  if statistic == 'gram':
    tf = t[..., :, None] * f[..., None, :]                   # [h, w, R, C]
    return jnp.einsum('hwrc,hwrd->rcd', tf, tf, precision=float32_precision())
  return jnp.einsum('hwr,hwc->rc', t, f, precision=float32_precision())


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
    guided: ``{layer: T [h, w, R]}``: Σ (Tʳ∘F)ᵀ(Tʳ∘F) ``[R,C,C]`` (or Σ Tʳ∘F
      ``[R,C]`` with ``statistic='mean'``); T the full layer map.
    grams: static: layers whose Σ FᵀF is wanted.
    maps: static: layers whose feature maps themselves are wanted.
    statistic: static: what ``guided`` sums, ``'gram'`` or ``'mean'``.
  """
  content: dict = dataclasses.field(default_factory=dict)
  guided: dict = dataclasses.field(default_factory=dict)
  grams: tuple = dataclasses.field(default=(), metadata=dict(static=True))
  maps: tuple = dataclasses.field(default=(), metadata=dict(static=True))
  statistic: str = dataclasses.field(default='gram', metadata=dict(static=True))

  @property
  def layers(self) -> tuple[str, ...]:
    """Every layer the sums need, in first-use order."""
    return tuple(dict.fromkeys((*self.content, *self.grams, *self.guided, *self.maps)))

  @classmethod
  def of(cls, targets) -> 'Wanted':
    """What the loss against ``targets`` (:class:`nst_jax.Targets`) needs."""
    return cls({k: t.value for k, t in targets.content.items()},
               {k: t.guidance for k, t in targets.guided.items()},
               tuple(targets.style), (), targets.statistic)


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

  out = {'content': {}, 'grams': {}, 'guided': {}, 'maps': {}}
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
    d = sums['grams'][name] / positions[name] - t.value
    style = style + t.scale * jnp.sum(d * d)
  for name, t in targets.guided.items():
    d = sums['guided'][name] / positions[name] - t.value
    style = style + jnp.sum(t.scale * jnp.sum(d.reshape(d.shape[0], -1) ** 2, axis=1))
  return {'content': content, 'style': style}


# ---------------------------------------------------------------------------
# Targets and losses.
# ---------------------------------------------------------------------------


class Target(NamedTuple):
  """A per-layer target and the scale its squared error is multiplied by."""
  value: jax.Array   # P_l (content) or A_l (style Gram)
  scale: jax.Array   # s_l, already multiplied by the layer weight


class GuidedTarget(NamedTuple):
  """Per-region targets at one layer for spatial control (Gatys et al. 2017)."""
  value: jax.Array      # [R, C, C] guided Grams, or [R, C] guided means
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
                  normalization: str = 'relative') -> dict[str, Target]:
  """Blended style targets A_l = Σ_s b_s A_l,s with scales w_l·s_s,l.

  Args:
    grams_per_style: one ``{layer: Gram}`` per style image.
    blend: blend weights b_s, already normalised to sum to 1.
    layer_weights: w_l per style layer, already normalised to sum to 1.
    normalization: ``'relative'`` or ``'gatys'`` (see module docstring).
  """
  _check_normalization(normalization)
  out = {}
  for name, weight in layer_weights.items():
    a = sum(b * g[name] for b, g in zip(blend, grams_per_style))
    if normalization == 'relative':
      s = safe_inverse(jnp.sum(a * a))
    else:
      s = jnp.asarray(1.0 / (4.0 * a.shape[-1] ** 2), jnp.float32)
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
  """L_s = Σ_l scale_l · Σ (G_l − A_l)² with G_l = gram(F_l)."""
  sums = position_sums(features, Wanted(grams=tuple(targets)))
  return loss_from_sums(sums, _Targets(style=targets), _positions(features))['style']


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
