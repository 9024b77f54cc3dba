"""One image (a multi-pass clip, its frames as a batch) over 8 simulated CPU devices equals the
single-device result."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# After 5 L-BFGS steps (96 px) the sharded runs (another XLA program: halo
# exchanges, all-reduces) differ from one device by float rounding amplified
# by the line search, and how much depends on the CPU's kernels
# (tools/isa_spread.py, WORKSPACE.md "Tests that compare runs"): max / mean
# |8 devices - 1| measured, AVX-512 (this CPU) | emulated AVX2 | AVX | no YNNPACK:
#   run        3.1e-4 / 9.4e-6 | 9.0e-3 / 4.6e-4 | 2.3e-6 / 9.6e-8 | 2.1e-6 / 5.3e-8
#   tiled_run  4.7e-3 / 2.9e-5 | 1.0e-6 / 6.9e-8 | 4.7e-3 / 3.1e-5 | 3.0e-4 / 3.3e-7
# (the old bound, max 1e-2, had 10 % left on AVX2). The same single-device
# run on the other kernel sets moves by up to max 1.1e-2, mean 4.4e-4: that
# is what rounding alone does, so the bounds are ~3x it. A tiled run whose
# halo is one stride short gives tiled_run max 2.7e-1, mean 2.5e-3 (and a
# gradient error of 1.7e-3): caught. The one-evaluation claims are the exact
# ones: loss identical, gradient <= 3.6e-7 relative on every kernel set.
RUN_MAX, RUN_MEAN = 3e-2, 1.5e-3


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
  assert res['run_max_diff'] < RUN_MAX and res['run_mean_diff'] < RUN_MEAN, res
  # Images over 'b' and bands over 'h' at once only where a process's
  # devices share an image (sharding.mesh_shape: else the line searches'
  # loops deadlock the bands' collectives; a batch of 4 as b=4 x h=2 hung
  # here): a batch that does not fill the devices runs each image in bands
  # over all of them in turn (the clip's pass 2 below: 4 frames as 1 x 8).
  assert res['meshes'] == [[1, 8], [1, 8], [1, 8], [8, 1], [8, 1], [1, 8]]
  # An image too short for bands runs on one device: in bands its relu5_1
  # maps (2 rows) came out wrong inside XLA's loops (loss 12143 vs 98 at
  # 32x48 on 8 devices; sharding.MIN_BAND_FEATURE_ROWS).
  assert res['short_shape'] == [32, 48, 3] and res['short_equal'], res
  # The plan, per stage: 64 rows (4 at relu5_1) in bands over all 8; a 32-row
  # first stage off the bands, its 64-row second stage on them; a batch of
  # two short images one per device (b = 2, no bands).
  assert res['planned_meshes'] == {'tall': [[[1, 8]]], 'two_stages': [[[1, 1], [1, 8]]],
                                   'short_batch': [[[2, 1]]]}, res
  # Tiled evaluation with the tiles shared by the 8 devices: the same loss,
  # gradient and result as one device untiled.
  assert res['tiled_tiles'] > 8
  assert res['tiled_loss_rel'] < 1e-5 and res['tiled_grad_rel'] < 1e-5, res
  assert res['tiled_run_max_diff'] < RUN_MAX and res['tiled_run_mean_diff'] < RUN_MEAN, res
  # A multi-pass clip, its frames on the batch axis (pass 1: 8 x 1) and in
  # bands (pass 2: 4 frames at a time, each in bands, 1 x 8): the same
  # frames (two passes of L-BFGS: the same rounding argument, bound kept).
  assert res['clip_frames'] == 8
  assert res['clip_max_diff'] < RUN_MAX and res['clip_mean_diff'] < RUN_MEAN, res
