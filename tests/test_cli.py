"""The command line: files it promises, and one-line errors for bad input."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return subprocess.run([sys.executable, '-m', 'nst_jax', *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def test_cli_writes_promised_files(tmp_path, vgg_params):
  work = tmp_path / 'work'
  r = _run(['--config=configs/default.py', f'--workdir={work}', '--config.sizes=48,64',
            '--config.steps=4', '--config.save_every=2', '--config.log_every=2'])
  assert r.returncode == 0, r.stderr[-2000:]
  for name in ('final.png', 'losses.jsonl', 'losses.png', 'config.json'):
    assert (work / name).stat().st_size > 0, name
  assert sorted(os.listdir(work / 'intermediates')) == [
      'stage1_step00002.png', 'stage1_step00004.png',
      'stage2_step00002.png', 'stage2_step00004.png']
  cfg = json.load(open(work / 'config.json'))
  assert cfg['sizes'] == [48, 64] and cfg['steps'] == [4]
  steps = [json.loads(l) for l in open(work / 'losses.jsonl')]
  assert sum('loss' in s for s in steps) == 8
  assert 'stage 2/2' in r.stderr
  from PIL import Image
  assert Image.open(work / 'final.png').size == (64, 43)


@pytest.mark.parametrize('args, match', [
    (['--config.content=/nonexistent/cat.png'], 'image not found: /nonexistent/cat.png'),
    (['--config.style_layers=relu1_1,relu9_1'], "unknown style layer 'relu9_1'"),
    (['--config.style_weight=nan'], 'style_weight must be finite'),
    (['--config.style_blend_weights=0'], 'must not sum to zero'),
    (['--config.content_weight=-1'], 'content_weight must be non-negative'),
    (['--config.styles=configs/default.py'], 'not an image'),
    (['--config.output=out.webp'], 'extension'),
])
def test_cli_bad_input(tmp_path, args, match, vgg_params):
  work = tmp_path / 'w'
  r = _run(['--config=configs/default.py', f'--workdir={work}', '--config.sizes=32',
            '--config.steps=1', *args])
  assert r.returncode == 2, r.stderr[-2000:]
  assert 'Traceback' not in r.stderr
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and match in last, last
  assert not (work / 'final.png').exists()


def test_cli_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  r = _run(['--config=configs/default.py', f'--workdir={blocker}/sub'])
  assert r.returncode == 2
  assert 'Traceback' not in r.stderr
  assert 'not writable' in r.stderr.strip().splitlines()[-1]


def test_cli_unknown_flag_is_an_error():
  r = _run(['--config=configs/default.py', '--config.no_such_field=1'])
  assert r.returncode != 0 and 'Traceback' not in r.stderr


def test_console_script_runs_every_config_from_any_directory(tmp_path):
  """Every config loads through the installed entry point (no `configs` on sys.path)."""
  import glob
  for path in sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py'))):
    if path.endswith('__init__.py'):
      continue
    # An installed `nst-jax` has no `configs` package on sys.path.
    assert 'from configs' not in open(path).read() and 'import configs' not in open(path).read()
    code = ('import sys; sys.argv = ["nst-jax", "--config=%s", "--workdir=%s", '
            '"--config.content=/nonexistent.png"]; sys.path = [p for p in sys.path if p not in '
            '("", %r)] + [%r]; from nst_jax.main import cli; cli()') % (
                path, tmp_path / 'w', ROOT, ROOT)
    r = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=300)
    last = r.stderr.strip().splitlines()[-1]
    # The config loaded and validated; the run stops at the missing content image
    # (fast_train first asks for its folder of training photos).
    expected = ('config.train_images must be a folder' if path.endswith('fast_train.py')
                else 'image not found: /nonexistent.png')
    assert r.returncode == 2 and expected in last, (path, last)


def test_cli_list_fields_take_absolute_paths_with_spaces(tmp_path, vgg_params, assets):
  """--config.styles=/abs/my styles/a b.jpg,/abs/c.jpg (ml_collections' tuple
  parser alone fails on both); the run uses exactly those two styles."""
  import shutil
  styles_dir = tmp_path / 'my styles'
  styles_dir.mkdir()
  a = styles_dir / 'starry night.jpg'
  shutil.copy(assets['starry_night.jpg'], a)
  b = tmp_path / 'scream.jpg'
  shutil.copy(assets['the_scream.jpg'], b)
  work = tmp_path / 'w'
  r = _run([f'--workdir={work}', '--config.sizes=32', '--config.steps=1',
            f'--config.styles={a},{b}', '--config.style_layers=relu1_1,relu2_1',
            '--config.content_guidance=halves_x', '--config.style_guidance=whole, halves_x'])
  assert r.returncode == 0, r.stderr[-2000:]
  cfg = json.load(open(work / 'config.json'))
  assert cfg['styles'] == [str(a), str(b)]
  assert cfg['style_layers'] == ['relu1_1', 'relu2_1']
  assert cfg['style_guidance'] == ['whole', 'halves_x']
  # The tuple syntax still works, and `--flag value` too.
  r = _run([f'--workdir={work}2', '--config.sizes=32', '--config.steps=1',
            '--config.styles', f'("{a}",)'])
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.load(open(f'{work}2/config.json'))['styles'] == [str(a)]


@pytest.mark.parametrize('args,expected', [
    (['--multihost'], 'pass --coordinator_address=HOST:PORT --num_processes=N'),
    (['--num_processes=2'], 'give --coordinator_address, --num_processes and --process_id'),
    (['--coordinator_address=127.0.0.1:1', '--num_processes=2', '--process_id=2'],
     '--process_id=2 must be in [0, 2)'),
])
def test_cli_multihost_misuse_is_one_error_line(args, expected, tmp_path):
  """Outside a TPU pod / SLURM / Open MPI job, --multihost says what to pass."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('SLURM_', 'OMPI_', 'TPU_'))}
  r = subprocess.run([sys.executable, '-m', 'nst_jax', f'--workdir={tmp_path}/w', *args],
                     cwd=ROOT, capture_output=True, text=True, timeout=120,
                     env=dict(env, PYTHONPATH=ROOT))
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), lines
  assert expected in lines[0], lines
  assert not os.path.exists(tmp_path / 'w')


