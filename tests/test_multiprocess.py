"""Several processes as one run (jax.distributed over gloo on 127.0.0.1).

Two processes with two simulated CPU devices each run the CLI with
``--config.devices=0``: one image in bands over all four devices, and a
batch of two images data-parallel over the processes. Each result equals a
single process with four devices; only process 0 writes files; a killed
process makes the other exit with one line in bounded time, and rerunning
both resumes from the shared checkpoints.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from nst_jax import config as cl

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One 96-px stage, a few L-BFGS steps: the processes' all-reduces sum in
# another order than one process's, and the line search amplifies float
# rounding by an amount that depends on the CPU's kernels
# (tools/isa_spread.py, WORKSPACE.md "Tests that compare runs"). Measured
# max / mean |2 processes - 1| on AVX-512 (this CPU) and emulated AVX2, AVX
# and no-YNNPACK kernels: one image (6 steps) 1.5e-5 / <= 5.9e-8 on all four
# (one 16-bit step); the batch (4 steps) <= 5.0e-4 / 8.7e-7. The same
# single-process run on the other kernel sets moves by up to max 2.4e-2,
# mean 5.9e-4: rounding alone can do that, hence bounds of ~3x it (the old
# max 2e-3 held on the four kernel sets measured, but a real AVX2 CPU broke
# the like-made bound of test_memory.py at 1.83e-3). The exact claim is the
# first step's loss, one evaluation at the same start: measured equal (0).
# A run that lost or misplaced a process's bands would be off by O(0.1).
IMAGE_MAX, IMAGE_MEAN, FIRST_LOSS_REL = 5e-2, 2e-3, 1e-5
ARGS = ['--config=configs/default.py', '--config.sizes=96', '--config.steps=6',
        '--config.log_every=2', '--config.checkpoint_every=2', '--config.devices=0',
        '--config.output_bits=16', '--config.save_every=2', '--quiet']


def _env(devices):
  return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
              JAX_PLATFORMS='cpu', NST_JAX_PEER_TIMEOUT_S='10')


def _port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _cmd(workdir, *extra):
  return [sys.executable, '-m', 'nst_jax', *ARGS, f'--workdir={workdir}', *extra]


def _single(workdir, *extra):
  r = subprocess.run(_cmd(workdir, *extra), cwd=ROOT, env=_env(4), capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]


def _start_pair(workdirs, *extra, port=None):
  """Processes 0 and 1; process 1's workdir may differ but shares checkpoints/."""
  port = port or _port()
  return [subprocess.Popen(
      _cmd(workdirs[i], *extra, f'--coordinator_address=127.0.0.1:{port}',
           '--num_processes=2', f'--process_id={i}'),
      cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(2)]


def _pair(workdirs, *extra):
  procs = _start_pair(workdirs, *extra)
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [err for _, err in outs]


def _workdirs(tmp_path):
  """Process 0 writes into w0; process 1 gets w1, whose checkpoints/ is w0's
  (a shared checkpoint directory, as on a cluster): anything else process 1
  wrote would show up in w1."""
  w0, w1 = tmp_path / 'w0', tmp_path / 'w1'
  (w0 / 'checkpoints').mkdir(parents=True)
  w1.mkdir()
  os.symlink(w0 / 'checkpoints', w1 / 'checkpoints')
  return w0, w1


def _image(path):
  """A 16-bit PNG result as float32 (quantisation 1.5e-5; Pillow reads 8 bits)."""
  import png
  w, h, rows, info = png.Reader(filename=str(path)).asDirect()
  assert info['bitdepth'] == 16
  return np.vstack([np.asarray(r, np.float32) for r in rows]).reshape(h, w, -1) / 65535


def _losses(workdir):
  return [json.loads(line)['loss'] for line in (workdir / 'losses.jsonl').read_text().splitlines()
          if '"loss"' in line]


def _agree(single_dir, multi_dir, single, multi):
  """The runs' first losses (one evaluation each) equal, their images close."""
  a, b = _losses(single_dir)[0], _losses(multi_dir)[0]
  assert abs(a - b) <= FIRST_LOSS_REL * abs(a), (a, b)
  diff = np.abs(single - multi)
  assert diff.max() <= IMAGE_MAX and diff.mean() <= IMAGE_MEAN, (diff.max(), diff.mean())


def _steps(workdir):
  return sum('"loss"' in line for line in (workdir / 'losses.jsonl').read_text().splitlines())


def test_two_processes_equal_one_process_with_four_devices(tmp_path, vgg_params):
  _single(tmp_path / 'single')
  w0, w1 = _workdirs(tmp_path)
  errs = _pair((w0, w1))
  assert 'process 0 of 2, 2 local / 4 global devices' in errs[0], errs[0][-2000:]
  single, multi = _image(tmp_path / 'single/final.png'), _image(w0 / 'final.png')
  assert single.shape == multi.shape == (64, 96, 3)
  _agree(tmp_path / 'single', w0, single, multi)
  # Only process 0 wrote: nothing but the shared checkpoints in process 1's workdir.
  assert sorted(os.listdir(w1)) == ['checkpoints'], os.listdir(w1)
  assert {'final.png', 'losses.jsonl', 'losses.png', 'config.json'} <= set(os.listdir(w0))
  # Intermediates every 2 steps: gathered on both processes, written by 0.
  assert sorted(os.listdir(w0 / 'intermediates')) == [
      f'stage1_step{k:05d}.png' for k in (2, 4, 6)]
  assert _steps(w0) == _steps(tmp_path / 'single') == 6   # one record per step, once


def test_batch_is_data_parallel_over_processes(tmp_path, vgg_params):
  folder = tmp_path / 'photos'
  folder.mkdir()
  shutil.copy(cl.asset('chelsea.png'), folder / 'a.png')
  Image.open(cl.asset('chelsea.png')).transpose(Image.FLIP_LEFT_RIGHT).save(folder / 'b.png')
  extra = (f'--config.content={folder}', '--config.steps=4')
  _single(tmp_path / 'single', *extra)
  w0, w1 = _workdirs(tmp_path)
  errs = _pair((w0, w1), *extra)
  # One batch of the two same-sized photos: one image per process ('b'),
  # bands over each process's two devices ('h').
  assert 'mesh b=2 x h=2' in errs[0], errs[0][-2000:]
  assert sorted(os.listdir(w0 / 'batch')) == ['a.png', 'b.png']
  for name in ('a.png', 'b.png'):
    single, multi = _image(tmp_path / 'single/batch' / name), _image(w0 / 'batch' / name)
    _agree(tmp_path / 'single', w0, single, multi)
  assert sorted(os.listdir(w1)) == ['checkpoints']


def test_lost_process_stops_the_other_and_the_job_resumes(tmp_path, vgg_params):
  extra = ('--config.steps=12',)
  w0, w1 = _workdirs(tmp_path)
  procs = _start_pair((w0, w1), *extra)
  ckpt, t0 = w0 / 'checkpoints', time.time()
  while time.time() - t0 < 300 and procs[0].poll() is None:
    if any(n.isdigit() and int(n) >= 4 for n in os.listdir(ckpt)):
      break
    time.sleep(0.1)
  assert procs[0].poll() is None, procs[0].communicate()[1][-2000:]
  procs[1].send_signal(signal.SIGKILL)
  killed = time.time()
  _, err = procs[0].communicate(timeout=180)
  waited = time.time() - killed
  procs[1].communicate()
  # Bounded: at most the watchdog's timeout (10 s here) plus a chunk, not
  # JAX's heartbeat abort or a hang.
  assert procs[0].returncode == 3, err[-3000:]
  assert waited < 45, waited
  # The watchdog's line, or sooner the failed collective's (gloo notices the
  # closed connection): one line, naming the lost contact.
  last = err.strip().splitlines()[-1]
  assert last.startswith(('error: process 1 of 2 stopped answering',
                          'error: a collective with the other processes failed')), err[-3000:]
  assert 'restart every process with the same command' in last.lower()
  # The same command on both resumes from the shared checkpoint and finishes.
  errs = _pair((w0, w1), *extra)
  assert 'resuming from stage 1' in errs[0]
  # ... to the image of an uninterrupted pair (12 L-BFGS steps: a single
  # process would differ by float summation order, amplified). Both pairs
  # compile the same programs on the same CPU and the checkpoint restores
  # the state bit for bit, so kernels cannot differ between them: measured
  # equal bit for bit (also with emulated AVX2 kernels); 1e-4 is a few
  # 16-bit steps.
  u0, u1 = _workdirs(tmp_path / 'uninterrupted')
  _pair((u0, u1), *extra)
  resumed, uninterrupted = _image(w0 / 'final.png'), _image(u0 / 'final.png')
  assert np.max(np.abs(resumed - uninterrupted)) <= 1e-4, \
      np.max(np.abs(resumed - uninterrupted))
  assert _steps(w0) == _steps(u0) == 12
  assert sorted(os.listdir(w1)) == ['checkpoints']


def test_an_error_on_one_process_stops_the_other_at_once(tmp_path, vgg_params):
  """Process 1 cannot use its workdir (a path under a file): it stops with
  its one-line error, and process 0 with that message in seconds, not after
  a collective's or the shutdown barrier's timeout."""
  (tmp_path / 'file').write_text('not a directory')
  t = time.time()
  procs = _start_pair((tmp_path / 'w0', tmp_path / 'file' / 'w1'))
  outs = [p.communicate(timeout=120) for p in procs]
  assert time.time() - t < 60
  assert procs[1].returncode == 2, outs[1][1][-2000:]
  # (gRPC may log the coordinator's end after it: process 0 already left)
  assert any(l.startswith('error: workdir ') for l in outs[1][1].splitlines()), \
      outs[1][1][-2000:]
  assert procs[0].returncode == 3, outs[0][1][-2000:]
  assert outs[0][1].strip().splitlines()[-1].startswith(
      'error: process 1 of 2 stopped: workdir '), outs[0][1][-2000:]


def test_a_stage_too_short_for_bands_is_refused_on_every_process(tmp_path):
  """A 32-row first stage over 4 devices in bands: one device per image is
  not possible across processes, so both stop with the same one line
  (sharding.MIN_BAND_FEATURE_ROWS), before anything runs."""
  procs = _start_pair((tmp_path / 'w0', tmp_path / 'w1'), '--config.sizes=48,96')
  outs = [p.communicate(timeout=120) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 2, err[-2000:]
    assert err.strip().splitlines()[-1].startswith(
        'error: stage 1/2 (48x32 px) is too short for bands of rows over 4 devices of 2 '
        'processes'), err[-2000:]
