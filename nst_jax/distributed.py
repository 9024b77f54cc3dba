"""Several processes (hosts) as one run: ``jax.distributed`` plus a watchdog.

:func:`initialize` connects this process to the others: explicitly
(``coordinator_address``, ``num_processes``, ``process_id``: process 0 runs
the coordinator at that address), or from the environment that JAX
auto-detects (a Cloud TPU pod slice, SLURM, Open MPI). On CPU the processes
talk through gloo (JAX's default CPU collectives), so a multi-process run
can be tried on one machine (tests/test_multiprocess.py).

The mesh then spans every process's devices (see :mod:`nst_jax.sharding`);
every process runs the same plan and engine, only process 0 writes files,
and checkpoints are written by all processes together (orbax).

A process that dies would otherwise leave the others blocked in a
collective until JAX's heartbeat timeout aborts them with a C++ stack
trace. :func:`start_watchdog` makes each process publish a counter every
``interval`` seconds in the coordination service and watch the others'; a
peer silent for ``timeout`` seconds (30; the environment variable
``NST_JAX_PEER_TIMEOUT_S`` sets another), or a coordinator that no longer
answers, ends this process with one line on stderr and exit status 3
(rerun the job to resume from the last checkpoint). A process that stops
on an error of its own calls :func:`fail`: the others stop at once with its
message instead of waiting in a collective.

Example:
  >>> initialize('10.0.0.1:1234', num_processes=2, process_id=int(os.environ['RANK']))
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time

import jax

from nst_jax.errors import NSTError

log = logging.getLogger(__name__)

EXIT_PEER_LOST = 3
WATCHDOG_INTERVAL_S = 2.0
# How long a silent peer is tolerated (env NST_JAX_PEER_TIMEOUT_S overrides).
WATCHDOG_TIMEOUT_S = 30.0
COORDINATOR_GRACE_S = 2.0
_stop = threading.Event()
# JAX's own heartbeat timeout is longer than the watchdog's, so that the
# watchdog's clear message comes first.
HEARTBEAT_TIMEOUT_S = 90


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the multi-process run (see the module docstring); one-line errors."""
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    raise NSTError('give --coordinator_address, --num_processes and --process_id '
                   'together (or none of them, to detect a TPU, SLURM or Open MPI job)')
  if num_processes is not None and not 0 <= process_id < num_processes:
    raise NSTError(f'--process_id={process_id} must be in [0, {num_processes})')
  if coordinator_address is not None:
    check_address(coordinator_address)
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  except ValueError as e:
    if 'should be defined' in str(e) or 'must be defined' in str(e):
      raise NSTError('--multihost: no TPU pod, SLURM or Open MPI job detected; pass '
                     '--coordinator_address=HOST:PORT --num_processes=N '
                     '--process_id=I (process 0 listens at HOST:PORT)') from None
    raise NSTError(f'--multihost: {e}') from None
  except RuntimeError as e:
    raise NSTError(f'--multihost: cannot join the other processes '
                   f'({str(e).strip().splitlines()[0][:200]})') from None
  log.info('process %d of %d, %d local / %d global devices', jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  if jax.process_count() > 1:
    start_watchdog(timeout=_peer_timeout())
    # atexit runs last-in first-out: the watchdog stops before JAX's own
    # shutdown closes the coordination service under it.
    atexit.register(stop_watchdog)


def check_address(address: str) -> None:
  """``HOST:PORT`` (an IPv6 host in brackets: ``[::1]:1234``), port 1-65535,
  or an :class:`NSTError` naming ``--coordinator_address``."""
  host, colon, port = address.rpartition(':')
  bracketed = host.startswith('[') and host.endswith(']')
  bare = host[1:-1] if bracketed else host
  if not (colon and bare and port.isdigit() and 0 < int(port) < 65536
          and (bracketed or ':' not in bare) and not any(c.isspace() for c in address)):
    raise NSTError(f'--coordinator_address={address!r} must be HOST:PORT with a port '
                   'in 1-65535 (e.g. 10.0.0.1:1234, [::1]:1234), where process 0 listens')


def _peer_timeout() -> float:
  value = os.environ.get('NST_JAX_PEER_TIMEOUT_S', '')
  try:
    timeout = float(value) if value else WATCHDOG_TIMEOUT_S
  except ValueError:
    timeout = -1.0
  if not timeout > 0:
    raise NSTError(f'NST_JAX_PEER_TIMEOUT_S={value!r} must be a number of seconds > 0')
  return timeout


def stop_watchdog() -> None:
  """Stops the watchdog (before a normal exit: the service goes away)."""
  _stop.set()


def peer_failure() -> str | None:
  """``process P of N stopped: <its error>`` if another process has failed."""
  client, n = _client(), jax.process_count()
  for p in range(n):
    if p == jax.process_index():
      continue
    try:
      message = client.key_value_try_get(f'nst_jax/failed/{p}')
    except Exception:  # pylint: disable=broad-except  (not published)
      continue
    return f'process {p} of {n} stopped: {message}'
  return None


def fail(message: str, status: int) -> None:
  """Ends a multi-process run from one process: tells the others (their
  watchdogs stop them with this message) and exits without JAX's shutdown
  barrier, which would wait for peers that are blocked in a collective."""
  sys.stderr.write(f'\nerror: {message}\n')
  sys.stderr.flush()
  _stop.set()
  try:
    _client().key_value_set(f'nst_jax/failed/{jax.process_index()}', message[:500],
                            allow_overwrite=True)
  except Exception:  # pylint: disable=broad-except  (the others time out instead)
    pass
  _exit(status)


def _exit(status: int) -> None:
  """Exits now; process 0 a moment later, so that the coordination service
  it hosts outlives the others' exits (without it, their service threads
  abort with a C++ trace)."""
  if jax.process_index() == 0:
    time.sleep(COORDINATOR_GRACE_S)
  os._exit(status)  # pylint: disable=protected-access


def _client():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


def start_watchdog(interval: float = WATCHDOG_INTERVAL_S,
                   timeout: float = WATCHDOG_TIMEOUT_S) -> threading.Thread:
  """Starts the peer watchdog thread (a daemon; see the module docstring)."""
  client, me, n = _client(), jax.process_index(), jax.process_count()

  def lost(message: str):
    sys.stderr.write(f'\nerror: {message}; stopping this process too. Restart every '
                     'process with the same command to resume from the last '
                     'checkpoint.\n')
    sys.stderr.flush()
    _exit(EXIT_PEER_LOST)

  def get(key):
    try:
      return client.key_value_try_get(key)
    except Exception:  # pylint: disable=broad-except  (not published)
      return None

  def watch():
    beat, seen = 0, {p: (None, time.monotonic()) for p in range(n) if p != me}
    while not _stop.is_set():
      beat += 1
      try:
        client.key_value_set(f'nst_jax/alive/{me}', str(beat), allow_overwrite=True)
      except Exception:  # pylint: disable=broad-except
        if _stop.is_set():
          return
        lost('the coordinator (process 0) stopped answering')
      values = {p: get(f'nst_jax/alive/{p}') for p in seen}
      for p in seen:
        failed = get(f'nst_jax/failed/{p}')
        if failed is not None and not _stop.is_set():
          lost(f'process {p} of {n} stopped: {failed}')
      now = time.monotonic()
      for p, (last, since) in seen.items():
        value = values.get(p)
        if value is not None and value != last:
          seen[p] = (value, now)
        elif now - since > timeout and not _stop.is_set():
          lost(f'process {p} of {n} stopped answering for {timeout:.0f} s')
      _stop.wait(interval)

  thread = threading.Thread(target=watch, name='nst_jax-watchdog', daemon=True)
  thread.start()
  return thread
