r"""How much the suite's run-vs-run comparisons depend on the CPU's kernels.

  python tools/isa_spread.py                          # every case, native avx2 avx
  python tools/isa_spread.py --cases memory batch --cpus native avx2
  python tools/isa_spread.py --cpu avx2 -- python -m pytest -q tests/test_memory.py -k tiled_run

XLA:CPU picks its kernels by the CPU it runs on, in two places: LLVM
compiles the fused elementwise loops for the host's ISA (capped by
``XLA_FLAGS=--xla_cpu_max_isa``), and YNNPACK, which runs the dots,
convolutions and reductions, picks its micro-kernels from cpuinfo's CPUID
flags at run time -- ``max_isa`` does not reach it. An emulated CPU caps
both: the flag, plus YNNPACK's cached flags (``ynn::get_supported_arch_flags``,
found with ``nm`` in jaxlib's ``libjax_common.so``) overwritten before the
first computation. ``avx2`` is an AVX2+FMA CPU without AVX-512 (AMD EPYC
Zen 2/3), ``avx`` one with AVX only (the oldest jaxlib accepts), ``noynn``
XLA's other kernels (``--xla_cpu_experimental_ynn_fusion_type=``, as an
older jaxlib). Every Python process started under ``--cpu`` (pytest, the
CLI, the tests' subprocesses) gets the emulation through a generated
``sitecustomize`` on ``PYTHONPATH``.

For each case and CPU this prints the quantity the test bounds (max / mean
|a - b| of its two runs, single-evaluation relative errors) and how far each
run's output moved from the native CPU's: the size of the rounding that the
L-BFGS steps amplify. This is for measuring bounds, never for making numbers
equal: the tests run on whatever CPU they get. WORKSPACE.md ("Tests that
compare runs") has the numbers of the last run.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name: (xla_cpu_max_isa, YNNPACK arch flags kept (bit mask), extra XLA flags)
# YNNPACK's bits: sse2 1, ssse3 2, sse41 4, avx 8, f16c 16, avx2 32, fma3 64,
# then AVX-512 and AMX (read from the disassembly of jaxlib 0.10.2).
CPUS = {'native': (None, None, ''), 'avx2': ('AVX2', 0x7f, ''), 'avx': ('AVX', 0x0f, ''),
        'noynn': (None, None, '--xla_cpu_experimental_ynn_fusion_type=')}
_YNN = '_ZN3ynn24get_supported_arch_flagsEv'
_YNN_FLAGS = '_ZZN3ynn24get_supported_arch_flagsEvE5flags'


def apply_emulation():
  """In this process: cap LLVM's ISA and YNNPACK's (before JAX computes anything)."""
  if os.environ.get('NST_HALO_BUG'):        # a broken tiling, to see what a bound catches
    from nst_jax import tiling
    real = tiling.halo_and_align
    tiling.halo_and_align = lambda layers: (real(layers)[0] - real(layers)[1], real(layers)[1])
  isa, keep, extra = CPUS[os.environ['NST_EMULATE_CPU']]
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split() if 'max_isa' not in f]
  os.environ['XLA_FLAGS'] = ' '.join(flags + ([f'--xla_cpu_max_isa={isa}'] if isa else [])
                                     + ([extra] if extra else []))
  if keep is None:
    return
  import jax  # noqa: F401  (loads libjax_common.so; computes nothing)
  import jaxlib
  lib = os.path.realpath(os.path.join(os.path.dirname(jaxlib.__file__), 'libjax_common.so'))
  base = next(int(l.split('-')[0], 16) for l in open('/proc/self/maps')
              if l.split()[-1] == lib and int(l.split()[2], 16) == 0)
  syms = {p[2]: int(p[0], 16) for p in (l.split() for l in subprocess.run(
      ['nm', lib], capture_output=True, text=True, check=True).stdout.splitlines())
          if len(p) == 3 and p[2] in (_YNN, _YNN_FLAGS)}
  if len(syms) != 2:
    sys.exit(f'isa_spread: {lib} has no {_YNN} (another jaxlib?): only native, noynn work')
  native = ctypes.CFUNCTYPE(ctypes.c_uint64)(base + syms[_YNN])()   # initialises the cache
  cached = ctypes.c_uint64.from_address(base + syms[_YNN_FLAGS])
  assert cached.value == native, (hex(cached.value), hex(native))
  cached.value = native & keep


def _env(cpu, halo_bug=False):
  site = tempfile.mkdtemp(prefix='isa_site_')
  atexit.register(shutil.rmtree, site, True)
  with open(os.path.join(site, 'sitecustomize.py'), 'w') as f:
    f.write(f'import sys\nsys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n'
            'import isa_spread\nisa_spread.apply_emulation()\n')
  path = os.pathsep.join([site, ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p])
  return dict(os.environ, NST_EMULATE_CPU=cpu, PYTHONPATH=path,
              **({'NST_HALO_BUG': '1'} if halo_bug else {}))


# -- the cases: each returns {name: (a, b)} (the test compares a with b) and
# {name: number} (single-evaluation errors, the tests' own measurements) --------


def case_memory(tmp):
  """test_memory.py::test_tiled_run_equals_untiled_run."""
  import nst_jax
  from nst_jax import config as cl
  kw = dict(sizes=(200,), steps=(4,), content_layers=('relu3_1',),
            style_layers=('relu1_1', 'relu2_1', 'relu3_1'))
  run = lambda tile: nst_jax.stylize(cl.asset('chelsea.png'), cl.asset('starry_night.jpg'),
                                     tile=tile, **kw)
  untiled, tiled = run(0), run(96)
  sys.path.insert(0, os.path.join(ROOT, 'tests'))
  from test_memory import one_evaluation
  return {'tiled_vs_untiled': (tiled, untiled)}, one_evaluation(None, untiled)


def case_sharding(tmp):
  """test_sharding.py: 8 simulated devices vs 1 (tests/sharding_worker.py)."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', WORK=tmp)
  r = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'sharding_worker.py')],
                     env=env, capture_output=True, text=True, check=True)
  res = json.loads(r.stdout.strip().splitlines()[-1])
  out = np.load(os.path.join(tmp, 'outputs.npz'))
  pairs = {k: (out[k + '_multi'], out[k + '_single'])
           for k in ('run', 'tiled_run', 'clip')}
  return pairs, {k: res[k] for k in ('loss_rel', 'grad_rel', 'tiled_loss_rel', 'tiled_grad_rel')}


