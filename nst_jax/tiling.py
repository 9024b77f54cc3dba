"""Exact tiled evaluation: the loss, its gradient and the targets of an image
of any size in the memory of one tile.

The image is cut into tiles. Each tile is evaluated in a *window*: the tile
plus a halo as wide as the receptive field radius of the deepest layer in use
(70 px for relu5_1, rounded up to its stride: 80), with window starts aligned
to the deepest stride, so that the window's pooling grids are the image's.
A feature at a position the tile *owns* (its stride block starts inside the
tile) then sees exactly the pixels it sees in the whole image, so it is
computed exactly; positions near the window's edge are not owned by it and
are ignored. Every position of every layer is owned by exactly one tile.

* Pass 1 (forward only): per window, the owned positions' contributions to
  every global statistic: Gram sums FᵀF, guided Gram sums (Tʳ∘F)ᵀ(Tʳ∘F) and
  guided mean sums per region (the content's guidance channels are sliced
  with the window), and the content term's squared errors. Summed over tiles
  they are the untiled statistics; the loss follows from them.
* Pass 2 (forward + backward): the loss is a function f of those sums, so
  its gradient is Σ_tiles J_tileᵀ ∇f: per window, the gradient of
  ⟨∇f, owned statistics of the window⟩, with ∇f held fixed, added into the
  image's gradient over the whole window (overlap-add; halos overlap).
  TV is local and cheap: computed on the whole image.

Both passes are ``lax.scan`` loops inside the compiled step
(:func:`total_loss` is a ``jax.custom_vjp``), so an L-BFGS chunk stays one
XLA computation whose activations are those of one window. Value and
gradient equal the untiled ones up to float32 summation order (tested to
1e-5 relative). With a spatial mesh axis ``'h'`` the tiles are divided among
its devices (each gathers the image, takes its share of tiles; statistics are
summed and the gradient reduce-scattered back into bands).

Cost: a value+gradient costs one more forward pass than untiled (pass 1),
plus the halo: ~(4/3) x ((T + 2h)/T)² of the untiled time for tiles of side
T (measured in WORKSPACE.md).

Example:
  >>> loss = lambda x: total_loss(x, params, targets, weights, tile=256)
  >>> value, grad = jax.value_and_grad(loss)(x)    # == untiled, in less memory
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax import losses
from nst_jax import vgg
from nst_jax.vgg import float32_precision


class AxisTiles(NamedTuple):
  """How one image axis is cut (all static)."""
  size: int        # the image's extent
  tile: int        # interior T of a tile (== size: one tile)
  window: int      # window extent, T + 2 halo + size mod align (== size: one tile)
  count: int       # number of tiles
  halo: int


class Tiling(NamedTuple):
  rows: AxisTiles
  cols: AxisTiles
  align: int       # the deepest layer's stride: window starts are multiples of it

  @property
  def count(self) -> int:
    return self.rows.count * self.cols.count

  @property
  def window_pixels(self) -> int:
    return self.rows.window * self.cols.window


def halo_and_align(layers) -> tuple[int, int]:
  """(halo, align): the deepest receptive radius rounded up to the deepest stride."""
  align = max(vgg.layer_stride(l) for l in layers)
  radius = max(vgg.receptive_radius(l) for l in layers)
  return -(-radius // align) * align, align


def axis_tiles(size: int, tile: int, halo: int, align: int) -> AxisTiles:
  t = max(align, tile // align * align)
  window = t + 2 * halo + size % align
  if tile <= 0 or window >= size:
    return AxisTiles(size, size, size, 1, 0)
  return AxisTiles(size, t, window, -(-size // t), halo)


def make_tiling(hw, tile: int, layers) -> Tiling | None:
  """The tiling of an ``hw`` image into tiles of side ``tile`` (None: one tile)."""
  if not tile or tile <= 0:
    return None
  halo, align = halo_and_align(layers)
  rows = axis_tiles(hw[0], tile, halo, align)
  cols = axis_tiles(hw[1], tile, halo, align)
  if rows.count * cols.count == 1:
    return None
  return Tiling(rows, cols, align)


def _window_start(axis: AxisTiles, i):
  return jnp.clip(i * axis.tile - axis.halo, 0, axis.size - axis.window)


def _owned(axis: AxisTiles, i, start, stride: int, length: int):
  """Bool [length]: positions of a window's layer grid that tile ``i`` owns."""
  q = start // stride + jnp.arange(length)
  first = i * axis.tile
  return (q * stride >= first) & ((q * stride < first + axis.tile) | (i == axis.count - 1))


