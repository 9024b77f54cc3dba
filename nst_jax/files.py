"""Files: atomic writes, the cache directory, SHA-256 of a file.

Every file nst_jax writes goes through :func:`atomic_write` (a temp file
beside the target, then ``os.replace``), so a crash or a kill never leaves a
half-written image, log or weights file behind.

Example:
  >>> atomic_write('out/notes.txt', lambda f: f.write('done\\n'), 'w')
"""

from __future__ import annotations

import hashlib
import os
import tempfile


def atomic_write(path: str, write_fn, mode: str = 'wb') -> None:
  """Writes via ``write_fn(fileobj)`` into a temp file beside ``path``, then renames."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-',
                             suffix=os.path.splitext(path)[1])
  try:
    with os.fdopen(fd, mode) as f:
      write_fn(f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def cache_dir() -> str:
  """``$NST_JAX_CACHE``, else ``~/.cache/nst_jax`` (weights, XLA cache)."""
  return os.path.expanduser(
      os.environ.get('NST_JAX_CACHE') or os.path.join('~', '.cache', 'nst_jax'))


def sha256_file(path: str) -> str:
  """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()
