"""What the tools share: the repository on ``sys.path``, peak memory, load.

A tool imports this first (``python tools/x.py`` has ``tools/`` on the path),
so that ``import nst_jax`` finds this checkout without an install:

  import _common  # pylint: disable=unused-import  (first: the repository on sys.path)
  base = _common.reset_peak_rss()          # MB now; the peak starts again here
  ...
  print(_common.peak_rss_mb() - base, _common.load1())

Peak RSS is Linux's ``VmHWM`` (``/proc/self/status``), which writing 5 to
``/proc/self/clear_refs`` resets to the current RSS (so that loading VGG19
does not hide a later, smaller peak); elsewhere ``ru_maxrss`` (the peak since
the process started, not resettable).
"""

from __future__ import annotations

import os
import resource
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_IMAGES = os.path.join(os.path.dirname(ROOT), 'shared', 'images')
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def load1() -> float:
  """The 1-minute load average: on a shared machine compare numbers at a low load."""
  return os.getloadavg()[0]


def _status_mb(field: str) -> float:
  with open('/proc/self/status', encoding='ascii') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) / 1024
  raise KeyError(field)


def _maxrss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
  """The process's peak RSS in MB (since the start or :func:`reset_peak_rss`)."""
  try:
    return _status_mb('VmHWM')
  except (OSError, KeyError):
    return _maxrss_mb()


def reset_peak_rss() -> float:
  """Starts the peak RSS again from the current RSS (Linux); returns that RSS in
  MB (elsewhere: the peak so far, which a later peak must then exceed)."""
  try:
    with open('/proc/self/clear_refs', 'w', encoding='ascii') as f:
      f.write('5')
    return _status_mb('VmRSS')
  except (OSError, KeyError):
    return _maxrss_mb()


def emit(result, path: str | None = None) -> None:
  """Prints ``result`` as indented JSON, and writes it to ``path`` if given."""
  import json
  text = json.dumps(result, indent=1)
  if path:
    with open(path, 'w') as f:
      f.write(text + '\n')
  print(text)
