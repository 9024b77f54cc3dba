"""End to end with the real VGG19 weights on small images."""

import json
import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nst_jax
from nst_jax import image_io, objective


def _style_distance(params, image, style, layers):
  """Σ_l relative Gram error of ``image`` against ``style`` (style loss, β=1)."""
  t = objective.make_targets(params, image, [style], style_layers=layers)
  w = objective.LossWeights(0.0, 1.0, 0.0)
  return float(objective.loss_terms(params, jnp.asarray(image), t, w)['style'])


def test_style_transfer_end_to_end(vgg_params, assets, tmp_path):
  out = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'],
                        params=vgg_params, sizes=(96,), steps=(40,),
                        workdir=str(tmp_path))
  assert out.shape == (64, 96, 3) and out.dtype == np.float32
  assert 0.0 <= out.min() and out.max() <= 1.0
  records = [json.loads(l) for l in open(tmp_path / 'losses.jsonl')]
  steps = [r for r in records if 'loss' in r]
  terms = [r['terms'] for r in records if 'terms' in r]
  assert len(steps) == 40
  assert steps[-1]['loss'] < steps[0]['loss'] / 5          # total falls 5x+
  # Style loss of the output vs of the content image, measured independently.
  content = image_io.resize(image_io.load_image(assets['chelsea.png']), (64, 96))
  style = image_io.load_image(assets['starry_night.jpg'])
  style = image_io.resize(style, image_io.fit_long_side(style.shape[:2], 96))
  layers = {l: 0.2 for l in ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')}
  d_content = _style_distance(vgg_params, content, style, layers)
  d_out = _style_distance(vgg_params, out, style, layers)
  assert d_out < d_content / 10, (d_out, d_content)
  # The logged terms are the same quantity (times β).
  assert terms[-1]['style'] == pytest.approx(100 * d_out, rel=1e-3)
  for name in ('final.png', 'losses.png', 'config.json'):
    assert os.path.getsize(tmp_path / name) > 0


def test_coarse_to_fine_passes_the_result_on(vgg_params, assets):
  kw = dict(params=vgg_params, init='noise', seed=3)
  one = nst_jax.stylize(assets['chelsea.png'], assets['the_scream.jpg'],
                        sizes=(48,), steps=(15,), **kw)
  two = nst_jax.stylize(assets['chelsea.png'], assets['the_scream.jpg'],
                        sizes=(48, 96), steps=(15, 0), **kw)
  expected = image_io.resize(one, (64, 96))
  # Stage 1 is the same program on the same input: measured equal (0) on
  # AVX-512 and emulated AVX2 / AVX / no-YNNPACK kernels, so 1e-6 holds anywhere.
  np.testing.assert_allclose(two, expected, atol=1e-6)
  assert np.abs(two - image_io.resize(
      image_io.load_image(assets['chelsea.png']), (64, 96))).mean() > 0.05


def test_second_stage_starts_from_the_first(vgg_params, assets, tmp_path):
  nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'],
                  params=vgg_params, sizes=(48, 96), steps=(25, 5),
                  workdir=str(tmp_path))
  records = [json.loads(l) for l in open(tmp_path / 'losses.jsonl')]
  stage2_first = next(r['loss'] for r in records if r.get('stage') == 1 and 'loss' in r)
  fresh = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'],
                          params=vgg_params, sizes=(96,), steps=(1,),
                          workdir=str(tmp_path / 'fresh'))
  fresh_first = next(r['loss'] for r in map(json.loads, open(tmp_path / 'fresh' / 'losses.jsonl'))
                     if 'loss' in r)
  assert stage2_first < fresh_first / 2
  assert fresh.shape == (64, 96, 3)


def test_seed_makes_noise_runs_repeatable(vgg_params, assets):
  kw = dict(params=vgg_params, sizes=(32,), steps=(3,), init='noise')
  a = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'], seed=1, **kw)
  b = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'], seed=1, **kw)
  c = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'], seed=2, **kw)
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).mean() > 0.01


