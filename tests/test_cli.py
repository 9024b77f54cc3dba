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
    # The config loaded and validated; the run stops at the missing content image.
    assert r.returncode == 2 and 'image not found: /nonexistent.png' in last, (path, last)
