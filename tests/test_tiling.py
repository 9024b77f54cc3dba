"""Exact tiled evaluation: the same value, gradient and targets as untiled."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import color, image_io, mask_io, objective, tiling, vgg

HW = (384, 376)                       # not a multiple of the 16-px pooling grid
# Guidance and luminance do not depend on depth: up to relu3_1 (halo 24 px,
# several tiles at 96 px) keeps those tests at a third of the time.
SHALLOW = dict(content_layers=('relu3_1',), style_layers=('relu1_1', 'relu2_1', 'relu3_1'))


def _images(hw=HW):
  content = np.asarray(image_io.resize(image_io.load_image(nst_jax.config.asset('chelsea.png')),
                                       hw))
  style = image_io.load_image(nst_jax.config.asset('starry_night.jpg'))
  style = np.asarray(image_io.resize(style, image_io.fit_long_side(style.shape[:2], max(hw))))
  return content, style


def _value_and_grad(params, targets, x, tile):
  w = objective.LossWeights(1.0, 100.0, 0.5)
  return jax.jit(jax.value_and_grad(
      lambda x: objective.total_loss(x, params, targets, w, tile=tile)))(x)


def _rel(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_every_position_is_owned_by_exactly_one_tile():
  t = tiling.make_tiling((390, 301), 96, ['relu1_1', 'relu3_1', 'relu5_1'])
  assert t.align == 16 and t.rows.halo == 80 and t.count == 5 * 4
  for layer in ('relu1_1', 'relu3_1', 'relu5_1'):
    s = vgg.layer_stride(layer)
    count = np.zeros((390 // s, 301 // s))
    for index in range(t.count):
      r0, c0, own, corner = tiling._window_geometry(t, index, [layer])
      assert r0 % 16 == 0 and c0 % 16 == 0               # pooling grids line up
      o = np.asarray(own[layer])
      count[corner[layer][0]:corner[layer][0] + o.shape[0],
            corner[layer][1]:corner[layer][1] + o.shape[1]] += o
    np.testing.assert_array_equal(count, 1.0)


@pytest.mark.parametrize('pooling, tile', [('max', 96), ('avg', 128)])
def test_tiled_value_and_gradient_equal_untiled(vgg_params, pooling, tile):
  content, style = _images()
  t = objective.make_targets(vgg_params, content, [style], pooling=pooling)
  x = jnp.asarray(np.random.default_rng(0).uniform(-0.1, 1.1, HW + (3,)).astype(np.float32))
  v0, g0 = _value_and_grad(vgg_params, t, x, 0)
  v1, g1 = _value_and_grad(vgg_params, t, x, tile)
  assert tiling.make_tiling(HW, tile, t.layers).count > 1
  assert abs(float(v1 - v0)) <= 1e-5 * abs(float(v0))
  assert _rel(g1, g0) <= 1e-5


@pytest.mark.parametrize('statistic', ['gram', 'mean'])
def test_tiled_guided_loss_equals_untiled(vgg_params, statistic):
  content, style = _images()
  guided, _ = objective.make_guided_targets(
      vgg_params, mask_io.halves(HW), [style], [mask_io.halves(style.shape[:2])], (0, 0),
      (0.5, 0.5), statistic=statistic, tile=112, style_layers=SHALLOW['style_layers'])
  t = objective.make_targets(vgg_params, content, [style], guided=guided,
                             statistic=statistic, global_weight=0.3, **SHALLOW)
  x = jnp.asarray(content)
  v0, g0 = _value_and_grad(vgg_params, t, x, 0)
  v1, g1 = _value_and_grad(vgg_params, t, x, 112)
  assert tiling.make_tiling(HW, 112, t.layers).count >= 9
  assert abs(float(v1 - v0)) <= 1e-5 * abs(float(v0))
  assert _rel(g1, g0) <= 1e-5


def test_tiled_luminance_equals_untiled(vgg_params):
  """One channel (luminance-only transfer), shown to VGG as grey RGB."""
  content, style = _images()
  y = color.luminance(content)
  grey = np.repeat(y, 3, -1)
  t = objective.make_targets(vgg_params, grey, [np.repeat(color.luminance(style), 3, -1)],
                             **SHALLOW)
  x = jnp.asarray(np.clip(y + np.random.default_rng(1).normal(0, 0.05, y.shape), 0, 1)
                  .astype(np.float32))
  v0, g0 = _value_and_grad(vgg_params, t, x, 0)
  v1, g1 = _value_and_grad(vgg_params, t, x, 96)
  assert g1.shape == x.shape
  assert abs(float(v1 - v0)) <= 1e-5 * abs(float(v0))
  # The same function on the grey image as 3 equal channels, summed: XLA
  # compiles the untiled 1-channel graph with the broadcast folded into the
  # first convolution, a different float32 summation order; the 3-channel
  # graph is the tiled one's.
  _, g3 = _value_and_grad(vgg_params, t, jnp.repeat(x, 3, -1), 0)
  assert _rel(g1[..., 0], g3.sum(-1)) <= 1e-5
  # How far the untiled 1-channel graph is off depends on the CPU's kernels
  # (tools/isa_spread.py): against a float64 evaluation 6.7e-4 with YNNPACK's
  # AVX-512 and (emulated) AVX2 convolutions, 5.8e-5 with AVX ones; the tiled
  # and 3-channel gradients 1e-5 and 5.8e-5. So |tiled - untiled| measured
  # 6.7e-4 (AVX-512, AVX2), 1.7e-7 (AVX), 6.1e-6 (XLA without YNNPACK);
  # bound 2e-3, 3x the worst. A halo one stride short gives 9.4e-3 here.
  assert _rel(g1, g0) <= 2e-3


def test_tiled_targets_equal_untiled(vgg_params):
  content, style = _images((300, 380))
  layers = objective.PAPER_STYLE_LAYERS
  a = objective.style_grams(vgg_params, style, layers)
  b = objective.style_grams(vgg_params, style, layers, tile=96)
  for l in layers:
    np.testing.assert_allclose(b[l], a[l], rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(a[l]))))
  fa = objective.features(vgg_params, content, ['relu4_2', 'relu1_1'])
  fb = objective.features(vgg_params, content, ['relu4_2', 'relu1_1'], tile=96)
  for l in fa:
    np.testing.assert_allclose(fb[l], fa[l], rtol=0, atol=1e-6 * float(jnp.max(fa[l])))
  m = mask_io.disc(style.shape[:2])
  sa = objective.guided_style_stats(vgg_params, [style], [m], (0, 0), layers, mode='inside')
  sb = objective.guided_style_stats(vgg_params, [style], [m], (0, 0), layers, mode='inside',
                                   tile=96)
  for l in layers:
    scale = float(jnp.max(jnp.abs(sa[l].value)))
    np.testing.assert_allclose(sb[l].value, sa[l].value, rtol=0, atol=1e-6 * scale)
    np.testing.assert_array_equal(sb[l].empty, sa[l].empty)


def test_tiled_loss_terms_equal_untiled(vgg_params):
  content, style = _images()
  t = objective.make_targets(vgg_params, content, [style])
  w = objective.LossWeights(1.0, 100.0, 0.5)
  x = jnp.asarray(content[::-1])
  a = objective.loss_terms(vgg_params, x, t, w)
  b = objective.loss_terms(vgg_params, x, t, w, tile=128)
  for k in a:
    assert abs(float(b[k] - a[k])) <= 1e-5 * abs(float(a[k])) + 1e-12, k
