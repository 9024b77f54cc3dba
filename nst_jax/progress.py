"""Host-side reporting between compiled chunks: progress line, loss log, plot.

The loss log is JSON Lines, one record per optimiser step::

  {"stage": 0, "size": [170, 256], "step": 12, "loss": 31.2, "evaluations": 1}

(for a batch, ``loss`` is the mean over its images and ``losses`` lists
them), plus, at every chunk end, a record with ``"terms"`` (content, style,
tv, total at the chunk's final image, batch mean) and ``"elapsed_s"``, and at
every stage start an ``"event": "stage_start"`` record with the compile time.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from nst_jax.engine import Hook
from nst_jax.files import atomic_write

TERMS = ('content', 'style', 'tv', 'total')


def _fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '--:--'
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m:02d}:{s:02d}'


class Reporter(Hook):
  """Progress line on stderr and an append-only JSONL loss log (an engine hook).

  Args:
    stages: ``(hw, steps, images)`` per stage of the run, what the line and
      the log show and the overall ETA (a stage's time per step is assumed
      proportional to its pixels times images).
    log_path: JSONL path, or None for no log.
    stream: where the line goes; a TTY gets a redrawn line, anything else
      one line per chunk.
    quiet: no progress line at all.
    previous: a resumed run's log records up to its checkpoint (for the plot).
  """

  def __init__(self, stages, log_path: str | None = None,
               stream=None, quiet: bool = False, previous=()):
    self.stages = [(tuple(hw), int(n), int(b)) for hw, n, b in stages]
    self.stream = stream or sys.stderr
    self.quiet = quiet
    self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
    self.log = open(log_path, 'a', encoding='utf-8') if log_path else None
    self.done_steps = 0
    self.t0 = time.perf_counter()
    self.stage_t0 = self.t0
    self.stage_steps_done = 0
    self.history: list[tuple[int, float]] = []          # (global step, loss)
    self.terms_history: list[tuple[int, dict]] = []     # (global step, terms)
    self.stage_starts: list[tuple[int, tuple]] = []     # (global step, (h, w))
    # Resumed run: the log's earlier records, replayed into the plot's history.
    self._previous = list(previous)

  def _replay(self, index: int, upto: int | None = None):
    losses = [r for r in self._previous if r.get('stage') == index and 'loss' in r]
    terms = [r for r in self._previous if r.get('stage') == index and 'terms' in r]
    if upto is not None:
      losses = losses[:upto]
      terms = [r for r in terms if r['step'] <= upto]
    self.history += [(self.done_steps + i + 1, r['loss']) for i, r in enumerate(losses)]
    self.terms_history += [(self.done_steps + r['step'], r['terms']) for r in terms]

  def _pixels(self, stage: int) -> float:
    (h, w), _, images = self.stages[stage]
    return float(h * w * images)

  def stage_skipped(self, stage):
    """A stage finished before a resume: count it, replay its logged losses."""
    hw, steps, _ = self.stages[stage]
    self.stage_starts.append((self.done_steps, hw))
    self._replay(stage)
    self.done_steps += steps

  def stage_start(self, stage, compile_s, resumed_at):
    hw, steps, batch = self.stages[stage]
    num_stages = len(self.stages)
    self.stage, self.num_stages, self.hw, self.stage_total = stage, num_stages, hw, steps
    self.batch = batch
    self.stage_t0 = time.perf_counter()
    self.stage_starts.append((self.done_steps, hw))
    if resumed_at:
      self._replay(stage, resumed_at)
      self.done_steps += resumed_at
    self.stage_steps_done = resumed_at
    self._resumed_at = resumed_at
    self._write({'stage': stage, 'event': 'stage_start', 'size': list(hw),
                 'batch': batch, 'compile_s': round(compile_s, 3),
                 'resumed_at': resumed_at})
    if not self.quiet:
      extra = f', compiled in {compile_s:.1f}s'
      if resumed_at:
        extra += f', resumed at step {resumed_at}'
      images = f' x {batch} images' if batch > 1 else ''
      self._line(f'stage {stage + 1}/{num_stages}: {hw[1]}x{hw[0]} px{images}, '
                 f'{steps} steps{extra}', newline=True)

  def chunk(self, stage, before, state, metrics, terms):
    active = np.asarray(metrics.active)
    losses = np.asarray(metrics.loss, np.float64)[active]          # [steps, B]
    evaluations = np.asarray(metrics.evaluations)[active]
    for loss, ev in zip(losses, evaluations):
      self.done_steps += 1
      self.stage_steps_done += 1
      mean = float(np.mean(loss))
      self.history.append((self.done_steps, mean))
      record = {'stage': stage, 'size': list(self.hw), 'step': self.stage_steps_done,
                'loss': mean, 'evaluations': int(np.max(ev))}
      if loss.size > 1:
        record['losses'] = [float(x) for x in loss]
      self._write(record)
    terms = {k: float(v) for k, v in terms.items()}
    self.terms_history.append((self.done_steps, terms))
    now = time.perf_counter()
    self._write({'stage': stage, 'step': self.stage_steps_done, 'terms': terms,
                 'elapsed_s': round(now - self.t0, 3)})
    if self.quiet:
      return
    rate = (self.stage_steps_done - self._resumed_at) / max(now - self.stage_t0, 1e-9)
    remaining = (self.stage_total - self.stage_steps_done) + sum(
        self.stages[k][1] * self._pixels(k) / self._pixels(self.stage)
        for k in range(self.stage + 1, self.num_stages))
    eta = remaining / rate if rate > 0 else float('inf')
    width = 20
    filled = int(width * self.stage_steps_done / max(1, self.stage_total))
    bar = '#' * filled + '.' * (width - filled)
    self._line(f'[{self.stage + 1}/{self.num_stages} {self.hw[1]}x{self.hw[0]}] '
               f'{bar} {self.stage_steps_done}/{self.stage_total} '
               f'loss {terms["total"]:.4g} (content {terms["content"]:.3g} '
               f'style {terms["style"]:.3g} tv {terms["tv"]:.2g}'
               + (f' temporal {terms["temporal"]:.3g}' if 'temporal' in terms else '')
               + ') '
               f'{rate:.2f} it/s ETA {_fmt_time(eta)}',
               newline=not self.tty)

  def stage_end(self, stage, state):
    if self.tty and not self.quiet:
      self.stream.write('\n')
      self.stream.flush()

  def _line(self, text, newline):
    if self.tty:
      self.stream.write('\r\033[K' + text + ('\n' if newline else ''))
    else:
      self.stream.write(text + '\n')
    self.stream.flush()

  def _write(self, record):
    if self.log:
      self.log.write(json.dumps(record) + '\n')
      if 'terms' in record:
        self.log.flush()

  def close(self):
    if self.log:
      self.log.close()
      self.log = None


def plot_losses(path: str, reporter: Reporter) -> list[str]:
  """The loss curves of a run (PNG, matplotlib): one per term, log scale.

  ``total`` per optimiser step, ``content``, ``style`` and ``tv`` (weighted,
  as they enter the total) at every chunk end; each stage's start is a
  dashed line labelled with its size — what a user looks at to tune α/β.
  Returns the labels drawn (curves, then stage marks).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
  steps = [(s, l) for s, l in reporter.history if math.isfinite(l) and l > 0]
  if steps:
    ax.plot(*zip(*steps), color='black', lw=1.2, label='total (every step)')
  colours = {'content': 'tab:blue', 'style': 'tab:red', 'tv': 'tab:green',
             'temporal': 'tab:purple'}
  for name, colour in colours.items():
    pts = [(s, t[name]) for s, t in reporter.terms_history
           if math.isfinite(t.get(name, math.nan)) and t.get(name, 0) > 0]
    if pts:
      ax.plot(*zip(*pts), color=colour, lw=1, marker='.', ms=4, label=name)
  for k, (start, hw) in enumerate(reporter.stage_starts):
    ax.axvline(start, color='grey', ls='--', lw=0.8)
    if len(reporter.stage_starts) > 12:        # a clip's frames: lines, no labels
      continue
    ax.annotate(f'stage {k + 1}: {hw[1]}x{hw[0]}', (start, 1.0),
                xycoords=('data', 'axes fraction'), xytext=(3, -12),
                textcoords='offset points', fontsize=8, color='grey')
  if steps or reporter.terms_history:
    ax.set_yscale('log')
  ax.set_xlabel('optimiser step (all stages)')
  ax.set_ylabel('loss (weighted: α·content, β·style, γ·tv)')
  ax.set_title('nst_jax loss per term')
  labels = ax.get_legend_handles_labels()[1] + [t.get_text() for t in ax.texts]
  if ax.get_legend_handles_labels()[0]:
    ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=8)
  ax.grid(True, which='major', alpha=0.3)
  fig.tight_layout()
  try:
    atomic_write(path, lambda f: fig.savefig(f, format='png'))
  finally:
    plt.close(fig)
  return labels