def test_blend_weight_one_equals_single_style(vgg_params, assets):
  kw = dict(params=vgg_params, sizes=(32,), steps=(4,))
  single = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'], **kw)
  blended = nst_jax.stylize(assets['chelsea.png'],
                            [assets['starry_night.jpg'], assets['the_scream.jpg']],
                            style_blend_weights=(1.0, 0.0), **kw)
  # 1·A + 0·B is A exactly: the same program on equal targets, measured equal
  # (0) on AVX-512 and emulated AVX2 / AVX / no-YNNPACK kernels.
  np.testing.assert_allclose(single, blended, atol=1e-5)
  mixed = nst_jax.stylize(assets['chelsea.png'],
                          [assets['starry_night.jpg'], assets['the_scream.jpg']], **kw)
  assert np.abs(mixed - single).mean() > 1e-3


def test_arrays_in_and_adam(vgg_params, rng):
  content = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
  style = rng.uniform(size=(20, 20, 3)).astype(np.float32)
  out = nst_jax.stylize(content, style, params=vgg_params, sizes=(40,),
                        steps=(10,), optimizer='adam', learning_rate=0.05)
  assert out.shape == (40, 30, 3)
  assert np.abs(out - content / 255.0).max() > 0.01


def test_style_init_and_file_init(vgg_params, assets, tmp_path):
  path = str(tmp_path / 'init.png')
  image_io.save_image(path, np.full((10, 10, 3), 0.5))
  out = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'],
                        params=vgg_params, sizes=(32,), steps=(0,), init=path)
  np.testing.assert_allclose(out, 128 / 255.0, atol=1e-3)
  with pytest.raises(nst_jax.NSTError, match='not found'):
    nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'],
                    params=vgg_params, sizes=(32,), steps=(1,), init='nope.png')


class _Recorder(nst_jax.engine.Hook):
  """Every chunk's iterate, output and Adam step count (one step a chunk)."""

  def __init__(self):
    self.pixels, self.outputs, self.counts = {}, {}, {}

  def chunk(self, stage, before, state, metrics, terms):
    self.pixels.setdefault(stage, []).append(np.asarray(state.pixels[0], np.float64))
    self.outputs.setdefault(stage, []).append(np.asarray(state.output[0]))
    self.counts.setdefault(stage, []).append(
        int(optax.tree_utils.tree_get(state.opt_state, 'count')[0]))


def test_adam_averaging_is_what_is_written_and_moments_carry_over(vgg_params, assets):
  d = 0.7
  spec = nst_jax.config.validate(nst_jax.make_config(
      content=assets['chelsea.png'], sizes=(32, 48), steps=(3, 4), optimizer='adam',
      average_decay=d, log_every=1, learning_rate=0.05, tensorboard=False))
  plan = nst_jax.plan.make_plan(spec)
  rec = _Recorder()
  out = nst_jax.engine.execute(plan, vgg_params, hooks=[rec])[0][0]
  last = 1
  # The written image is the clipped bias-corrected EMA of the last stage's iterates.
  xs = np.stack(rec.pixels[last])
  n = len(xs)
  w = np.array([(1 - d) * d ** (n - t) for t in range(1, n + 1)])
  expected = np.clip(np.tensordot(w, xs, axes=1) / (1 - d ** n), 0, 1)
  # One run's own iterates (any CPU kernel set): only float32 vs float64
  # summation of the EMA differs, ~1e-7 per step on values in [0, 1].
  np.testing.assert_allclose(out, expected, atol=2e-6)
  assert np.abs(out - np.clip(xs[-1], 0, 1)).max() > 1e-3
  # Adam's step count runs on across the stage boundary (its moments carried).
  assert rec.counts[0] == [1, 2, 3] and rec.counts[last] == [4, 5, 6, 7]
