"""Config validation: each bad value gives one NSTError naming the field."""

import math
import os

import pytest

import nst_jax
from nst_jax import config as config_lib


def _cfg(**kw):
  c = config_lib.get_default_config()
  for k, v in kw.items():
    c[k] = v
  return c


def test_defaults_validate_and_normalise():
  spec = config_lib.validate(_cfg())
  assert [s.long_side for s in spec.stages] == [256, 512]
  assert list(spec.loss.style_layer_weights) == ['relu1_1', 'relu2_1', 'relu3_1',
                                            'relu4_1', 'relu5_1']
  assert math.isclose(sum(spec.loss.style_layer_weights.values()), 1.0)
  assert spec.loss.content_layer_weights == {'relu4_2': 1.0}
  assert spec.loss.style_blend == (1.0,)


def test_steps_broadcast_and_styles_split():
  spec = config_lib.validate(_cfg(steps=(7,), styles=('a.jpg,b.jpg',),
                                  style_blend_weights=(1.0, 3.0)))
  assert [s.steps for s in spec.stages] == [7, 7]
  assert spec.styles == ('a.jpg', 'b.jpg')
  assert spec.loss.style_blend == (0.25, 0.75)


@pytest.mark.parametrize('field, value, match', [
    ('style_weight', -1.0, 'style_weight must be non-negative'),
    ('content_weight', float('nan'), 'content_weight must be finite'),
    ('style_blend_weights', (0.0,), 'must not sum to zero'),
    ('style_blend_weights', (1.0, 2.0), '2 values for 1'),
    ('style_layer_weights', (1.0, -1.0, 1.0, 1.0, 1.0), 'non-negative'),
    ('style_layer_weights', (0.0, 0.0, 0.0, 0.0, 0.0), 'sum to zero'),
    ('style_layers', ('relu1_1', 'relu6_1'), "unknown style layer 'relu6_1'"),
    ('content_layers', ('conv4_9',), "unknown content layer 'conv4_9'"),
    ('content_layers', (), 'content_layers is empty'),
    ('sizes', (512, 256), 'must not decrease'),
    ('sizes', (8,), 'sizes must be >= 16'),
    ('steps', (1, 2, 3), '3 values for 2 sizes'),
    ('steps', (-5,), 'steps must be >= 0'),
    ('pooling', 'min', 'pooling must be one of'),
    ('optimizer', 'sgd', 'optimizer must be one of'),
    ('normalization', 'l1', 'normalization must be one of'),
    ('learning_rate', 0.0, 'learning_rate must be positive'),
    ('output', 'final.gif', 'extension'),
    ('content', '', 'content is empty'),
    ('styles', (), 'styles is empty'),
    ('log_every', 0, 'log_every must be >= 1'),
    ('tile', 'big', "config.tile must be 'auto', 0"),
    ('tile', '8', "config.tile must be 'auto', 0"),
    ('memory_limit_gb', -1.0, 'memory_limit_gb must be non-negative'),
    ('batch_size', -1, 'batch_size must be >= 0'),
    ('sizes', ('auto', 'big'), 'sizes must be an integer'),
    ('sizes', ('auto', '1024', '2048'), 'at most one final size'),
    ('sizes', ('auto', '8'), 'sizes must be >= 16'),
    ('average_decay', 1.0, 'average_decay must be below 1'),
    ('average_decay', -0.5, 'average_decay must be non-negative'),
    ('average_decay', 0.9, "averages Adam's iterates"),
])
def test_bad_values(field, value, match):
  with pytest.raises(nst_jax.NSTError, match=match) as e:
    config_lib.validate(_cfg(**{field: value}))
  assert '\n' not in str(e.value)


def test_sizes_auto_is_a_sqrt2_schedule_with_one_steps_rule():
  # sqrt(2) steps from 128 px: 128 * 2^(k/2) rounded, then the final size.
  assert config_lib.geometric_sizes(512) == (128, 181, 256, 362, 512)
  assert config_lib.geometric_sizes(1024)[-3:] == (512, 724, 1024)
  assert config_lib.geometric_sizes(140) == (140,)         # no step up of < 1.15x
  spec = config_lib.validate(nst_jax.make_config(sizes='auto', steps=(300, 100)))
  assert [(s.long_side, s.steps) for s in spec.stages] == [
      (128, 300), (181, 100), (256, 100), (362, 100), (512, 100)]
  spec = config_lib.validate(nst_jax.make_config(sizes='auto,724', steps=(40,)))
  assert [(s.long_side, s.steps) for s in spec.stages] == [
      (128, 40), (181, 40), (256, 40), (362, 40), (512, 40), (724, 40)]
  spec = config_lib.validate(nst_jax.make_config(sizes='auto,100', steps=(9,)))
  assert [(s.long_side, s.steps) for s in spec.stages] == [(100, 9)]
  spec = config_lib.validate(nst_jax.make_config(sizes=('auto', 256), steps=(1, 2, 3)))
  assert [s.steps for s in spec.stages] == [1, 2, 3]       # one per size is explicit
  spec = config_lib.validate(nst_jax.make_config(optimizer='adam', average_decay=0.99))
  assert spec.average_decay == 0.99


def test_api_takes_strings_and_numbers_for_tuple_fields():
  spec = config_lib.validate(nst_jax.make_config(sizes='64,96', steps='100,50'))
  assert [(s.long_side, s.steps) for s in spec.stages] == [(64, 100), (96, 50)]
  spec = config_lib.validate(nst_jax.make_config(sizes=128, steps=7))
  assert [(s.long_side, s.steps) for s in spec.stages] == [(128, 7)]


def test_averaging_is_refused_for_fast_networks():
  with pytest.raises(nst_jax.NSTError, match='average_decay is for the optimisation') as e:
    config_lib.validate(nst_jax.make_config(job='fast_apply', optimizer='adam',
                                            average_decay=0.9))
  assert '\n' not in str(e.value)


def test_sizes_auto_from_the_command_line():
  """Through the CLI's own flag parser into a validated spec (a fresh process:
  absl parses its flags once per process)."""
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = ('import sys; from absl import flags; from nst_jax import config, main; '
          'main._parse_flags(main.split_list_flags(sys.argv)); '
          'print([s.long_side for s in config.validate(flags.FLAGS.config).stages])')
  for argv, sizes in ((['--config.sizes=auto,724'], [128, 181, 256, 362, 512, 724]),
                      (["--config.sizes=('auto', 256)"], [128, 181, 256]),
                      (['--config.sizes', 'auto'], [128, 181, 256, 362, 512]),
                      (['--config.sizes=64,96'], [64, 96])):
    r = subprocess.run([sys.executable, '-c', code, '--config=configs/default.py', *argv],
                       cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == str(sizes), (argv, r.stderr[-500:])


def test_all_weights_zero():
  with pytest.raises(nst_jax.NSTError, match='all zero'):
    config_lib.validate(_cfg(content_weight=0.0, style_weight=0.0))


def test_unknown_override_in_api():
  with pytest.raises(nst_jax.NSTError, match='unknown config field'):
    nst_jax.stylize('a.png', 'b.png', stlye_weight=3.0)


def test_tile_values():
  assert config_lib.validate(_cfg()).tile == 'auto'
  assert config_lib.validate(_cfg(tile='0')).tile == 0
  assert config_lib.validate(nst_jax.make_config(tile=256)).tile == 256