def case_batch(tmp):
  """test_batch.py: a batch (one L-BFGS per image) vs each image alone."""
  import nst_jax
  from PIL import Image
  from nst_jax import config as cl
  folder = os.path.join(tmp, 'photos')
  os.makedirs(folder)
  cat = Image.open(cl.asset('chelsea.png')).convert('RGB')
  cat.save(os.path.join(folder, 'cat.png'))
  cat.transpose(Image.FLIP_LEFT_RIGHT).save(os.path.join(folder, 'cat_flipped.jpg'), quality=95)
  kw = dict(sizes=(48,), steps=(6,), log_every=3)
  batch = nst_jax.stylize(folder, cl.asset('starry_night.jpg'), **kw)
  pairs = {f'plain_{n}': (b, nst_jax.stylize(os.path.join(folder, n), cl.asset('starry_night.jpg'),
                                            **kw)) for n, b in zip(sorted(os.listdir(folder)), batch)}
  ctl = dict(sizes=(48,), steps=(6,), color_control='luminance', content_guidance='halves_x')
  styles = [cl.asset('starry_night.jpg'), cl.asset('the_scream.jpg')]
  pairs['luminance_guided'] = (nst_jax.stylize(folder, styles, **ctl)[0],
                               nst_jax.stylize(os.path.join(folder, 'cat.png'), styles, **ctl))
  return pairs, {}


def case_multiprocess(tmp):
  """test_multiprocess.py: 2 processes x 2 devices vs 1 process x 4 devices."""
  from PIL import Image
  sys.path.insert(0, os.path.join(ROOT, 'tests'))
  import test_multiprocess as mp
  from nst_jax import config as cl
  from pathlib import Path
  tmp, pairs, numbers = Path(tmp), {}, {}
  folder = tmp / 'photos'
  folder.mkdir()
  shutil.copy(cl.asset('chelsea.png'), folder / 'a.png')
  Image.open(cl.asset('chelsea.png')).transpose(Image.FLIP_LEFT_RIGHT).save(folder / 'b.png')
  for name, extra, files in (('image', (), ['final.png']),
                             ('batch', (f'--config.content={folder}', '--config.steps=4'),
                              ['batch/a.png', 'batch/b.png'])):
    mp._single(tmp / name / 'single', *extra)
    w = mp._workdirs(tmp / name)
    mp._pair(w, *extra)
    for f in files:
      pairs[f'{name}_{f}'] = (mp._image(w[0] / f), mp._image(tmp / name / 'single' / f))
    logs = [[r['loss'] for r in map(json.loads, open(d / 'losses.jsonl')) if 'loss' in r]
            for d in (w[0], tmp / name / 'single')]
    numbers[f'{name}_first_loss_rel'] = abs(logs[0][0] - logs[1][0]) / abs(logs[1][0])
    numbers[f'{name}_last_loss_rel'] = abs(logs[0][-1] - logs[1][-1]) / abs(logs[1][-1])
  return pairs, numbers


