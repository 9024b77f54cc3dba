r"""Posters in bounded memory: measurements behind the memory plan and tiling.

  # Peak RSS of one whole CLI stage (the astronaut photo at SxS, the default
  # config, one L-BFGS step, checkpoints included), under /usr/bin/time -v:
  python tools/poster_benchmark.py rss --size 4096 [--tile auto] [--memory-limit-gb 0]

  # Time per loss+gradient evaluation, tiled / untiled, after compilation:
  python tools/poster_benchmark.py ratio --size 2048 --tiles 512 768 1024

  # XLA's memory analysis of a compiled step, compile only (nothing allocated):
  python tools/poster_benchmark.py analysis --size 8192 --tile 1024 --lbfgs-memory 10

  # The plan's estimates for print sizes (memory, CPU time) on a CPU with
  # --cpu-gb of available RAM and on a device with --device-gb of memory:
  python tools/poster_benchmark.py table --cpu-gb 23 --device-gb 80 \\
      --s-per-mp 9.8 --evals-per-step 1.2

  # Judged distances against steps: a real CLI run of configs/poster.py
  # (or any --config / overrides after --), its intermediates every --every
  # steps at the top stages judged (tools/judge.py) with the wall time each
  # was reached at (the loss log's elapsed_s):
  python tools/poster_benchmark.py steps --workdir /tmp/a4 --every 25 -- \
      --config.poster=A4 --config.dpi=150

  # How many more steps a shorter L-BFGS history (or Adam) needs for the
  # same loss: one stage of --size px, --steps steps each, the loss per step
  # from the log; steps to reach the reference's loss at a few checkpoints:
  python tools/poster_benchmark.py history --size 256 --steps 120 \
      --histories 10 7 5 3 --adam

Every mode prints a JSON line per measurement (and the table mode a
Markdown table); WORKSPACE.md has the numbers measured on the project's
2-core CPU.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from _common import ROOT, SHARED_IMAGES

CONTENT = os.path.join(SHARED_IMAGES, 'astronaut.png')   # 512x512


def _square_content(tmp):
  """A square photo: the shared astronaut if present, else the cat cropped."""
  if os.path.exists(CONTENT):
    return os.path.abspath(CONTENT)
  from PIL import Image
  from nst_jax.config import asset
  cat = Image.open(asset('chelsea.png')).convert('RGB')
  path = os.path.join(tmp, 'square.png')
  cat.crop((0, 0, 300, 300)).save(path)
  return path


def rss(args):
  with tempfile.TemporaryDirectory() as tmp:
    cmd = ['/usr/bin/time', '-v', sys.executable, '-m', 'nst_jax', f'--workdir={tmp}/w',
           f'--config.content={_square_content(tmp)}', f'--config.sizes={args.size}',
           '--config.steps=1', '--config.log_every=1', f'--config.tile={args.tile}',
           f'--config.memory_limit_gb={args.memory_limit_gb}', '--quiet',
           f'--config.activation_dtype={args.dtype}']
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    wall = time.perf_counter() - t
  err = r.stderr
  peak = re.search(r'Maximum resident set size \(kbytes\): (\d+)', err)
  plan = re.search(r'stage 1: .*?, (\d+\.\d+) GB of (\d+\.\d+) GB \(([^,]+),', err)
  xla = re.search(r'XLA buffers (\d+\.\d+) GB \(temp (\d+\.\d+) GB\)', err)
  out = dict(mode='rss', size=args.size, tile=args.tile, returncode=r.returncode,
             wall_s=round(wall, 1),
             peak_rss_gb=round(int(peak.group(1)) / 2**20, 2) if peak else None,
             plan_gb=float(plan.group(1)) if plan else None,
             limit_gb=float(plan.group(2)) if plan else None,
             plan_tile=plan.group(3) if plan else None,
             xla_gb=float(xla.group(1)) if xla else None,
             xla_temp_gb=float(xla.group(2)) if xla else None)
  if r.returncode:
    out['error'] = err.strip().splitlines()[-1][-300:]
  print(json.dumps(out), flush=True)


def _objective(size):
  import jax.numpy as jnp
  import nst_jax
  from nst_jax import image_io, objective
  from nst_jax.config import asset
  params = nst_jax.load_vgg19()
  content = image_io.resize(image_io.load_image(asset('chelsea.png')), (size, size))
  style = image_io.load_image(asset('starry_night.jpg'))
  style = image_io.resize(style, image_io.fit_long_side(style.shape[:2], size))
  targets = objective.make_targets(params, content, [style], tile=_target_tile(size))
  return params, jnp.asarray(content), targets, objective.LossWeights(1.0, 100.0, 0.0)


def _target_tile(size):
  """Targets of big sizes in tiles (forward only; the same values)."""
  return 512 if size > 1024 else 0


def ratio(args):
  import jax
  from nst_jax import objective, tiling
  params, x, targets, w = _objective(args.size)
  times = {}
  for tile in [0] + args.tiles:
    f = jax.jit(jax.value_and_grad(lambda x: objective.total_loss(x, params, targets, w,
                                                                  tile=tile)))
    t = time.perf_counter()
    jax.block_until_ready(f(x))
    compile_s = time.perf_counter() - t
    ts = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      jax.block_until_ready(f(x))
      ts.append(time.perf_counter() - t)
    times[tile] = min(ts)
    tl = tiling.make_tiling((args.size, args.size), tile, targets.layers)
    print(json.dumps(dict(mode='ratio', size=args.size, tile=tile, eval_s=round(min(ts), 3),
                          first_call_s=round(compile_s, 1),
                          tiles=tl.count if tl else 1,
                          window=tl.rows.window if tl else args.size,
                          ratio=round(min(ts) / times[0], 3))), flush=True)


def analysis(args):
  import jax
  import jax.numpy as jnp
  import nst_jax
  from nst_jax import memory, objective, optim, tiling
  params = nst_jax.load_vgg19()
  hw = (args.size, args.size)
  abstract = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  # Targets' shapes only (their values do not change the buffers).
  t = jax.eval_shape(lambda c, s: objective.make_targets(params, c, [s]),
                     abstract((64, 64, 3)), abstract((64, 64, 3)))
  content = {l: nst_jax.losses.Target(abstract((args.size // 8, args.size // 8, 512)),
                                      abstract(())) for l in t.content}
  targets = objective.Targets(content, t.style)
  w = objective.LossWeights(1.0, 100.0, 0.0)
  opt = optim.make_optimizer('lbfgs', lbfgs_memory=args.lbfgs_memory)
  run = optim.make_chunk_fn(lambda p, s, tg: objective.total_loss(p, s[0], tg, s[1],
                                                                  tile=args.tile), opt, 1)
  state = jax.eval_shape(lambda p: optim.init_state(opt, p), abstract((1,) + hw + (3,)))
  batched = jax.tree.map(lambda x: jax.ShapeDtypeStruct((1,) + x.shape, x.dtype), targets)
  t0 = time.perf_counter()
  a = run.lower(state, ((params, w), batched), jnp.int32(1)).compile().memory_analysis()
  step = dict(temp=a.temp_size_in_bytes, args=a.argument_size_in_bytes,
              out=a.output_size_in_bytes, alias=a.alias_size_in_bytes)
  vg = jax.jit(jax.value_and_grad(lambda x, tg: objective.total_loss(
      x, params, tg, w, tile=args.tile))).lower(abstract(hw + (3,)), targets).compile()
  b = vg.memory_analysis()
  est = memory.estimate(hw, batch=1, channels=3, layers=targets.layers,
                        content_layers=tuple(targets.content), tile=args.tile,
                        lbfgs_memory=args.lbfgs_memory, cpu=False)
  gb = lambda n: round(n / 2**30, 2)
  print(json.dumps(dict(
      mode='analysis', size=args.size, tile=args.tile, lbfgs_memory=args.lbfgs_memory,
      compile_s=round(time.perf_counter() - t0, 1),
      step_total_gb=gb(step['temp'] + step['args'] + step['out'] - step['alias']),
      step_temp_gb=gb(step['temp']), step_args_gb=gb(step['args']),
      loss_grad_temp_gb=gb(b.temp_size_in_bytes),
      loss_grad_total_gb=gb(b.temp_size_in_bytes + b.argument_size_in_bytes),
      plan_estimate_gb=gb(est.total), plan_parts_gb={k: gb(v) for k, v in est.parts.items()},
      tiles=_tile_count(hw, args.tile, targets.layers))), flush=True)


def _tile_count(hw, tile, layers) -> int:
  from nst_jax import tiling
  t = tiling.make_tiling(hw, tile, layers)
  return t.count if t else 1


def table(args):
  """Print sizes: the plan's memory (CPU and one GPU) and an estimated CPU time.

  The time is an estimate: per stage of the poster schedule, steps ×
  ``--evals-per-step`` × megapixels × ``--s-per-mp`` (one untiled
  loss+gradient evaluation per megapixel, measured with the ``ratio`` mode),
  times the plan's own time model where it tiles or shortens the history
  (``memory.time_factor``: the windows' pixels over the image's ×
  ``memory.TILED_TIME_FACTOR``, fitted to the ``ratio`` measurements, ×
  the history's measured factor).
  """
  import math
  from nst_jax import memory, poster
  from nst_jax.objective import PAPER_STYLE_LAYERS
  layers = ('relu4_2',) + PAPER_STYLE_LAYERS
  if args.cpu_gb:
    cpu_limit, source = int(args.cpu_gb * memory.CPU_RAM_SHARE * 2**30), (
        f'{memory.CPU_RAM_SHARE:.0%} of {args.cpu_gb:g} GB available')
  else:
    cpu_limit, source = memory.device_limit(0)
  gpu_limit = int(args.device_gb * 0.95 * 2**30)

  def plan(hw, limit, cpu):
    try:
      return memory.plan_stage(hw, tile='auto', limit=limit, batch=1, channels=3,
                               layers=layers, content_layers=('relu4_2',), cpu=cpu)
    except Exception:  # pylint: disable=broad-except  (does not fit)
      return None

  def cell(m):
    if m is None:
      return 'does not fit'
    how = f'tile {m.tile}' if m.tile else 'untiled'
    return f'{m.total / 2**30:.1f} GB, {how}' + (f', m={m.lbfgs_memory}' if m.lbfgs_memory != 10 else '')

  lines = ['| sheet | dpi | pixels | CPU: plan (est.) | CPU: time (est.) | '
           f'GPU {args.device_gb:g} GB: plan (est.) | GPU: time |',
           '|---|---|---|---|---|---|---|']
  for name in ('A4', 'A3', 'A2', 'A1', 'A0'):
    for dpi in (150, 300):
      h, w = poster.poster_pixels((512, 724), dpi, name)      # landscape, ISO aspect
      seconds, cpu_plan, gpu_plan = 0.0, None, None
      for long_side, steps in poster.schedule(max(h, w)):
        hw = (round(long_side * h / max(h, w)), long_side)
        cpu_plan, gpu_plan = plan(hw, cpu_limit, True), plan(hw, gpu_limit, False)
        mp = hw[0] * hw[1] / 1e6
        over = cpu_plan.time if cpu_plan is not None else 1.0   # the plan's time model
        seconds += steps * args.evals_per_step * mp * args.s_per_mp * over
      hours = seconds / 3600
      when = (f'{hours:.1f} h' if hours >= 1 else f'{math.ceil(seconds / 60)} min') \
          if cpu_plan is not None else '—'
      row = dict(sheet=name, dpi=dpi, px=f'{w}x{h}', mp=round(h * w / 1e6, 1),
                 cpu=cell(cpu_plan), cpu_time=when, gpu=cell(gpu_plan))
      print(json.dumps(row), flush=True)
      lines.append(f'| {name} | {dpi} | {w} × {h} ({row["mp"]} MP) | {row["cpu"]} | {when} | '
                   f'{row["gpu"]} | not measured |')
  print('\n'.join(lines))
  print(f'\ncpu limit: {cpu_limit / 2**30:.1f} GB ({source}); gpu: {gpu_limit / 2**30:.1f} GB '
        f'(95% of {args.device_gb:g} GB); {args.s_per_mp} s per evaluation per MP, '
        f'{args.evals_per_step} evaluations per step, tiled factor '
        f'{memory.TILED_TIME_FACTOR}, histories {memory.HISTORY_TIME_FACTOR}')


def steps(args):
  """A CLI run, its top stages' intermediates judged against steps and time."""
  import judge as judge_lib
  from nst_jax import config as cl
  work = args.workdir or tempfile.mkdtemp(prefix='poster_steps_')
  cmd = [sys.executable, '-m', 'nst_jax', f'--config={args.config}', f'--workdir={work}',
         f'--config.save_every={args.every}', f'--config.log_every={args.every}',
         '--config.checkpoint_every=0', '--quiet', *args.overrides]
  t = time.time()
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  wall = time.time() - t
  if r.returncode:
    sys.exit(r.stderr[-3000:])
  records = [json.loads(l) for l in open(os.path.join(work, 'losses.jsonl'))]
  elapsed = {(r['stage'], r['step']): r['elapsed_s'] for r in records if 'elapsed_s' in r}
  starts = [r for r in records if r.get('event') == 'stage_start']
  stages = sorted({r['stage'] for r in starts})
  config = json.load(open(os.path.join(work, 'config.json')))
  content = config.get('content') or cl.asset('chelsea.png')
  style = (config.get('styles') or [cl.asset('starry_night.jpg')])[0]
  images = []
  for k in stages[-args.top:]:
    pat = re.compile(rf'stage{k + 1}_step(\d+)\.png$')
    for name in sorted(os.listdir(os.path.join(work, 'intermediates'))):
      m = pat.search(name)
      if m:
        images.append((k, int(m.group(1)), os.path.join(work, 'intermediates', name)))
  judged = judge_lib.judge_files([p for *_, p in images], content, style)
  for (k, step, path), j in zip(images, judged):
    print(json.dumps({'stage': k + 1, 'step': step, 'elapsed_s': elapsed.get((k, step)),
                      'content': j['content'], 'style_gram': j['style_gram'],
                      'style_w2': j['style_w2'], 'size': j['size'], 'image': path}),
          flush=True)
  print(json.dumps({'wall_s': round(wall, 1), 'command': ' '.join(cmd[2:]),
                    'stage_starts': starts}), flush=True)


def _loss_curve(work, *flags):
  cmd = [sys.executable, '-m', 'nst_jax', '--config=configs/default.py', f'--workdir={work}',
         '--config.checkpoint_every=0', '--quiet', *flags]
  t = time.time()
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if r.returncode:
    sys.exit(r.stderr[-3000:])
  records = [json.loads(l) for l in open(os.path.join(work, 'losses.jsonl'))]
  loss = [r['loss'] for r in records if 'loss' in r]
  evals = sum(r.get('evaluations', 1) for r in records if 'loss' in r)
  compile_s = sum(r.get('compile_s', 0) for r in records if r.get('event') == 'stage_start')
  return loss, evals, time.time() - t - compile_s


def _steps_to(curve, value):
  """The first step (1-based) whose loss is at most ``value``; None if never."""
  return next((k + 1 for k, v in enumerate(curve) if v <= value), None)


def history(args):
  """Steps (and evaluations) each history needs for the longest one's loss."""
  runs = {f'lbfgs m={m}': ('--config.optimizer=lbfgs', f'--config.lbfgs_memory={m}')
          for m in args.histories}
  if args.adam:
    runs['adam'] = ('--config.optimizer=adam',)
  curves = {}
  with tempfile.TemporaryDirectory() as tmp:
    for k, (name, flags) in enumerate(runs.items()):
      n = args.steps * (1 if k == 0 else 2)     # the others: long enough to catch up
      curves[name] = _loss_curve(os.path.join(tmp, name.replace(' ', '_')),
                                 f'--config.sizes={args.size}', f'--config.steps={n}',
                                 f'--config.log_every={n}', *flags)
  ref_name = next(iter(runs))
  ref = curves[ref_name][0]
  ref_s_per_step = curves[ref_name][2] / len(ref)
  marks = [args.steps * k // 4 for k in (1, 2, 3, 4)]
  for name, (curve, evals, wall) in curves.items():
    reach = {n: _steps_to(curve, ref[n - 1]) for n in marks}
    factor = [reach[n] / n for n in marks if reach[n]]
    print(json.dumps({'run': name, 'size': args.size, 'steps': len(curve),
                      'loss_at_reference_steps': curve[len(ref) - 1], 'final_loss': curve[-1],
                      'evaluations_per_step': round(evals / len(curve), 3),
                      's_per_step': round(wall / len(curve), 3),
                      f'steps_to_{ref_name}': reach,
                      'step_factor': round(max(factor), 3) if len(factor) == len(marks)
                      else None,
                      'time_factor': round(max(factor) * wall / len(curve) / ref_s_per_step, 3)
                      if len(factor) == len(marks) else None}), flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('mode', choices=('rss', 'ratio', 'analysis', 'table', 'steps', 'history'))
  p.add_argument('--steps', type=int, default=120, help='history: steps per run')
  p.add_argument('--histories', type=int, nargs='*', default=[10, 7, 5, 3])
  p.add_argument('--adam', action='store_true', help='history: also Adam')
  p.add_argument('--config', default='configs/poster.py', help='steps: the config')
  p.add_argument('--workdir', default='', help='steps: the run\'s workdir (default: a temp dir)')
  p.add_argument('--every', type=int, default=25, help='steps: judge every N steps')
  p.add_argument('--top', type=int, default=2, help='steps: judge the last N stages')
  p.add_argument('--size', type=int, default=2048)
  p.add_argument('--tile', default='auto')
  p.add_argument('--tiles', type=int, nargs='*', default=[512, 768, 1024])
  p.add_argument('--repeats', type=int, default=2)
  p.add_argument('--memory-limit-gb', type=float, default=0.0)
  p.add_argument('--lbfgs-memory', type=int, default=10)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--device-gb', type=float, default=80.0)
  p.add_argument('--cpu-gb', type=float, default=0.0,
                 help='table: available RAM to plan for (0: this machine, now)')
  p.add_argument('--s-per-mp', type=float, default=9.8,
                 help='table: seconds per untiled evaluation per megapixel (CPU)')
  p.add_argument('--evals-per-step', type=float, default=1.2)
  args, overrides = p.parse_known_args()
  args.overrides = [a for a in overrides if a != '--']    # steps: --config.x=y flags
  if args.overrides and args.mode != 'steps':
    p.error(f'unrecognized arguments: {" ".join(args.overrides)}')
  if args.mode == 'analysis':
    args.tile = int(args.tile)
  {'rss': rss, 'ratio': ratio, 'analysis': analysis, 'table': table,
   'steps': steps, 'history': history}[args.mode](args)


if __name__ == '__main__':
  main()
