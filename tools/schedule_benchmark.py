r"""Optimisers and coarse-to-fine schedules at equal wall time, judged.

  python tools/schedule_benchmark.py --size 512 --budget-s 120 --out sched.json
  python tools/schedule_benchmark.py --variants lbfgs_x2 adam_auto_avg --budget-s 60

Each *variant* is an optimiser (L-BFGS, Adam, Adam with iterate averaging
``average_decay``) on a schedule (``x2``: our sizes ``(size/2, size)`` with
steps ``(3n, n)``, the default's ratio; ``auto``: ``sizes=auto,SIZE``, √2 steps
from 128 px, steps ``(2n, n)``: the first stage twice the others), all with
the same style statistic (``--statistic``, default ``w2``, with β =
``STYLE_WEIGHT``: 30 for W2 gives the judged content distance of the Gram
default's β = 100). For every variant
the tool

1. runs it at two small ``n`` (after a warm-up run) and times each stage
   (a hook on the engine): the difference gives seconds per step at each
   stage, the rest is the run's fixed cost (targets, compilation from the
   warm persistent cache, the first evaluation of the loss terms);
2. solves for the ``n`` whose predicted wall time is ``--budget-s``, runs it
   again (and once more with ``n`` rescaled if it missed the budget by over
   10 %: L-BFGS's first steps take more line-search trials than later ones),
   and records the real wall time (from ``engine.execute``'s start to
   its end, VGG19 already loaded, the compilation cache warm: a user's second
   run);
3. judges the output with ``tools/judge.py`` (content distance at relu4_2,
   Gram and W2 style distances on relu1_1..5_1, our Caffe VGG19) — the
   float image as the engine returns it, not an 8-bit file (the rounding
   moves the distances by ~1e-3; compare_peers.py judges 8-bit files, as
   every method there writes them).

Variants run one after the other in one process on the bundled cat photo and
The Starry Night; compare numbers of one run only (the CPU model varies).
"""

from __future__ import annotations

import argparse
import json
import time

import _common  # pylint: disable=unused-import  (first: the repository on sys.path)
import judge
import nst_jax
from nst_jax import config as config_lib
from nst_jax import engine
from nst_jax import plan as plan_lib

# name -> (schedule, config overrides)
VARIANTS = {
    'lbfgs_x2': ('x2', dict(optimizer='lbfgs')),
    'lbfgs_auto': ('auto', dict(optimizer='lbfgs')),
    'adam_x2': ('x2', dict(optimizer='adam')),
    'adam_auto': ('auto', dict(optimizer='adam')),
    'adam_x2_avg': ('x2', dict(optimizer='adam', average_decay=0.95)),
    'adam_auto_avg': ('auto', dict(optimizer='adam', average_decay=0.95)),
    'adam_auto_avg99': ('auto', dict(optimizer='adam', average_decay=0.99)),
}


class StageTimer(engine.Hook):
  """Seconds per step of each stage (stage_start to stage_end over its steps)."""

  def __init__(self):
    self.start, self.per_step = {}, {}

  def stage_start(self, stage, compile_s, resumed_at):
    self.start[stage] = time.perf_counter()

  def stage_end(self, stage, state):
    self.per_step[stage] = (time.perf_counter() - self.start[stage]) / max(1, int(state.step))