# ---------------------------------------------------------------------------
# What a window contributes: owned statistics.
# ---------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Wanted:
  """What to sum over owned positions (full layer maps are sliced per window)."""
  content: dict = dataclasses.field(default_factory=dict)   # layer -> P: Σ (F - P)²
  guided: dict = dataclasses.field(default_factory=dict)    # layer -> T [H_l, W_l, R]:
  #                                            Σ (T∘F)ᵀ(T∘F) [R,C,C] (or Σ T∘F [R,C])
  grams: tuple = dataclasses.field(default=(), metadata=dict(static=True))  # Σ FᵀF
  statistic: str = dataclasses.field(default='gram', metadata=dict(static=True))

  @classmethod
  def of(cls, targets) -> 'Wanted':
    return cls({k: t.value for k, t in targets.content.items()},
               {k: t.guidance for k, t in targets.guided.items()},
               tuple(targets.style), targets.statistic)


def _slice_map(full, r0, c0, h, w):
  """The [h, w, ...] part of a full layer map at a window's position."""
  return lax.dynamic_slice(full, (r0, c0) + (0,) * (full.ndim - 2),
                           (h, w) + full.shape[2:])


def window_stats(feats: dict, own: dict, corner: dict, wanted: Wanted) -> dict:
  """Owned sums of one window: ``{'content': {l: Σ(F-P)²}, 'grams': {l: FᵀF},
  'guided': {l: [R,C,C] or [R,C]}}``."""
  prec = float32_precision()
  out = {'content': {}, 'grams': {}, 'guided': {}}
  for name, target in wanted.content.items():
    f = feats[name]
    d = (f - _slice_map(target, *corner[name], *f.shape[:2])) * own[name][..., None]
    out['content'][name] = jnp.sum(d * d)
  for name in wanted.grams:
    f = feats[name] * own[name][..., None]
    out['grams'][name] = jnp.einsum('hwc,hwd->cd', f, f, precision=prec)
  for name, guidance in wanted.guided.items():
    f = feats[name]
    g = _slice_map(guidance, *corner[name], *f.shape[:2]) * own[name][..., None]
    if wanted.statistic == 'gram':
      tf = g[..., :, None] * f[..., None, :]
      out['guided'][name] = jnp.einsum('hwrc,hwrd->rcd', tf, tf, precision=prec)
    else:
      out['guided'][name] = jnp.einsum('hwr,hwc->rc', g, f, precision=prec)
  return out


