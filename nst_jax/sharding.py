"""One image across many devices: spatial sharding with GSPMD.

The optimised image and every image-shaped leaf of the optimiser state are
split into horizontal bands, one per device, along a 1-D mesh axis ``'h'``;
VGG params and targets are replicated. XLA's SPMD partitioner then runs the
same jitted loop on every device: convolutions exchange the halo rows they
need with their neighbours, and the Gram matrices, means and losses become
exact all-reduced global sums. Nothing is tiled approximately, so there are
no seams and the result equals the single-device one up to float summation
order (tested on 8 simulated CPU devices).

Multi-host (a TPU pod slice or several GPU VMs): run the same command on
every host with ``--multihost``; ``jax.distributed.initialize()`` connects
them and the mesh spans all their devices (see WORKSPACE.md).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nst_jax.errors import NSTError

AXIS = 'h'


def make_mesh(num_devices: int) -> Mesh | None:
  """A 1-D mesh over ``num_devices`` devices (0 = all); None for one device."""
  devices = jax.devices()
  n = len(devices) if num_devices == 0 else num_devices
  if n > len(devices):
    raise NSTError(f'config.devices={num_devices} but only {len(devices)} '
                   f'{devices[0].platform} devices are visible')
  if n <= 1:
    return None
  return Mesh(np.asarray(devices[:n]), (AXIS,))


def _leaf_sharding(mesh: Mesh, image_shape, leaf):
  shape = np.shape(leaf)
  k = len(image_shape)
  if len(shape) >= k and tuple(shape[-k:]) == tuple(image_shape):
    spec = [None] * len(shape)
    spec[len(shape) - k] = AXIS          # the image's H axis
    return NamedSharding(mesh, P(*spec))
  return NamedSharding(mesh, P())


def shard_state(state, mesh: Mesh, image_shape):
  """Places image-shaped leaves in bands over the mesh, the rest replicated."""
  return jax.tree.map(lambda x: jax.device_put(x, _leaf_sharding(mesh, image_shape, x)),
                      state)


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, NamedSharding(mesh, P()))
