"""Exact tiled evaluation: the position sums behind the loss, its gradient and
the targets of an image of any size, in the memory of one tile.

The image is cut into tiles. Each tile is evaluated in a *window*: the tile
plus a halo as wide as the receptive field radius of the deepest layer in use
(70 px for relu5_1, rounded up to its stride: 80), with window starts aligned
to the deepest stride, so that the window's pooling grids are the image's.
A feature at a position the tile *owns* (its stride block starts inside the
tile) then sees exactly the pixels it sees in the whole image, so it is
computed exactly; positions near the window's edge are not owned by it and
are ignored. Every position of every layer is owned by exactly one tile.

Every statistic the losses compare is a sum over positions
(:func:`nst_jax.losses.position_sums`), so the image's sums are the sum of
the tiles' sums over their owned positions. :func:`sums` computes them and
is a ``jax.custom_vjp`` of the image:

* Pass 1 (forward only): per window, :func:`~nst_jax.losses.position_sums`
  of its owned positions (the full content/guidance maps are sliced with the
  window), added up over the tiles; feature maps (``Wanted.maps``, for
  content targets) are assembled from the owned positions.
* Pass 2 (backward: forward + backward per window): given the cotangent c of
  the sums (whatever function of them is differentiated), the image's
  gradient is Σ_tiles J_tileᵀ c: per window, the gradient of ⟨c, owned sums
  of the window⟩, added into the image's gradient over the whole window
  (overlap-add; halos overlap).

The loss itself (:func:`nst_jax.losses.loss_from_sums`), the clip to [0, 1],
the grey-to-RGB of luminance runs and TV are outside, differentiated by
autodiff as on the untiled path: :mod:`nst_jax.objective` chooses tiled or
untiled sums in one place and computes the same loss from either. Both
passes are ``lax.scan`` loops inside the compiled step, so an L-BFGS chunk
stays one XLA computation whose activations are those of one window. Value
and gradient equal the untiled ones up to float32 summation order (tested to
1e-5 relative for Grams; W2's square roots amplify the summation order
to ~2e-5 of the gradient). With a spatial mesh axis ``'h'`` the tiles are divided among
its devices (each gathers the image, takes its share of tiles; sums are
summed and the gradient reduce-scattered back into bands).

Cost: a value+gradient costs one more forward pass than untiled (pass 1),
plus the halo: ~(4/3) x ((T + 2h)/T)² of the untiled time for tiles of side
T (measured in WORKSPACE.md).

Example:
  >>> t = make_tiling(image.shape[:2], 256, wanted.layers)    # None: one tile
  >>> s = sums(image, params, wanted, t)   # == losses.position_sums of the whole
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax import losses
from nst_jax import vgg


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


def _add_at(full, part, corner):
  """``full`` with ``part`` added at ``corner`` (a layer map's window)."""
  start = (*corner, *(0,) * (full.ndim - 2))
  return lax.dynamic_update_slice(full, lax.dynamic_slice(full, start, part.shape) + part,
                                  start)


def _pass1(params, image, wanted: losses.Wanted, tiling: Tiling, pooling, axis,
           vgg_options) -> dict:
  """Pass 1 (forward only): the owned sums of every window, added up (maps
  assembled in place)."""
  hw, layers = image.shape[:2], wanted.layers

  def window_sums(window, own, corner):
    feats = vgg.vgg_features(params, window, layers, pooling, **vgg_options)
    return losses.position_sums(feats, wanted, own, corner)

  def fn(total, window, own, corner, _):
    part = window_sums(window, own, corner)
    maps = {k: _add_at(total['maps'][k], v, corner[k]) for k, v in part['maps'].items()}
    part = {**part, 'maps': {}}
    return {**jax.tree.map(jnp.add, {**total, 'maps': {}}, part), 'maps': maps}

  _, _, own, corner = _window_geometry(tiling, 0, layers)
  window = jax.ShapeDtypeStruct((tiling.rows.window, tiling.cols.window, image.shape[-1]),
                                image.dtype)
  zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                      jax.eval_shape(window_sums, window, own, corner))
  zero['maps'] = {l: jnp.zeros((hw[0] // vgg.layer_stride(l), hw[1] // vgg.layer_stride(l),
                                vgg.layer_channels(l)), jnp.float32) for l in wanted.maps}
  total = _each_window(image, tiling, layers, axis, fn, zero)
  return lax.psum(total, axis) if axis is not None else total


def _pass2(params, image, wanted: losses.Wanted, cotangent, tiling: Tiling, pooling,
           axis, vgg_options):
  """Pass 2: Σ_tiles of the gradient of ⟨cotangent, owned sums of the window⟩."""
  layers = wanted.layers

  def fn(grad, window, own, corner, origin):
    def linear(w):
      feats = vgg.vgg_features(params, w, layers, pooling, **vgg_options)
      part = losses.position_sums(feats, wanted, own, corner)
      sums = {k: v for k, v in part.items() if k != 'maps'}      # whatever statistics
      total = sum(jnp.vdot(c, v) for c, v in zip(
          jax.tree.leaves({k: cotangent[k] for k in sums}), jax.tree.leaves(sums)))
      for n, v in part['maps'].items():
        total = total + jnp.vdot(lax.dynamic_slice(
            cotangent['maps'][n], (*corner[n], 0), v.shape), v)
      return total
    return _add_at(grad, jax.grad(linear)(window), origin)

  return _each_window(image, tiling, layers, axis, fn, jnp.zeros_like(image))


# ---------------------------------------------------------------------------
# The tiled sums: value from pass 1, gradient from pass 2 (custom VJP).
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _sums(image, params, wanted, tiling, pooling, mesh, vgg_options):
  return _sums_fwd(image, params, wanted, tiling, pooling, mesh, vgg_options)[0]


def _sums_fwd(image, params, wanted, tiling, pooling, mesh, vgg_options):
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  def fn(image, params, wanted, axis):
    return _pass1(params, image, wanted, tiling, pooling, axis, dict(vgg_options))
  return _on_bands(fn, mesh, P())(image, params, wanted), (image, params, wanted)


def _sums_bwd(tiling, pooling, mesh, vgg_options, residuals, cotangent):
  image, params, wanted = residuals

  def fn(image, params, wanted, cotangent, axis):
    grad = _pass2(params, image, wanted, cotangent, tiling, pooling, axis,
                  dict(vgg_options))
    if axis is None:
      return grad
    # This device's tiles only: sum over the devices, each keeping its band.
    return lax.psum_scatter(grad, axis, scatter_dimension=0, tiled=True)

  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  grad = _on_bands(fn, mesh, P('h'))(image, params, wanted, cotangent)
  zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
  return grad, zeros(params), zeros(wanted)


_sums.defvjp(_sums_fwd, _sums_bwd)


def sums(image, params, wanted: losses.Wanted, tiling: Tiling, pooling: str = 'max',
         mesh=None, vgg_options=()) -> dict:
  """:func:`nst_jax.losses.position_sums` of the whole ``image`` (``[H, W, 3]``,
  the image VGG sees), evaluated in ``tiling``'s windows: the same sums (and
  full ``maps``), differentiable w.r.t. ``image`` in the memory of one window.

  Args:
    tiling: from :func:`make_tiling` (more than one tile).
    mesh: a device mesh whose axis ``'h'`` holds the image in bands; its
      devices share the tiles. None: all tiles here.
    vgg_options: ``(name, value)`` pairs for :func:`nst_jax.vgg_features`
      (``remat``, ``activation_dtype``).
  """
  return _sums(image, params, wanted, tiling, pooling, mesh, tuple(vgg_options))
