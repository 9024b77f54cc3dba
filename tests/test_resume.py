"""Preemption: kill -9 / SIGTERM mid-run, rerun, and get the same image bit for bit."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # subprocess runs with kills; still in the default suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ['--config=configs/default.py', '--config.sizes=64,96', '--config.steps=30,20',
        '--config.checkpoint_every=2', '--config.log_every=2', '--config.init=noise',
        '--config.seed=5', '--quiet']


def _cmd(workdir, *extra, args=ARGS):
  return [sys.executable, '-m', 'nst_jax', *args, f'--workdir={workdir}', *extra]


def _env():
  return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))


def _final_pixels(workdir):
  """The last checkpoint's optimised pixels (float32, exact)."""
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state', 'meta'))
  step = mngr.latest_step()
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  mngr.close()
  return step, np.asarray(state['pixels'] if isinstance(state, dict) else state[0])


@pytest.fixture(scope='module')
def reference(tmp_path_factory, vgg_params):
  work = tmp_path_factory.mktemp('uninterrupted')
  r = subprocess.run(_cmd(work), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  return work


def _start_and_interrupt(work, sig, delay):
  p = subprocess.Popen(_cmd(work), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  ckpt_dir = os.path.join(work, 'checkpoints')
  t0 = time.time()
  while time.time() - t0 < 300:
    if p.poll() is not None:
      break
    if os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir)):
      time.sleep(delay)
      if p.poll() is None:
        p.send_signal(sig)
      break
    time.sleep(0.05)
  out, err = p.communicate(timeout=300)
  return p.returncode, err


# Bit-identical on any CPU: the resumed process compiles the same programs
# as the uninterrupted one on the same machine, and the checkpoint restores
# the state exactly, so both use the same kernels (this file also passes
# with emulated AVX2 and AVX kernels: tools/isa_spread.py --cpu).
@pytest.mark.parametrize('trial', range(2))
def test_kill9_then_resume_is_bit_identical(reference, tmp_path, trial):
  # Trial 0 kills soon after the first checkpoint; trial 1 at a random moment.
  delay = 0.2 if trial == 0 else random.Random(1234).uniform(0.0, 4.0)
  code, err = _start_and_interrupt(tmp_path, signal.SIGKILL, delay)
  interrupted = code == -signal.SIGKILL
  if trial == 0:
    assert interrupted, err[-2000:]
  r = subprocess.run(_cmd(tmp_path), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  if interrupted:
    assert 'resuming from stage' in r.stderr
  ref_step, ref_px = _final_pixels(reference)
  step, px = _final_pixels(tmp_path)
  assert step == ref_step == 50
  np.testing.assert_array_equal(px, ref_px)
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'final.png')),
                                np.asarray(Image.open(reference / 'final.png')))
  # The loss log covers every step exactly once.
  import json
  steps = [json.loads(l) for l in open(tmp_path / 'losses.jsonl')]
  assert sum('loss' in s for s in steps) == 50


def test_sigterm_saves_and_exits_then_resumes(reference, tmp_path):
  code, err = _start_and_interrupt(tmp_path, signal.SIGTERM, 0.5)
  if code == 0:
    pytest.skip('run finished before the signal arrived')
  assert code == 128 + signal.SIGTERM, err[-2000:]
  assert 'state saved, run the same command to resume' in err
  assert 'Traceback' not in err
  r = subprocess.run(_cmd(tmp_path), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  np.testing.assert_array_equal(_final_pixels(tmp_path)[1], _final_pixels(reference)[1])


def test_checkpoint_of_another_config_is_refused(reference, tmp_path):
  import shutil
  shutil.copytree(reference / 'checkpoints', tmp_path / 'checkpoints')
  r = subprocess.run(_cmd(tmp_path, '--config.style_weight=7'), cwd=ROOT, env=_env(),
                     capture_output=True, text=True)
  assert r.returncode == 2
  assert 'different config' in r.stderr.strip().splitlines()[-1]
  r = subprocess.run(_cmd(tmp_path, '--config.style_weight=7', '--config.resume=False'),
                     cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]


def test_batch_kill9_then_resume_is_bit_identical(tmp_path, assets):
  """A folder of two photos of different aspect (two phases): kill -9 in the
  second phase, rerun: every output equals the uninterrupted run's."""
  folder = tmp_path / 'photos'
  folder.mkdir()
  cat = Image.open(assets['chelsea.png']).convert('RGB')
  cat.save(folder / 'cat.png')
  cat.transpose(Image.ROTATE_90).save(folder / 'cat_rotated.png')
  args = [a for a in ARGS if not a.startswith(('--config.sizes', '--config.steps'))]
  extra = [f'--config.content={folder}', '--config.sizes=48', '--config.steps=24']
  cmd = lambda work: _cmd(work, *extra, args=args)
  ref = tmp_path / 'ref'
  r = subprocess.run(cmd(ref), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  work = tmp_path / 'work'
  p = subprocess.Popen(cmd(work), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  ckpt_dir = os.path.join(work, 'checkpoints')

  def in_second_phase():   # checkpoints are named by global step; phase 1 has 24
    names = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
    return any(n.isdigit() and int(n) > 24 for n in names)

  t0 = time.time()
  while time.time() - t0 < 300 and p.poll() is None and not in_second_phase():
    time.sleep(0.05)
  time.sleep(0.3)
  killed = p.poll() is None
  if killed:
    p.send_signal(signal.SIGKILL)
  p.communicate(timeout=300)
  assert killed, 'the run ended before it could be killed'
  r = subprocess.run(cmd(work), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  assert 'resuming from stage 2' in r.stderr
  for name in ('cat.png', 'cat_rotated.png'):
    np.testing.assert_array_equal(np.asarray(Image.open(work / 'batch' / name)),
                                  np.asarray(Image.open(ref / 'batch' / name)))
  np.testing.assert_array_equal(_final_pixels(work)[1], _final_pixels(ref)[1])


def test_adam_averaging_resumed_at_a_stage_boundary_is_bit_identical(tmp_path):
  """Checkpoints at stage ends only: the kill lands in stage 2, the resumed
  run restores stage 1's end and carries Adam's moments (and restarts the
  average) from it exactly as the uninterrupted run did."""
  args = [a for a in ARGS if not a.startswith(('--config.checkpoint_every', '--config.steps'))]
  args += ['--config.checkpoint_every=0', '--config.optimizer=adam', '--config.steps=16,30',
           '--config.average_decay=0.9', '--config.learning_rate=0.05']
  ref, work = tmp_path / 'ref', tmp_path / 'work'
  r = subprocess.run(_cmd(ref, args=args), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  p = subprocess.Popen(_cmd(work, args=args), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  t0 = time.time()
  while time.time() - t0 < 300 and p.poll() is None:
    ckpt = work / 'checkpoints'
    if ckpt.is_dir() and any(n.isdigit() for n in os.listdir(ckpt)):
      time.sleep(0.3)
      p.send_signal(signal.SIGKILL)
      break
    time.sleep(0.02)
  p.communicate(timeout=300)
  assert p.returncode == -signal.SIGKILL, 'the run ended before the kill'
  r = subprocess.run(_cmd(work, args=args), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  assert 'resuming from stage 1 step 16' in r.stderr
  np.testing.assert_array_equal(np.asarray(Image.open(work / 'final.png')),
                                np.asarray(Image.open(ref / 'final.png')))
  np.testing.assert_array_equal(_final_pixels(work)[1], _final_pixels(ref)[1])
