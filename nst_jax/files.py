"""Files: atomic writes, the cache directory, SHA-256 of a file.

Every file nst_jax writes goes through :func:`atomic_write` (a temp file
beside the target, then ``os.replace``), so a crash or a kill never leaves a
half-written image, log or weights file behind. A write that fails (a full
disk, a read-only folder) removes the temp file and raises :class:`WriteError`
(an ``OSError`` naming the file); the CLI prints :func:`os_error_line` of it.

Example:
  >>> atomic_write('out/notes.txt', lambda f: f.write('done\\n'), 'w')
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile


class WriteError(OSError):
  """A file that could not be written: ``filename`` and ``errno`` say which and why."""

  def __str__(self):
    return f'cannot write {self.filename}: {reason(self)}'


def reason(e: OSError) -> str:
  """Why ``e`` happened, as a message's clause: ``no space left on device``."""
  text = e.strerror or str(e) or type(e).__name__
  return text[:1].lower() + text[1:]


def os_error_line(e: OSError, where: str | None = None) -> str:
  """The one line the CLI prints for ``e``: its file, else ``where`` (the workdir)."""
  if isinstance(e, WriteError):
    return str(e)
  if e.filename:
    return f'{e.filename}: {reason(e)}'
  return f'{reason(e)} (in {where})' if where else reason(e)


def write_error(e: OSError, path: str, directory: str | None = None) -> WriteError:
  """``e`` (raised writing ``path``) as a :class:`WriteError`. A short write
  without an errno (numpy's ``N requested and M written``) on a disk left
  with under 1 MiB free is reported as the full disk it is."""
  if isinstance(e, WriteError):
    return e
  code = e.errno
  if code is None and free_bytes(directory or os.path.dirname(path)) < 1 << 20:
    code = errno.ENOSPC
  return WriteError(code, os.strerror(code) if code else reason(e), path)


def free_bytes(directory: str) -> int:
  """Bytes an unprivileged writer may still use on ``directory``'s disk."""
  try:
    st = os.statvfs(directory)
  except OSError:
    return 1 << 62
  return st.f_bavail * st.f_frsize


def atomic_write(path: str, write_fn, mode: str = 'wb') -> None:
  """Writes via ``write_fn(fileobj)`` into a temp file beside ``path``, then
  renames; an ``OSError`` becomes a :class:`WriteError` naming ``path``."""
  directory = os.path.dirname(os.path.abspath(path))
  tmp = None
  try:
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-',
                               suffix=os.path.splitext(path)[1])
    with os.fdopen(fd, mode) as f:
      write_fn(f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except OSError as e:
    error = write_error(e, path, directory)     # before the temp file frees its space
    _remove(tmp)
    raise error from e
  except BaseException:
    _remove(tmp)
    raise


def _remove(tmp: str | None) -> None:
  if tmp and os.path.exists(tmp):
    os.unlink(tmp)


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
