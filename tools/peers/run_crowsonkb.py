r"""Runs the peer's own CLI (crowsonkb/style-transfer-pytorch, patched) and times it.

Run with the peer virtualenv's python (see tools/peers/README.md), in the
folder where the peer's ``trace.json`` should go:

  /work/peer-venv/bin/python tools/peers/run_crowsonkb.py \
      --src /work/peer-src/style-transfer-pytorch --result r.json -- \
      content.png style.jpg -o out.png --devices cpu -s 256

Everything after ``--`` goes to the peer's ``style_transfer.cli.main``
unchanged. This file only *wraps* two of the peer's methods with a clock and
calls the originals: ``StyleTransfer.__init__`` (model load: dequantising the
Caffe weights, excluded from the wall time) and ``StyleTransfer.stylize``
(the optimisation at all scales, from reading the content image to the last
iterate, with the peer's own image saves every 50 iterations and at each
scale's end: its wall time). ``--result`` gets
``{load_s, wall_s, stylize_start, stylize_end, scales: [{w, h, iterations,
iter_s}], patched, args (the CLI's), defaults (stylize's)}`` where ``iter_s`` is the median interval between the
peer's per-iteration callbacks at that scale.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time


def _per_scale(iterates):
  scales = []
  for it in iterates:
    if not scales or (scales[-1]['w'], scales[-1]['h']) != (it['w'], it['h']) or it['i'] == 1:
      scales.append({'w': it['w'], 'h': it['h'], 'times': []})
    scales[-1]['times'].append(it['time'])
  out = []
  for s in scales:
    t = s['times']
    diffs = [b - a for a, b in zip(t, t[1:])]
    out.append({'w': s['w'], 'h': s['h'], 'iterations': len(t),
                'iter_s': statistics.median(diffs) if diffs else None})
  return out


def main() -> int:
  argv = sys.argv[1:]
  if '--' not in argv:
    print('usage: run_crowsonkb.py --src DIR --result R.json -- CLI ARGS', file=sys.stderr)
    return 2
  i = argv.index('--')
  p = argparse.ArgumentParser()
  p.add_argument('--src', required=True, help='the patched peer source tree')
  p.add_argument('--result', required=True)
  args = p.parse_args(argv[:i])
  sys.path.insert(0, os.path.abspath(args.src))
  from style_transfer import cli, style_transfer as st_mod   # the peer's own modules
  try:
    from style_transfer import _caffe_vgg  # noqa: F401  (present only when patched)
    patched = True
  except ImportError:
    patched = False
  if not patched:
    print('the peer source is not patched (tools/peers/crowsonkb_caffe.patch)', file=sys.stderr)
    return 2

  clock = {}
  orig_init, orig_stylize = st_mod.StyleTransfer.__init__, st_mod.StyleTransfer.stylize

  def timed_init(self, *a, **k):
    t = time.time()
    orig_init(self, *a, **k)
    clock['load_s'] = time.time() - t

  def timed_stylize(self, *a, **k):
    clock['stylize_start'] = time.time()
    try:
      return orig_stylize(self, *a, **k)
    finally:
      clock['stylize_end'] = time.time()

  # The CLI reads its option defaults from stylize's signature: keep them visible.
  functools.update_wrapper(timed_stylize, orig_stylize)
  timed_stylize.__kwdefaults__ = orig_stylize.__kwdefaults__
  st_mod.StyleTransfer.__init__ = timed_init
  st_mod.StyleTransfer.stylize = timed_stylize
  cli.StyleTransfer = st_mod.StyleTransfer
  sys.argv = ['style_transfer', *argv[i + 1:]]
  cli.main()
  with open('trace.json') as f:
    trace = json.load(f)
  result = dict(clock, wall_s=clock['stylize_end'] - clock['stylize_start'],
                scales=_per_scale(trace['iterates']), patched=patched,
                args=trace['args'], defaults=orig_stylize.__kwdefaults__)
  with open(args.result, 'w') as f:
    json.dump(result, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
