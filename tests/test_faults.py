"""Bad input and faults, tried as a new user would: one `error:` line, never a trace.

Each case ends with one line `error: ...` on stderr and a non-zero exit,
no traceback, and nothing half-written: a decompression-bomb style image,
a coordinator address that is not HOST:PORT, a full disk, a damaged
checkpoint, and a second run on a workdir that is in use.
"""

import collections
import errno
import glob
import logging
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib

import pytest

from nst_jax import files
from nst_jax import workdir as workdir_lib
from nst_jax.errors import NSTError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ['--config=configs/default.py', '--config.sizes=32,48', '--config.steps=4',
         '--config.checkpoint_every=2', '--quiet']


def _run(args, code=None, timeout=600):
  """``python -m nst_jax ARGS``, or ``python -c CODE`` (a patch) then the CLI."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  cmd = [sys.executable, '-m', 'nst_jax', *args] if code is None else [
      sys.executable, '-c', f'{code}\nimport sys\nfrom nst_jax.main import cli\n'
      f'sys.argv = ["nst-jax", *{list(args)!r}]\ncli()']
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _one_error(r, status=2) -> str:
  """The run failed with ``status``, no traceback, and its last line is the error."""
  assert r.returncode == status, (r.returncode, r.stderr[-3000:])
  assert 'Traceback' not in r.stderr, r.stderr[-3000:]
  lines = r.stderr.strip().splitlines()
  assert lines[-1].startswith('error: '), lines[-5:]
  assert sum(l.startswith('error: ') for l in lines) == 1, lines
  return lines[-1]


def _half_written(root) -> list:
  """Temp files of atomic writes and orbax's temp checkpoint directories."""
  return (glob.glob(os.path.join(root, '**', '.tmp-*'), recursive=True) +
          glob.glob(os.path.join(root, '**', '*.orbax-checkpoint-tmp*'), recursive=True))


# -- 1. a decompression bomb as the style --------------------------------------


def _bomb(path, side=20000):
  """A 1-bit side x side PNG of zeros: 48 KB on disk, 400 MP decoded."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
  z = zlib.compressobj(9)
  row = bytes(1 + (side + 7) // 8)
  data = b''.join(z.compress(row) for _ in range(side)) + z.flush()
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 1, 0,
                                                                0, 0, 0)) +
            chunk(b'IDAT', data) + chunk(b'IEND', b''))
  return str(path)


@pytest.mark.parametrize('field', ['styles', 'content'])
def test_decompression_bomb_is_refused_at_plan_time(tmp_path, field):
  bomb = _bomb(tmp_path / 'bomb.png')
  t = time.perf_counter()
  r = _run([f'--workdir={tmp_path}/w', f'--config.{field}={bomb}', '--config.sizes=32',
            '--config.steps=1'])
  line = _one_error(r)
  assert f'{bomb}: image exceeds 178956970 pixels (decompression-bomb guard)' in line
  assert 'max_input_pixels' in line
  assert time.perf_counter() - t < 60            # from the header: nothing decoded
  assert not os.path.exists(tmp_path / 'w' / 'final.png')


def test_image_size_follows_max_input_pixels_past_pillows_own_limit(tmp_path):
  from nst_jax import image_io
  bomb = _bomb(tmp_path / 'bomb.png')
  with pytest.raises(NSTError, match='exceeds 1000 pixels'):
    image_io.image_size(bomb, 1000)
  assert image_io.image_size(bomb, 20000 * 20000) == (20000, 20000)


# -- 2. a coordinator address that is not HOST:PORT ----------------------------


@pytest.mark.parametrize('address', ['not-an-address', 'host:', 'host:99999', '::1:80'])
def test_bad_coordinator_address_is_one_line(tmp_path, address):
  r = _run([f'--workdir={tmp_path}/w', f'--coordinator_address={address}',
            '--num_processes=2', '--process_id=0'], timeout=120)
  line = _one_error(r)
  assert f'--coordinator_address={address!r} must be HOST:PORT' in line
  assert len(r.stderr.strip().splitlines()) == 1
  assert not os.path.exists(tmp_path / 'w')


def test_good_coordinator_addresses_pass():
  from nst_jax import distributed
  for address in ('10.0.0.1:1234', 'localhost:8476', '[::1]:1234', 'host-a.b:65535'):
    distributed.check_address(address)


# -- 3. a full disk ------------------------------------------------------------


def test_atomic_write_that_fails_leaves_nothing_and_names_the_file(tmp_path):
  path = tmp_path / 'out' / 'final.tif'

  def write(f):
    f.write(b'x' * 4064)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  with pytest.raises(files.WriteError) as e:
    files.atomic_write(str(path), write)
  assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
  assert str(e.value) == f'cannot write {path}: no space left on device'
  assert os.listdir(tmp_path / 'out') == []


def test_short_write_without_errno_on_a_full_disk_is_no_space(tmp_path, monkeypatch):
  """numpy's tofile says only 'N requested and M written'; the disk says why."""
  monkeypatch.setattr(files, 'free_bytes', lambda directory: 4096)

  def write(f):
    raise OSError('130560 requested and 4064 written')
  with pytest.raises(files.WriteError, match='no space left on device'):
    files.atomic_write(str(tmp_path / 'a.npy'), write)
  monkeypatch.setattr(files, 'free_bytes', lambda directory: 1 << 40)
  with pytest.raises(files.WriteError, match='130560 requested and 4064 written'):
    files.atomic_write(str(tmp_path / 'a.npy'), write)