def schedule(kind: str, size: int, n: int):
  """``(sizes, steps)`` of a schedule at step unit ``n``."""
  if kind == 'x2':
    return (size // 2, size), (3 * n, n)
  sizes = config_lib.geometric_sizes(size)
  return sizes, (2 * n,) + (n,) * (len(sizes) - 1)


STYLE_WEIGHT = {'gram': 100.0, 'w2': 30.0}    # β: equal judged content distance (README)


def run(params, content, style, sizes, steps, overrides, statistic, hooks=()):
  """``(image, wall seconds)`` of one run through the engine."""
  c = nst_jax.make_config(content=content, styles=(style,), sizes=sizes, steps=steps,
                          style_statistic=statistic, style_weight=STYLE_WEIGHT[statistic],
                          tensorboard=False, **overrides)
  plan = plan_lib.make_plan(config_lib.validate(c))
  t = time.perf_counter()
  out = engine.execute(plan, params, hooks=list(hooks))
  return out[-1][0], time.perf_counter() - t


def measure(params, name, size, budget, statistic, content, style, calib=(2, 6)):
  kind, overrides = VARIANTS[name]
  stage_times = []
  for n in (calib[0],) + tuple(calib):           # the first run warms the caches
    sizes, steps = schedule(kind, size, n)
    timer = StageTimer()
    _, wall = run(params, content, style, sizes, steps, overrides, statistic, [timer])
    stage_times.append((steps, [timer.per_step[k] * s for k, s in enumerate(steps)], wall))
  (s0, t0, w0), (s1, t1, _) = stage_times[1:]
  # Per stage, seconds per step from the difference of the two runs (a
  # stage's first chunk also compiles the loss-terms function: fixed cost).
  per_step = [(b - a) / (m - k) for a, b, k, m in zip(t0, t1, s0, s1)]
  fixed = w0 - sum(k * t for k, t in zip(s0, per_step))
  unit = sum(k / calib[0] * t for k, t in zip(s0, per_step))  # seconds per unit of n
  n = max(1, round((budget - fixed) / unit))
  sizes, steps = schedule(kind, size, n)
  image, wall = run(params, content, style, sizes, steps, overrides, statistic)
  if abs(wall - budget) > 0.1 * budget:        # L-BFGS's early steps cost more: once more
    n = max(1, round(n * (budget - fixed) / max(wall - fixed, 1e-3)))
    sizes, steps = schedule(kind, size, n)
    image, wall = run(params, content, style, sizes, steps, overrides, statistic)
  scores = judge.judge(params, image, nst_jax.load_image(content), nst_jax.load_image(style))
  return dict(variant=name, schedule=kind, sizes=list(sizes), steps=list(steps),
              overrides=overrides, fixed_s=round(fixed, 2),
              s_per_step=[round(t, 4) for t in per_step],
              predicted_s=round(fixed + n * unit, 1), wall_s=round(wall, 1), **scores), image


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--size', type=int, default=512)
  p.add_argument('--budget-s', type=float, default=120.0)
  p.add_argument('--statistic', default='w2', choices=('gram', 'w2'))
  p.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
  p.add_argument('--content', default=nst_jax.config.asset('chelsea.png'))
  p.add_argument('--style', default=nst_jax.config.asset('starry_night.jpg'))
  p.add_argument('--images', default='', help='folder to save each output PNG in')
  p.add_argument('--out', default='')
  args = p.parse_args(argv)
  engine.enable_compilation_cache()
  params = nst_jax.load_vgg19()
  results = []
  for name in args.variants:
    r, image = measure(params, name, args.size, args.budget_s, args.statistic,
                       args.content, args.style)
    results.append(r)
    print(json.dumps(r), flush=True)
    if args.images:
      import os
      os.makedirs(args.images, exist_ok=True)
      nst_jax.save_image(os.path.join(args.images, f'{name}_{args.size}.png'), image)
  print(f'\n| variant | sizes | steps | wall s | content | style Gram | style W2 |\n'
        f'|---|---|---|---|---|---|---|')
  for r in results:
    print(f'| {r["variant"]} | {",".join(map(str, r["sizes"]))} | '
          f'{",".join(map(str, r["steps"]))} | {r["wall_s"]} | {r["content"]:.3f} | '
          f'{r["style_gram"]:.3f} | {r["style_w2"]:.3f} |')
  print(f'load1 {_common.load1():.2f}')
  if args.out:
    from nst_jax.files import atomic_write  # pylint: disable=g-import-not-at-top
    record = dict(size=args.size, budget_s=args.budget_s, statistic=args.statistic,
                  results=results)
    atomic_write(args.out, lambda f: json.dump(record, f, indent=1), mode='w')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
