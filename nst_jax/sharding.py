"""Many devices: a batch of images over a 2-D mesh ``('b', 'h')``.

``devices = n`` devices form a mesh of ``b x h`` with ``b = gcd(B, n)`` for a
batch of ``B`` images: the batch axis is split over ``'b'`` (each device
group optimises its own images, see :mod:`nst_jax.optim`) and every image is
split into horizontal bands over ``'h'``. One image (``B = 1``) therefore uses
all ``n`` devices for bands; a batch whose size ``n`` divides uses them all
for images.

Within a band group XLA's SPMD partitioner (GSPMD) runs the same jitted loop
on every device: convolutions exchange the halo rows they need with their
neighbours, and the Gram matrices, means and losses become exact all-reduced
global sums. Nothing is tiled approximately, so there are no seams and the
result equals the single-device one up to float summation order (tested on
8 simulated CPU devices).

Several processes (a TPU pod slice, GPU hosts; see :mod:`nst_jax.distributed`):
every process runs the same command and the mesh spans all their devices, in
process order, so a band group stays within a host whenever ``h`` divides a
host's device count. Host values (inputs, targets, resumed states) are the
same on every process and :func:`place` makes global arrays of them;
:func:`to_host` gathers a global array back on every process.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P, SingleDeviceSharding

from nst_jax.errors import NSTError


def device_count(num_devices: int) -> int:
  """How many devices ``config.devices`` asks for (0 = all visible)."""
  available = jax.device_count()
  n = available if num_devices == 0 else num_devices
  if n > available:
    raise NSTError(f'config.devices={num_devices} but only {available} '
                   f'{jax.devices()[0].platform} devices are visible')
  if jax.process_count() > 1 and n != available:
    raise NSTError(f'config.devices={num_devices} in a run of {jax.process_count()} '
                   f'processes: use --config.devices=0 (all {available} devices)')
  return n


def mesh_shape(num_devices: int, batch: int) -> tuple[int, int]:
  """``(b, h)``: devices for the batch axis and for bands of one image.

  b = gcd(batch, devices), unless that would put bands (h > 1) of different
  images on the devices of one process: each image's L-BFGS line search
  loops a data-dependent number of times, the bands' halo exchanges inside
  those loops are collectives, and XLA's collectives wait for every local
  device of the program — devices working on different images would wait
  for each other for ever (seen on 8 simulated CPU devices with a batch of
  4: b = 4 × h = 2 hung). Then the images go over processes only (b =
  gcd(b, processes): one process's devices band one image at a time).
  """
  n = device_count(num_devices)
  b = math.gcd(batch, n)
  processes = jax.process_count()
  local = n if processes == 1 else jax.local_device_count()
  if b < n and (n // b) % local:
    b = math.gcd(b, processes)
  return b, n // b


# Bands need feature maps of at least this many rows at the deepest layer:
# inside a loop (the L-BFGS chunk's scan, the line search's while) XLA's SPMD
# partitioner computed wrong values for relu5_1 maps of 1-2 rows in bands —
# a 32-row image on 4 or 8 simulated CPU devices gave a loss 10-100x the
# single device's (16 rows on 4 devices too), while the same function outside
# a loop was exact, and every case with >= 4 rows was exact (2, 4, 8 devices,
# 16-128 rows, jaxlib 0.10.2). The plan bands no stage shorter than that.
MIN_BAND_FEATURE_ROWS = 4


def bands_fit(heights, stride: int) -> bool:
  """Whether images of these heights can be split into bands (see above)."""
  return all(h // stride >= MIN_BAND_FEATURE_ROWS for h in heights)


def make_mesh(num_devices: int, batch: int = 1, shape: tuple[int, int] | None = None
              ) -> Mesh | None:
  """The ``('b', 'h')`` mesh for a batch of ``batch`` images (or of ``shape``,
  the plan's); None for one device."""
  b, h = shape or mesh_shape(num_devices, batch)
  if b * h <= 1:
    return None
  return Mesh(np.asarray(jax.devices()[:b * h]).reshape(b, h), ('b', 'h'))


def _spec(leaf, image_shape, batched: bool) -> P:
  shape = np.shape(leaf)
  spec = [None] * len(shape)
  if batched and shape:
    spec[0] = 'b'
  k = len(image_shape)
  if k and len(shape) > k and tuple(shape[-k:]) == tuple(image_shape):
    spec[len(shape) - k] = 'h'               # the image's rows
  return P(*spec)


def shardings(tree, mesh: Mesh | None, image_shape=(), batched: bool = True):
  """The sharding :func:`place` gives each leaf (this process's first device
  without a mesh)."""
  if mesh is None:
    local = SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda _: local, tree)
  return jax.tree.map(lambda x: NamedSharding(mesh, _spec(x, image_shape, batched)), tree)


def place(tree, mesh: Mesh | None, image_shape=(), batched: bool = True):
  """Puts every leaf on the mesh: axis 0 over ``'b'`` (if ``batched``), the
  rows of image-shaped trailing dims (``image_shape`` = (H, W, C)) over ``'h'``,
  the rest replicated. Identity without a mesh."""
  if mesh is None:
    return tree
  return jax.tree.map(lambda x, s: jax.device_put(_global_input(x), s),
                      tree, shardings(tree, mesh, image_shape, batched))


def replicate(tree, mesh: Mesh | None):
  if mesh is None:
    return tree
  return jax.tree.map(lambda x: jax.device_put(_global_input(x), NamedSharding(mesh, P())),
                      tree)


def _global_input(x):
  """With several processes, a process-local array goes to the mesh from the
  host (every process holds the same value); global arrays are resharded."""
  if jax.process_count() > 1 and not (isinstance(x, jax.Array)
                                      and not x.is_fully_addressable):
    return np.asarray(x)
  return x


def to_host(tree):
  """Every leaf as a numpy array holding the whole value, on every process
  (a collective with several processes: all of them must call it)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(
      lambda x: np.asarray(x) if not isinstance(x, jax.Array) or x.is_fully_addressable
      else multihost_utils.process_allgather(x, tiled=True), tree)


def agree(value: int, reduce=np.max) -> int:
  """``reduce`` of an int32-sized integer over all processes, the same on
  every one (a collective with several processes; without x64 JAX would wrap
  a larger integer to int32)."""
  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(reduce(multihost_utils.process_allgather(np.int32(value))))
