"""One image (and a batch) over 8 simulated CPU devices equals the single-device result."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_spatial_sharding_matches_single_device(vgg_params, tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             WORK=str(tmp_path))
  r = subprocess.run([sys.executable, os.path.join(HERE, 'sharding_worker.py')],
                     env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads(r.stdout.strip().splitlines()[-1])
  assert res['devices'] == 8
  # Same loss and gradient: the Gram matrices are exact global sums.
  assert res['loss_rel'] < 1e-5 and res['grad_rel'] < 1e-4, res
  # Really partitioned into bands with halo exchange, not replicated.
  assert "'h'" in res['grad_sharding'] and "'h'" in res['state_sharding'], res
  assert res['halo_exchange'] and res['all_reduce'], res
  # A short L-BFGS run ends at the same image (float summation order only).
  assert res['run_shape'] == [64, 96, 3]
  assert res['run_max_diff'] < 1e-2, res
  # A batch of two: data parallel over 'b' and bands over 'h' at once.
  assert res['batch_mesh'] == [2, 4]
  assert res['batch_max_diff'] < 1e-2, res
  # Tiled evaluation with the tiles shared by the 8 devices: the same loss,
  # gradient and result as one device untiled.
  assert res['tiled_tiles'] > 8
  assert res['tiled_loss_rel'] < 1e-5 and res['tiled_grad_rel'] < 1e-5, res
  assert res['tiled_run_max_diff'] < 1e-2, res
