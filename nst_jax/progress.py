"""Host-side reporting between compiled chunks: progress bar, loss log, plot.

The loss log is JSON Lines, one record per optimiser step::

  {"stage": 0, "size": [170, 256], "step": 12, "loss": 31.2, "evaluations": 1}

plus, at every chunk end, a record with ``"terms"`` (content, style, tv,
total at the chunk's final image) and ``"elapsed_s"``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

from nst_jax.weights import atomic_write


def _fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '--:--'
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m:02d}:{s:02d}'


class Reporter:
  """Progress bar on stderr and an append-only JSONL loss log.

  Args:
    stages: ``(steps, pixels)`` per stage, for the overall ETA (later stages
      are assumed to cost time in proportion to their pixel count).
    log_path: JSONL path, or None for no log.
    stream: where the bar goes; a TTY gets a redrawn line, anything else
      one line per chunk.
    quiet: no bar at all.
  """

  def __init__(self, stages, log_path: str | None = None,
               stream=None, quiet: bool = False, previous=()):
    self.stages = [(int(n), float(px)) for n, px in stages]
    self.stream = stream or sys.stderr
    self.quiet = quiet
    self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
    self.log = open(log_path, 'a', encoding='utf-8') if log_path else None
    self.done_steps = 0
    self.t0 = time.perf_counter()
    self.stage_t0 = self.t0
    self.stage_steps_done = 0
    self.history: list[tuple[int, float]] = []   # (global step, loss)
    self.stage_starts: list[int] = []
    # Resumed run: the log's earlier per-step records, for the plot.
    self._previous = [(r['stage'], r['loss']) for r in previous if 'loss' in r]

  def skip_stage(self, steps: int):
    """A stage finished before a resume: count it, replay its logged losses."""
    index = len(self.stage_starts)
    self.stage_starts.append(self.done_steps)
    losses = [l for s, l in self._previous if s == index]
    self.history += [(self.done_steps + i + 1, l) for i, l in enumerate(losses)]
    self.done_steps += steps

  def start_stage(self, hw, steps: int, compile_s: float | None = None,
                  resumed_at: int = 0):
    """Begins the next stage (stages are counted here, across phases)."""
    index = len(self.stage_starts)
    num_stages = max(len(self.stages), index + 1)
    self.stage, self.num_stages, self.hw, self.stage_total = index, num_stages, tuple(hw), steps
    self.stage_t0 = time.perf_counter()
    self.stage_starts.append(self.done_steps)
    if resumed_at:
      losses = [l for s, l in self._previous if s == index][:resumed_at]
      self.history += [(self.done_steps + i + 1, l) for i, l in enumerate(losses)]
      self.done_steps += resumed_at
    self.stage_steps_done = resumed_at
    self._resumed_at = resumed_at
    self._write({'stage': index, 'event': 'stage_start', 'size': list(hw),
                 'compile_s': None if compile_s is None else round(compile_s, 3),
                 'resumed_at': resumed_at})
    if not self.quiet:
      extra = f', compiled in {compile_s:.1f}s' if compile_s is not None else ''
      if resumed_at:
        extra += f', resumed at step {resumed_at}'
      self._line(f'stage {index + 1}/{num_stages}: {hw[1]}x{hw[0]} px, '
                 f'{steps} steps{extra}', newline=True)

  def chunk(self, losses, evaluations, terms: dict):
    """Records one chunk's per-step losses and its final loss terms."""
    losses = np.asarray(losses, np.float64)
    evaluations = np.asarray(evaluations)
    for loss, ev in zip(losses, evaluations):
      self.done_steps += 1
      self.stage_steps_done += 1
      self.history.append((self.done_steps, float(loss)))
      self._write({'stage': self.stage, 'size': list(self.hw),
                   'step': self.stage_steps_done, 'loss': float(loss),
                   'evaluations': int(ev)})
    now = time.perf_counter()
    self._write({'stage': self.stage, 'step': self.stage_steps_done,
                 'terms': {k: float(v) for k, v in terms.items()},
                 'elapsed_s': round(now - self.t0, 3)})
    if self.quiet:
      return
    rate = (self.stage_steps_done - self._resumed_at) / max(now - self.stage_t0, 1e-9)
    px = self.stages[min(self.stage, len(self.stages) - 1)][1]
    remaining = (self.stage_total - self.stage_steps_done) + sum(
        n * p / px for n, p in self.stages[self.stage + 1:])
    eta = remaining / rate if rate > 0 else float('inf')
    width = 20
    filled = int(width * self.stage_steps_done / max(1, self.stage_total))
    bar = '#' * filled + '.' * (width - filled)
    self._line(f'[{self.stage + 1}/{self.num_stages} {self.hw[1]}x{self.hw[0]}] '
               f'{bar} {self.stage_steps_done}/{self.stage_total} '
               f'loss {terms["total"]:.4g} (content {terms["content"]:.3g} '
               f'style {terms["style"]:.3g} tv {terms["tv"]:.2g}) '
               f'{rate:.2f} it/s ETA {_fmt_time(eta)}',
               newline=not self.tty)

  def end_stage(self):
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


def plot_losses(path: str, history, stage_starts, width=640, height=360) -> None:
  """A log-scale loss curve with stage boundaries, drawn with Pillow (PNG)."""
  img = Image.new('RGB', (width, height), 'white')
  d = ImageDraw.Draw(img)
  pts = [(s, l) for s, l in history if math.isfinite(l) and l > 0]
  left, right, top, bottom = 60, width - 15, 25, height - 35
  d.rectangle([left, top, right, bottom], outline='black')
  d.text((left, 5), 'loss (log scale) per step; dashed: stage start', fill='black')
  if pts:
    steps = np.array([p[0] for p in pts], np.float64)
    logs = np.log10(np.array([p[1] for p in pts], np.float64))
    lo, hi = float(logs.min()), float(logs.max())
    if hi - lo < 1e-9:
      lo, hi = lo - 0.5, hi + 0.5
    s0, s1 = float(steps.min()), float(max(steps.max(), steps.min() + 1))
    x = left + (steps - s0) / (s1 - s0) * (right - left)
    y = bottom - (logs - lo) / (hi - lo) * (bottom - top)
    for start in stage_starts[1:]:
      xs = left + (start - s0) / (s1 - s0) * (right - left)
      for yy in range(top, bottom, 8):
        d.line([(xs, yy), (xs, min(yy + 4, bottom))], fill=(150, 150, 150))
    d.line(list(zip(x.tolist(), y.tolist())), fill=(200, 30, 30), width=2)
    for frac in (0.0, 0.5, 1.0):
      v = lo + frac * (hi - lo)
      yy = bottom - frac * (bottom - top)
      d.text((5, yy - 6), f'{10 ** v:.3g}', fill='black')
    d.text((left, bottom + 8), f'step {int(s0)}', fill='black')
    d.text((right - 70, bottom + 8), f'step {int(s1)}', fill='black')
  atomic_write(path, lambda f: img.save(f, format='PNG'))
