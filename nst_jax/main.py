"""Command line: ``nst-jax --config=configs/default.py --workdir=DIR``.

Thin by design (as in flax's examples): parse flags, call
:func:`nst_jax.pipeline.run`. A user error (:class:`NSTError`) is printed as one
line, ``error: ...``, with exit status 2; no traceback.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from nst_jax import config as config_lib
from nst_jax.errors import NSTError

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               'default_config.py')
_CONFIG = config_flags.DEFINE_config_file(
    'config', _DEFAULT_CONFIG,
    'Config file (e.g. configs/default.py); override fields with '
    '--config.FIELD=VALUE.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'nst_out',
                               'Directory for final.png, the loss log, plot, '
                               'config and intermediates.')
_QUIET = flags.DEFINE_bool('quiet', False, 'No progress bar.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.INFO)
  from nst_jax import pipeline  # pylint: disable=g-import-not-at-top
  try:
    pipeline.run(_CONFIG.value, _WORKDIR.value, quiet=_QUIET.value)
  except NSTError as e:
    sys.stderr.write(f'\nerror: {e}\n')
    sys.exit(2)
  except KeyboardInterrupt:
    sys.stderr.write('\ninterrupted\n')
    sys.exit(130)
  print(os.path.join(_WORKDIR.value, _CONFIG.value.output))


def cli():
  """Console-script entry point (``nst-jax``)."""
  try:
    app.run(main)
  except NSTError as e:  # raised while loading a config file
    sys.stderr.write(f'error: {e}\n')
    sys.exit(2)


if __name__ == '__main__':
  cli()