def layer_positions(hw, name) -> int:
  """M_l: positions of layer ``name``'s grid for an ``hw`` image."""
  s = vgg.layer_stride(name)
  return (hw[0] // s) * (hw[1] // s)


def loss_from_stats(stats, targets, weights, hw) -> dict:
  """The loss terms (content, style; no tv) from the whole image's sums."""
  content = jnp.zeros((), jnp.float32)
  for name, t in targets.content.items():
    content = content + t.scale * stats['content'][name]
  style = jnp.zeros((), jnp.float32)
  for name, t in targets.style.items():
    d = stats['grams'][name] / layer_positions(hw, name) - t.value
    style = style + t.scale * jnp.sum(d * d)
  for name, t in targets.guided.items():
    d = stats['guided'][name] / layer_positions(hw, name) - t.value
    style = style + jnp.sum(t.scale * jnp.sum(d.reshape(d.shape[0], -1) ** 2, axis=1))
  return {'content': weights.content * content, 'style': weights.style * style}


# ---------------------------------------------------------------------------
# The window loop.
# ---------------------------------------------------------------------------


def _window_geometry(tiling: Tiling, index, layers):
  """Window corner in the image, per layer its ownership mask and corner."""
  i, j = index // tiling.cols.count, index % tiling.cols.count
  r0, c0 = _window_start(tiling.rows, i), _window_start(tiling.cols, j)
  own, corner = {}, {}
  for name in layers:
    s = vgg.layer_stride(name)
    h, w = tiling.rows.window // s, tiling.cols.window // s
    own[name] = (_owned(tiling.rows, i, r0, s, h)[:, None] &
                 _owned(tiling.cols, j, c0, s, w)[None, :]).astype(jnp.float32)
    corner[name] = (r0 // s, c0 // s)
  return r0, c0, own, corner


def _tile_indices(tiling: Tiling, axis: str | None):
  """The flat tile indices this device handles (all, or its share over ``axis``).

  Indices past the last tile are padding: they own nothing.
  """
  if axis is None:
    return jnp.arange(tiling.count)
  per = -(-tiling.count // lax.axis_size(axis))
  return lax.axis_index(axis) * per + jnp.arange(per)


def _each_window(image, tiling: Tiling, layers, axis, fn, init):
  """``carry = fn(carry, window, own, corner, (r0, c0))`` over this device's windows."""
  def body(carry, index):
    valid = (index < tiling.count).astype(jnp.float32)
    r0, c0, own, corner = _window_geometry(tiling, jnp.minimum(index, tiling.count - 1),
                                           layers)
    own = {k: v * valid for k, v in own.items()}
    window = lax.dynamic_slice(image, (r0, c0, 0),
                               (tiling.rows.window, tiling.cols.window, image.shape[-1]))
    return fn(carry, window, own, corner, (r0, c0)), None
  carry, _ = lax.scan(body, init, _tile_indices(tiling, axis))
  return carry


def _zeros_like_output(fn, *args):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *args))


def sums(params, image, wanted: Wanted, tiling: Tiling, pooling: str = 'max',
         axis: str | None = None, **vgg_options) -> dict:
  """Pass 1 (forward only): :func:`window_stats` summed over every tile."""
  layers = tuple(dict.fromkeys((*wanted.content, *wanted.grams, *wanted.guided)))

  def stats(window, own, corner):
    feats = vgg.vgg_features(params, window, layers, pooling, **vgg_options)
    return window_stats(feats, own, corner, wanted)

  def fn(total, window, own, corner, _):
    return jax.tree.map(jnp.add, total, stats(window, own, corner))

  r0, c0, own, corner = _window_geometry(tiling, 0, layers)
  zero = _zeros_like_output(
      stats, jax.ShapeDtypeStruct((tiling.rows.window, tiling.cols.window, image.shape[-1]),
                                  image.dtype), own, corner)
  total = _each_window(image, tiling, layers, axis, fn, zero)
  return lax.psum(total, axis) if axis is not None else total


def features(params, image, layers, tiling: Tiling, pooling: str = 'max',
             **vgg_options) -> dict:
  """Full feature maps of ``image`` assembled from the tiles' owned positions
  (forward only; exact). For content targets of images too big to run whole."""
  hw = image.shape[:2]
  layers = tuple(layers)

  def fn(maps, window, own, corner, _):
    feats = vgg.vgg_features(params, window, layers, pooling, **vgg_options)
    out = {}
    for name, f in feats.items():
      start = (*corner[name], 0)
      current = lax.dynamic_slice(maps[name], start, f.shape)
      out[name] = lax.dynamic_update_slice(maps[name],
                                           current + f * own[name][..., None], start)
    return out

  init = {l: jnp.zeros((hw[0] // vgg.layer_stride(l), hw[1] // vgg.layer_stride(l),
                        vgg.layer_channels(l)), jnp.float32) for l in layers}
  return _each_window(image, tiling, layers, None, fn, init)


def _grad_pass(image, params, targets, cotangent, tiling, vgg_options, axis):
  """Pass 2: Σ_tiles of the gradient of ⟨cotangent, owned sums of the window⟩."""
  layers = targets.layers
  wanted = Wanted.of(targets)

  def fn(grad, window, own, corner, origin):
    def linear(w):
      feats = vgg.vgg_features(params, w, layers, targets.pooling, **vgg_options)
      stats = window_stats(feats, own, corner, wanted)
      return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(cotangent),
                                                 jax.tree.leaves(stats)))
    g = jax.grad(linear)(window)
    start = (*origin, 0)
    return lax.dynamic_update_slice(grad, lax.dynamic_slice(grad, start, g.shape) + g,
                                    start)

  return _each_window(image, tiling, layers, axis, fn, jnp.zeros_like(image))


# ---------------------------------------------------------------------------
# The tiled loss: value from pass 1, gradient from pass 2 (custom VJP).
# ---------------------------------------------------------------------------