def case_small(tmp):
  """Equal-by-construction runs: test_guidance, test_pipeline (32-96 px)."""
  import nst_jax
  from nst_jax import config as cl, image_io
  a = lambda n: cl.asset(n)
  kw = dict(sizes=(32,), steps=(4,), content_guidance='halves_x')
  pairs = {'guidance_same_vs_one': (
      nst_jax.stylize(a('chelsea.png'), [a('starry_night.jpg')] * 2, **kw),
      nst_jax.stylize(a('chelsea.png'), a('starry_night.jpg'), **kw))}
  kw = dict(sizes=(32,), steps=(4,))
  pairs['blend_1_0_vs_single'] = (
      nst_jax.stylize(a('chelsea.png'), [a('starry_night.jpg'), a('the_scream.jpg')],
                      style_blend_weights=(1.0, 0.0), **kw),
      nst_jax.stylize(a('chelsea.png'), a('starry_night.jpg'), **kw))
  kw = dict(init='noise', seed=3)
  one = nst_jax.stylize(a('chelsea.png'), a('the_scream.jpg'), sizes=(48,), steps=(15,), **kw)
  two = nst_jax.stylize(a('chelsea.png'), a('the_scream.jpg'), sizes=(48, 96), steps=(15, 0),
                        **kw)
  pairs['coarse_to_fine'] = (two, np.asarray(image_io.resize(one, (64, 96))))
  return pairs, {}


CASES = {k[5:]: v for k, v in globals().items() if k.startswith('case_')}


def _worker(cases, out):
  for name in cases:
    with tempfile.TemporaryDirectory() as tmp:
      pairs, numbers = CASES[name](tmp)
    np.savez(os.path.join(out, name + '.npz'),
             **{f'{k}|{i}': np.asarray(v[i]) for k, v in pairs.items() for i in (0, 1)})
    with open(os.path.join(out, name + '.json'), 'w') as f:
      json.dump(numbers, f)


def _report(cases, cpus, out):
  for case in cases:
    print(f'== {case}: {CASES[case].__doc__.strip()}')
    got = {c: (np.load(os.path.join(out, c, case + '.npz')),
               json.load(open(os.path.join(out, c, case + '.json')))) for c in cpus}
    ref = got[cpus[0]][0]
    for key in sorted({k.split('|')[0] for k in ref.files}):
      for cpu in cpus:
        arrays = got[cpu][0]
        d = np.abs(arrays[key + '|0'] - arrays[key + '|1'])
        moved = [np.abs(arrays[f'{key}|{i}'] - ref[f'{key}|{i}']) for i in (0, 1)]
        print(f'  {key:24s} {cpu:7s} |a-b| max {d.max():.2e} mean {d.mean():.2e}   '
              f'vs {cpus[0]}: max {max(m.max() for m in moved):.2e} '
              f'mean {max(m.mean() for m in moved):.2e}')
    for key in got[cpus[0]][1]:
      print(f'  {key:24s} ' + '  '.join(f'{c} {got[c][1][key]:.1e}' for c in cpus))


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
  p.add_argument('--cpus', nargs='+', default=['native', 'avx2', 'avx'], choices=list(CPUS))
  p.add_argument('--out', help='keep the outputs here (default: a temporary folder)')
  p.add_argument('--halo-bug', action='store_true',
                 help='tiles one stride short of their halo: what a broken tiling gives')
  p.add_argument('--cpu', choices=list(CPUS), help='with a command after --: run it emulated')
  p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('command', nargs='*')
  a = p.parse_args()
  if a.worker:
    return _worker(a.cases, a.out)
  if a.cpu:
    return subprocess.run(a.command, env=_env(a.cpu, a.halo_bug)).returncode
  out = a.out or tempfile.mkdtemp(prefix='isa_spread_')
  for cpu in a.cpus:
    os.makedirs(os.path.join(out, cpu), exist_ok=True)
    subprocess.run([sys.executable, os.path.abspath(__file__), '--worker', '--out',
                    os.path.join(out, cpu), '--cases', *a.cases], env=_env(cpu, a.halo_bug), check=True,
                   cwd=ROOT)
  _report(a.cases, a.cpus, out)


if __name__ == '__main__':
  sys.exit(main())