def test_checkpoint_save_on_a_full_disk(tmp_path, caplog):
  """Orbax's failure (tensorstore's status, logged by its threads with a
  traceback) becomes one WriteError; its temp directory is removed."""
  import jax.numpy as jnp
  from nst_jax import checkpoint
  ckpt = checkpoint.Checkpointer(str(tmp_path), 'f', [4], every=1)
  state = collections.namedtuple('State', 'pixels step')(jnp.zeros((1, 4, 4, 3)),
                                                          jnp.int32(1))

  def save(step, args):
    del args
    os.makedirs(os.path.join(ckpt.directory, f'{step}.orbax-checkpoint-tmp-0', 'state'))
    logging.getLogger('absl').error('Traceback (most recent call last): ...')
    raise ValueError('RESOURCE_EXHAUSTED: Error writing "pixels/0.0.0.0" in OCDBT '
                     "database: No space left on device [os_error_code='28']")
  ckpt.manager.save = save
  with caplog.at_level(logging.INFO), pytest.raises(files.WriteError) as e:
    ckpt.save(0, 1, state, force=True)
  assert str(e.value) == (f'cannot write {ckpt.directory}/1: no space left on device')
  assert 'Traceback' not in caplog.text
  assert _half_written(str(tmp_path)) == []
  ckpt.close()


@pytest.mark.parametrize('where', ['output', 'phase_output'])
def test_cli_full_disk_simulated(tmp_path, where, vgg_params):
  """ENOSPC in the 16-bit TIFF writer, or numpy's errno-less short write of
  the phase outputs on a disk with nothing left: one line, nothing half-written."""
  work = tmp_path / 'w'
  patch = {
      'output': ('import errno, os\nfrom nst_jax import image_io\n'
                 'def full(f, image, dpi=None):\n'
                 '  f.write(b"II*\\0" * 1016)\n'
                 '  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n'
                 'image_io.write_tiff16 = full'),
      'phase_output': ('import numpy\nfrom nst_jax import files\n'
                       'free, left = files.free_bytes, []\n'
                       'def full(f, *a, **k):\n'
                       '  f.write(b"\\x93NUMPY" * 580)\n'
                       '  left.append(0)\n'
                       '  raise OSError("130560 requested and 4064 written")\n'
                       'numpy.save = full\n'
                       'files.free_bytes = lambda d: left[0] if left else free(d)'),
  }[where]
  r = _run([*SMALL, f'--workdir={work}', '--config.output=final.tif',
            '--config.output_bits=16'], code=patch)
  line = _one_error(r)
  path = {'output': work / 'final.tif',
          'phase_output': work / 'checkpoints' / 'phase_outputs' / '0.npy'}[where]
  assert line == (f'error: cannot write {path}: no space left on device; free some '
                  'space, then run the same command again'), line
  assert not path.exists() and _half_written(str(work)) == []


@pytest.fixture()
def small_tmpfs(tmp_path):
  """A 3 MB tmpfs (needs root and mount); skipped where it cannot be mounted."""
  mount = tmp_path / 'tmpfs'
  mount.mkdir()
  if not shutil.which('mount') or os.geteuid() != 0:
    pytest.skip('mounting a tmpfs needs root and mount(8)')
  r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(mount)],
                     capture_output=True, text=True)
  if r.returncode != 0:
    pytest.skip(f'cannot mount a tmpfs here: {r.stderr.strip()}')
  try:
    yield mount
  finally:
    subprocess.run(['umount', str(mount)], check=False)


def test_cli_full_disk_on_a_real_3mb_tmpfs(small_tmpfs, vgg_params):
  """256 px, 16-bit TIFF, a checkpoint every step: whichever write hits the
  full disk first (orbax, the phase outputs, the image) is one line."""
  work = small_tmpfs / 'w'
  r = _run(['--config=configs/default.py', f'--workdir={work}', '--config.sizes=256',
            '--config.steps=4', '--config.log_every=1', '--config.checkpoint_every=1',
            '--config.output=final.tif', '--config.output_bits=16', '--quiet'])
  line = _one_error(r)
  assert line.startswith(f'error: cannot write {work}') or f'(in {work})' in line, line
  assert 'no space left on device' in line
  assert _half_written(str(work)) == []
  assert not (work / 'final.tif').exists()