def _on_bands(fn, mesh, out_spec):
  """``fn(image, *rest, axis)`` with the image in row bands over the mesh axis
  ``'h'``: every device gathers the whole image and takes its share of the
  tiles (``fn`` sums its statistics over the axis, or scatters its gradient
  back into bands). Without such a mesh: ``fn(image, *rest, None)``."""
  if mesh is None or mesh.shape.get('h', 1) == 1:
    return lambda image, *rest: fn(image, *rest, None)
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  def local(band, *rest):
    return fn(lax.all_gather(band, 'h', axis=0, tiled=True), *rest, 'h')
  return lambda image, *rest: jax.shard_map(
      local, mesh=mesh, in_specs=(P('h'),) + (P(),) * len(rest), out_specs=out_spec,
      axis_names={'h'}, check_vma=False)(image, *rest)


def _stats(image, params, targets, tiling, vgg_options, mesh):
  def fn(image, params, wanted, axis):
    return sums(params, image, wanted, tiling, targets.pooling, axis, **vgg_options)
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  return _on_bands(fn, mesh, P())(image, params, Wanted.of(targets))


def loss_terms(params, image, targets, weights, tile: int, mesh=None,
               **vgg_options) -> dict:
  """Like :func:`nst_jax.loss_terms`, evaluated in tiles of side ``tile``
  (``mesh``: a mesh whose axis ``'h'`` holds the image in bands)."""
  tiling = make_tiling(image.shape[:2], tile, targets.layers)
  if tiling is None:
    from nst_jax import objective  # pylint: disable=g-import-not-at-top
    return objective.loss_terms(params, image, targets, weights, 0, **vgg_options)
  stats = _stats(image, params, targets, tiling, vgg_options, mesh)
  terms = loss_from_stats(stats, targets, weights, image.shape[:2])
  terms['tv'] = weights.tv * losses.total_variation(image)
  terms['total'] = terms['content'] + terms['style'] + terms['tv']
  return terms


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _tiled_loss(pixels, params, targets, weights, tiling, vgg_options, mesh):
  return _tiled_fwd(pixels, params, targets, weights, tiling, vgg_options, mesh)[0]


def _image(pixels):
  from nst_jax.objective import pixels_to_image  # pylint: disable=g-import-not-at-top
  return pixels_to_image(pixels)


def _tiled_fwd(pixels, params, targets, weights, tiling, vgg_options, mesh):
  image = _image(pixels)
  stats = _stats(image, params, targets, tiling, dict(vgg_options), mesh)
  terms = loss_from_stats(stats, targets, weights, image.shape[:2])
  value = terms['content'] + terms['style'] + weights.tv * losses.total_variation(image)
  return value, (pixels, params, targets, weights, stats)


def _tiled_bwd(tiling, vgg_options, mesh, residuals, g):
  pixels, params, targets, weights, stats = residuals
  image, image_vjp = jax.vjp(_image, pixels)
  hw = image.shape[:2]
  cotangent = jax.grad(lambda s: sum(loss_from_stats(s, targets, weights, hw).values()))(
      stats)
  cotangent = jax.tree.map(lambda c: c * g, cotangent)

  def fn(image, params, targets, cotangent, axis):
    grad = _grad_pass(image, params, targets, cotangent, tiling, dict(vgg_options), axis)
    if axis is None:
      return grad
    # This device's tiles only: sum over the devices, each keeping its band.
    return lax.psum_scatter(grad, axis, scatter_dimension=0, tiled=True)

  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  grad = _on_bands(fn, mesh, P('h'))(image, params, targets, cotangent)
  grad = grad + g * jax.grad(lambda x: weights.tv * losses.total_variation(x))(image)
  zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
  return (image_vjp(grad)[0], zeros(params), zeros(targets), zeros(weights))


_tiled_loss.defvjp(_tiled_fwd, _tiled_bwd)


def total_loss(pixels, params, targets, weights, tile: int, mesh=None, **vgg_options):
  """:func:`nst_jax.total_loss` evaluated in tiles of side ``tile`` (same value
  and gradient; memory of one window). ``mesh``: a device mesh whose axis
  ``'h'`` holds the image in bands; its devices share the tiles. One tile:
  the untiled loss."""
  tiling = make_tiling(pixels.shape[:2], tile, targets.layers)
  if tiling is None:
    from nst_jax import objective  # pylint: disable=g-import-not-at-top
    return objective.total_loss(pixels, params, targets, weights, 0, **vgg_options)
  return _tiled_loss(pixels, params, targets, weights, tiling,
                     tuple(sorted(vgg_options.items())), mesh)
