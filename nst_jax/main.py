"""Command line: ``nst-jax --config=configs/default.py --workdir=DIR``.

Thin by design (as in flax's examples): parse flags, call
:func:`nst_jax.api.run`. A user error (:class:`NSTError`) and a fault of the
machine (an ``OSError``: a full disk, a read-only folder; the writers raise
:class:`nst_jax.files.WriteError` naming the file) are printed as one line,
``error: ...``, with exit status 2; no traceback.
"""

import errno
import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from nst_jax import checkpoint
from nst_jax import files
from nst_jax.errors import NSTError

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               'default_config.py')
# Default None (filled in by cli()), so that nothing is parsed at import time
# and every flag error goes through _parse_flags.
_CONFIG = config_flags.DEFINE_config_file(
    'config', None,
    'Config file (e.g. configs/default.py; default: the built-in defaults); '
    'override fields with --config.FIELD=VALUE.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'nst_out',
                               'Directory for final.png, the loss log, plot, '
                               'config and intermediates.')
_QUIET = flags.DEFINE_bool('quiet', False, 'No progress bar.')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Join a multi-process run first (one process per host of a '
    'TPU pod slice or GPU cluster): detected from TPU/SLURM/Open MPI, or given by '
    '--coordinator_address, --num_processes, --process_id. See README.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'HOST:PORT where process 0 runs the coordinator '
    '(implies --multihost).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Number of processes (implies --multihost).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'This process: 0 ... num_processes-1.')


def main(argv):
  del argv  # stray arguments were refused by _parse_flags
  # Our messages at INFO; libraries (orbax's per-save chatter) at WARNING.
  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger('nst_jax').setLevel(std_logging.INFO)
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if _MULTIHOST.value or any(v is not None for v in explicit):
    from nst_jax import distributed  # pylint: disable=g-import-not-at-top
    try:
      distributed.initialize(*explicit)
    except NSTError as e:
      _error(str(e))
  from nst_jax import api  # pylint: disable=g-import-not-at-top
  try:
    config = _CONFIG.value
    config.keys()  # the config object raises its deferred load error on use
  except OSError as e:  # ml_collections defers config-file load errors to here
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    sys.stderr.write(f'error: cannot load config file: {lines[-1]}\n')
    sys.exit(2)
  try:
    api.run(config, _WORKDIR.value, quiet=_QUIET.value)
  except NSTError as e:
    _stop(f'error: {e}', 2)
  except OSError as e:                       # the one place for disk full & co.
    hint = '; free some space, then run the same command again' if (
        e.errno == errno.ENOSPC) else ''
    _stop(f'error: {files.os_error_line(e, _WORKDIR.value)}{hint}', 2)
  except checkpoint.Preempted as e:
    _stop(str(e), 128 + e.signum, failed=False)
  except KeyboardInterrupt:
    _stop('interrupted', 130)
  except Exception as e:  # pylint: disable=broad-except
    import jax  # pylint: disable=g-import-not-at-top
    if jax.process_count() == 1:
      raise
    # A collective failed: another process is gone (its own error, if it
    # said one, is the useful line).
    from nst_jax import distributed  # pylint: disable=g-import-not-at-top
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    distributed.fail((distributed.peer_failure() or
                      f'a collective with the other processes failed ({first})') +
                     '; restart every process with the same command to resume', 3)
  print(api.result_path(config, _WORKDIR.value))


def _stop(message: str, status: int, failed: bool = True) -> None:
  """Exits with ``message``; in a multi-process run a failure of this
  process stops the others too (see :func:`nst_jax.distributed.fail`)."""
  import jax  # pylint: disable=g-import-not-at-top
  if failed and jax.process_count() > 1:
    from nst_jax import distributed  # pylint: disable=g-import-not-at-top
    distributed.fail(message.removeprefix('error: '), status)
  sys.stderr.write(f'\n{message}\n')
  sys.exit(status)


def _error(message: str) -> None:
  sys.stderr.write(f'error: {message}\n')
  sys.exit(2)


def _parse_flags(argv):
  """absl's parser, with config-file, override and usage errors as one line."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:                 # unknown flag, bad value, ...
    _error(f'bad flag: {str(e).strip().splitlines()[-1]}')
  except (NSTError, AttributeError, KeyError, TypeError, ValueError,
          OSError, SyntaxError, ImportError) as e:
    # ml_collections raises these for an unknown --config.FIELD, a value of
    # the wrong type, or a config file that cannot be loaded.
    msg = str(e).strip().strip('"\'') or type(e).__name__
    _error(f'bad flag or config: {msg.splitlines()[-1]}')
  if len(rest) > 1:
    _error(f'unexpected argument(s): {" ".join(rest[1:])} (options are --flag=value; '
           'see --helpfull)')
  return rest


def split_list_flags(argv):
  """``--config.styles=/a b/x.jpg,/c.jpg`` -> a tuple literal ml_collections parses.

  ml_collections parses tuple overrides with ``ast.literal_eval``, which
  fails on absolute paths and on names with spaces. For the list-of-names
  fields (:data:`nst_jax.config.STRING_LIST_FIELDS`) we split on commas
  ourselves; a value already written as a Python tuple or list is kept. Of
  an override given twice the last counts, as for any other flag.
  """
  from nst_jax.config import STRING_LIST_FIELDS  # pylint: disable=g-import-not-at-top
  out, i = [], 0
  while i < len(argv):
    arg = argv[i]
    name, eq, value = arg.partition('=')
    field = name[len('--config.'):] if name.startswith('--config.') else None
    if field == 'sizes' and not eq and i + 1 < len(argv) and 'auto' in argv[i + 1]:
      eq, value, i = '=', argv[i + 1], i + 1       # --config.sizes auto
    if field == 'sizes' and 'auto' in value.lower() and not value.lstrip().startswith(
        ('(', '[')):                                   # --config.sizes=auto[,1024]
      arg = f'{name}={tuple(p.strip() for p in value.split(",") if p.strip())!r}'
    elif field in STRING_LIST_FIELDS:
      if not eq and i + 1 < len(argv):     # --config.styles VALUE
        value, i = argv[i + 1], i + 1
      if not value.lstrip().startswith(('(', '[')):
        parts = tuple(p.strip() for p in value.split(',') if p.strip())
        value = repr(parts)
      arg = f'{name}={value}'
    out.append(arg)
    i += 1
  # A repeated override: the last wins (ml_collections would concatenate
  # tuple values, e.g. --config.steps=6 --config.steps=40 -> (6, 40)).
  last = {a.partition('=')[0]: k for k, a in enumerate(out)
          if a.startswith('--config.') and '=' in a}
  return [a for k, a in enumerate(out)
          if not (a.startswith('--config.') and '=' in a) or last[a.partition('=')[0]] == k]


def cli(argv=None):
  """Console-script entry point (``nst-jax``)."""
  argv = list(sys.argv if argv is None else argv)
  # Config files may import modules beside them (as with `python -m`), also
  # when started through the `nst-jax` console script.
  if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  if not any(a == '--config' or a.startswith('--config=') for a in argv[1:]):
    argv.insert(1, f'--config={_DEFAULT_CONFIG}')
  app.run(main, argv=split_list_flags(argv), flags_parser=_parse_flags)


if __name__ == '__main__':
  cli()
