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