def test_repeated_override_last_wins():
  """ml_collections concatenates a repeated tuple override ((6, 40)); the last counts."""
  from nst_jax.main import split_list_flags
  argv = ['nst-jax', '--config.steps=6', '--config.styles=/a b.jpg', '--quiet',
          '--config.steps=40', '--config.styles', '/c.jpg']
  assert split_list_flags(argv) == ['nst-jax', '--quiet', '--config.steps=40',
                                    "--config.styles=('/c.jpg',)"]


@pytest.mark.parametrize('args', [['stray_argument'], ['--no_such_flag']])
def test_cli_misuse_is_one_error_line(args, tmp_path):
  r = _run([f'--workdir={tmp_path}/w', *args])
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  assert args[0].lstrip('-').split('=')[0] in lines[0]


def test_cli_refuses_a_stage_too_big_for_memory_before_allocating(tmp_path):
  import time
  work = tmp_path / 'w'
  t = time.perf_counter()
  r = _run([f'--workdir={work}', '--config.sizes=256,8192', '--config.steps=1',
            '--config.tile=0', '--config.memory_limit_gb=24'])
  assert r.returncode == 2, r.stderr[-2000:]
  assert time.perf_counter() - t < 60                    # before any stage ran
  last = r.stderr.strip().splitlines()[-1]
  assert 'Traceback' not in r.stderr and last.startswith('error: stage 2/2 (8192x5449 px)')
  assert 'GB untiled' in last and '24.0 GB limit (memory_limit_gb=24)' in last
  assert '--config.tile=auto (tiled:' in last
  assert not (work / 'final.png').exists() and not (work / 'checkpoints').exists()