# -- 4. a damaged checkpoint ----------------------------------------------------


def _damage(path, offset=None):
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.seek(size // 2 if offset is None else offset)
    f.write(b'\xff' * min(16, size))


@pytest.fixture(scope='module')
def checkpointed(tmp_path_factory, vgg_params):
  work = tmp_path_factory.mktemp('checkpointed') / 'w'
  r = _run([*SMALL, f'--workdir={work}'])
  assert r.returncode == 0, r.stderr[-2000:]
  return work


def test_damaged_checkpoint_names_it_and_the_way_out(checkpointed, tmp_path):
  work = tmp_path / 'w'
  shutil.copytree(checkpointed, work)
  for path in glob.glob(str(work / 'checkpoints' / '**' / '*'), recursive=True):
    if os.path.isfile(path):
      _damage(path)
  r = _run([*SMALL, f'--workdir={work}'])
  line = _one_error(r)
  assert line.startswith(f'error: checkpoint {work}/checkpoints/8 is damaged or unreadable')
  assert line.endswith('rerun with --config.resume=False to start over (deletes '
                       f'{work}/checkpoints)')
  r = _run([*SMALL, f'--workdir={work}', '--config.resume=False'])
  assert r.returncode == 0, r.stderr[-2000:]


def test_overwritten_array_bytes_fail_the_digest(checkpointed, tmp_path):
  """Orbax reads overwritten array bytes back without complaint: the digest
  saved in the meta catches them (here in the L-BFGS history)."""
  work = tmp_path / 'w'
  shutil.copytree(checkpointed, work)
  data = glob.glob(str(work / 'checkpoints' / '8' / 'state' / 'ocdbt.process_0' / 'd' / '*'))
  _damage(max(data, key=os.path.getsize))
  line = _one_error(_run([*SMALL, f'--workdir={work}']))
  assert 'checkpoints/8 is damaged or unreadable (its arrays differ from the digest' in line


def test_digest_is_exact_and_sees_one_bit():
  import jax.numpy as jnp
  import numpy as np
  from nst_jax import checkpoint
  a = np.random.default_rng(0).random((2, 5, 7, 3), np.float32)
  tree = {'pixels': jnp.asarray(a), 'step': jnp.int32(3), 'flag': jnp.bool_(True)}
  d = checkpoint.digest(tree)
  assert checkpoint.digest(dict(tree, pixels=jnp.asarray(a.copy()))) == d
  b = a.copy()
  b.view(np.uint32)[1, 2, 3, 0] ^= 1
  assert checkpoint.digest(dict(tree, pixels=jnp.asarray(b))) != d
  c = a.copy()
  c[0, 0, 0, 0], c[0, 0, 0, 1] = a[0, 0, 0, 1], a[0, 0, 0, 0]    # swapped: same sum
  assert checkpoint.digest(dict(tree, pixels=jnp.asarray(c))) != d


# -- 5. two runs on one workdir -------------------------------------------------

_HOLD = ('import sys, time\nfrom nst_jax import workdir\n'
         'with workdir.locked(sys.argv[1]):\n'
         '  print("locked", flush=True)\n'
         '  time.sleep(120)\n')


def _holder(work):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  p = subprocess.Popen([sys.executable, '-c', _HOLD, str(work)], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, text=True)
  assert p.stdout.readline().strip() == 'locked'
  return p


def test_second_run_on_a_workdir_in_use_stops_naming_the_first(tmp_path):
  work = tmp_path / 'w'
  first = _holder(work)
  try:
    r = _run([*SMALL, f'--workdir={work}'])
    line = _one_error(r)
    assert line.startswith(f'error: workdir {work} is in use by another run (pid '
                           f'{first.pid} on '), line
    assert not (work / 'config.json').exists() and not (work / 'checkpoints').exists()
  finally:
    first.kill()                                  # SIGKILL: the kernel drops the lock
    first.wait()
  with workdir_lib.locked(str(work)):
    assert open(work / workdir_lib.LOCK_FILE).read().startswith(f'pid {os.getpid()} ')


def test_stylize_takes_the_workdir_lock(tmp_path):
  import nst_jax
  from nst_jax.config import asset
  work = str(tmp_path / 'w')
  with workdir_lib.locked(work):
    with pytest.raises(NSTError, match=f'workdir {work} is in use by another run'):
      nst_jax.stylize(asset('chelsea.png'), asset('starry_night.jpg'), workdir=work,
                      sizes=(16,), steps=(1,))
  with workdir_lib.locked(work):                 # released again
    pass


def test_lock_leaves_a_runs_own_peers_alone(tmp_path, monkeypatch):
  """Only process 0 writes, so only it locks: its peers share the workdir."""
  work = str(tmp_path / 'w')
  with workdir_lib.locked(work):
    monkeypatch.setattr(workdir_lib, 'writer', lambda: False)
    with workdir_lib.locked(work):
      pass
