"""Spatial control: guidance propagation, guided Grams, region styles."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import nst_jax
from nst_jax import image_io, layer_masks, losses, mask_io, vgg

LAYERS = ['relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1']


def test_all_ones_guidance_gives_the_plain_gram(rng):
  f = jnp.asarray(rng.normal(size=(6, 5, 4)).astype(np.float32))
  t = layer_masks.layer_guidance(np.ones((48, 40, 1), np.float32), ['relu2_1'])['relu2_1']
  assert t.shape == (24, 20, 1)
  g = losses.guided_gram(f, jnp.ones((6, 5, 1)))[0]
  np.testing.assert_allclose(g, losses.gram(f), rtol=1e-6)
  np.testing.assert_allclose(t, 1.0)
  np.testing.assert_allclose(losses.guided_mean(f, jnp.ones((6, 5, 1)))[0],
                             f.mean(axis=(0, 1)), rtol=1e-5)


def test_guided_gram_by_hand():
  f = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])              # positions (0,0), (0,1)
  t = jnp.array([[[2.0], [0.0]]])                        # only the first position
  g = losses.guided_gram(f, t)[0]
  np.testing.assert_allclose(g, np.array([[4, 8], [8, 16]]) / 2.0)


def test_inside_subset_simple_subset_all(rng):
  mask = (rng.uniform(size=(64, 48, 2)) > 0.4).astype(np.float32)
  mask[:, :24, 0] = 1.0                                  # a big solid block too
  layers = vgg.LAYER_NAMES[:vgg.LAYER_INDEX['relu5_1'] + 1]
  inside = layer_masks.propagate(mask, layers, 'inside')
  simple = layer_masks.propagate(mask, layers, 'simple')
  every = layer_masks.propagate(mask, layers, 'all')
  for name in layers:
    assert np.all(inside[name] <= simple[name] + 1e-7), name
    assert np.all(simple[name] <= every[name] + 1e-7), name
  assert float(inside['relu2_1'][..., 0].sum()) > 0      # not trivially empty


def _receptive_fields(hw, layer):
  """Brute force: which input pixels each neuron of ``layer`` depends on.

  A single-channel copy of VGG's structure up to ``layer`` with all-ones 3x3
  kernels and 2x2 average pools is linear with positive weights, so a
  neuron's gradient is nonzero exactly on its receptive field.
  """
  def net(x):
    y = x[None, :, :, None]
    for name in vgg.LAYER_NAMES[:vgg.LAYER_INDEX[layer] + 1]:
      if name.startswith('conv'):
        y = lax.conv_general_dilated(y, jnp.ones((3, 3, 1, 1)), (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      elif name.startswith('pool'):
        h, w = y.shape[1] // 2 * 2, y.shape[2] // 2 * 2
        y = y[:, :h, :w].reshape(1, h // 2, 2, w // 2, 2, 1).mean(axis=(2, 4))
    return y[0, :, :, 0]
  jac = jax.jacrev(net)(jnp.zeros(hw))                   # [h_l, w_l, H, W]
  return np.asarray(jac) > 0


@pytest.mark.parametrize('layer', ['relu1_2', 'relu2_1', 'pool2', 'relu3_1'])
def test_inside_and_all_equal_brute_force_receptive_fields(layer, rng):
  hw = (20, 16)
  mask = np.zeros(hw, np.float32)
  mask[2:15, 3:13] = 1.0
  mask[rng.uniform(size=hw) > 0.9] = 1.0                 # scattered pixels
  rf = _receptive_fields(hw, layer)
  expect_inside = np.all(~rf | (mask[None, None] > 0), axis=(2, 3))
  expect_all = np.any(rf & (mask[None, None] > 0), axis=(2, 3))
  got_inside = np.asarray(layer_masks.propagate(mask[..., None], [layer], 'inside')[layer][..., 0])
  got_all = np.asarray(layer_masks.propagate(mask[..., None], [layer], 'all')[layer][..., 0])
  np.testing.assert_array_equal(got_inside > 0.5, expect_inside)
  np.testing.assert_array_equal(got_all > 0.5, expect_all)


def test_extra_erosion_and_dilation():
  mask = np.zeros((32, 32, 1), np.float32)
  mask[8:24, 8:24] = 1
  base = layer_masks.propagate(mask, ['relu1_1'], 'simple')['relu1_1'][..., 0]
  eroded = layer_masks.propagate(mask, ['relu1_1'], 'simple', extra=-2)['relu1_1'][..., 0]
  dilated = layer_masks.propagate(mask, ['relu1_1'], 'simple', extra=1)['relu1_1'][..., 0]
  assert float(base.sum()) == 256 and float(eroded.sum()) == 144
  assert float(dilated.sum()) == 18 * 18


def test_normalization_mean_square_one():
  mask = mask_io.disc((40, 40), 0.2)
  t = layer_masks.layer_guidance(mask, LAYERS, 'simple')
  for name in LAYERS:
    np.testing.assert_allclose(np.mean(np.asarray(t[name]) ** 2, axis=(0, 1)), 1.0, rtol=1e-5)


def test_label_map_and_separate_masks(tmp_path):
  from PIL import Image
  labels = np.zeros((10, 20, 3), np.uint8)
  labels[:, 10:] = (255, 0, 0)
  Image.fromarray(labels).save(tmp_path / 'labels.png')
  m = mask_io.load_guidance(str(tmp_path / 'labels.png'), (20, 40))   # resized 2x
  assert m.shape == (20, 40, 2)
  np.testing.assert_allclose(m[:, :18, 0], 1.0)           # black sorts first
  np.testing.assert_allclose(m[:, 22:, 1], 1.0)
  Image.fromarray(np.full((10, 20), 255, np.uint8)).save(tmp_path / 'a.png')
  Image.fromarray(np.full((10, 20), 64, np.uint8)).save(tmp_path / 'b.png')
  m = mask_io.load_guidance(f'{tmp_path}/a.png+{tmp_path}/b.png', (10, 20))
  np.testing.assert_allclose(m[0, 0], [1.0, 64 / 255], atol=1e-6)   # soft mask kept
  with pytest.raises(nst_jax.NSTError, match='aspect ratio'):
    mask_io.load_guidance(str(tmp_path / 'labels.png'), (20, 20))


def test_empty_region_is_skipped_without_nan(vgg_params, assets, caplog):
  content_masks = np.zeros((32, 48, 2), np.float32)
  content_masks[..., 0] = 1.0                            # region 2 empty in content
  style = image_io.resize(image_io.load_image(assets['starry_night.jpg']), (40, 48))
  guided, skipped = nst_jax.make_guided_targets(
      vgg_params, content_masks, [style], [mask_io.halves((40, 48))], (0, 0), (0.5, 0.5),
      style_layers={'relu1_1': 0.5, 'relu2_1': 0.5})
  assert {(l, r) for l, e in skipped.items() for r in np.flatnonzero(e)} == {
      ('relu1_1', 1), ('relu2_1', 1)}
  assert float(guided['relu1_1'].scale[1]) == 0.0
  val = losses.guided_style_loss(
      vgg.vgg_features(vgg_params, jnp.full((32, 48, 3), 0.5), ['relu1_1', 'relu2_1']), guided)
  assert np.isfinite(float(val)) and float(val) > 0
  # And through the whole pipeline: a warning, a finite result.
  with caplog.at_level(logging.WARNING):
    out = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'],
                          params=vgg_params, sizes=(32,), steps=(3,),
                          content_guidance='horizon:0.0', style_guidance=('halves_y',))
  assert 'empty guidance' in caplog.text and np.all(np.isfinite(out))


def test_two_styles_on_two_halves(vgg_params, assets):
  """Left half from The Starry Night (blue), right half from The Scream (orange)."""
  starry = image_io.load_image(assets['starry_night.jpg'])
  scream = image_io.load_image(assets['the_scream.jpg'])
  out = nst_jax.stylize(assets['chelsea.png'], [assets['starry_night.jpg'], assets['the_scream.jpg']],
                        params=vgg_params, sizes=(96,), steps=(40,), style_weight=1e3,
                        content_guidance='halves_x', style_guidance=('halves_x', 'halves_x'),
                        region_styles=(0, 1))
  w = out.shape[1]
  left, right = out[:, :w // 2 - 4].reshape(-1, 3), out[:, w // 2 + 4:].reshape(-1, 3)
  # Region 1 of style 0 is the left half of The Starry Night, region 2 of
  # style 1 the right half of The Scream.
  a = starry[:, :starry.shape[1] // 2].reshape(-1, 3).mean(0)
  b = scream[:, scream.shape[1] // 2:].reshape(-1, 3).mean(0)
  dl = [np.linalg.norm(left.mean(0) - c) for c in (a, b)]
  dr = [np.linalg.norm(right.mean(0) - c) for c in (a, b)]
  assert dl[0] < dl[1], dl
  assert dr[1] < dr[0], dr


def test_whole_style_guidance_serves_every_region(vgg_params, assets):
  assert mask_io.load_guidance('whole', (4, 5)).shape == (4, 5, 1)
  kw = dict(params=vgg_params, sizes=(32,), steps=(4,), content_guidance='halves_x')
  two = nst_jax.stylize(assets['chelsea.png'],
                        [assets['starry_night.jpg'], assets['the_scream.jpg']], **kw)
  same = nst_jax.stylize(assets['chelsea.png'],
                         [assets['starry_night.jpg'], assets['starry_night.jpg']], **kw)
  one = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'], **kw)
  # Region styles identical: the same program on equal targets, measured
  # equal bit for bit on AVX-512 and emulated AVX2 / AVX / no-YNNPACK kernels.
  np.testing.assert_allclose(same, one, atol=1e-5)
  assert np.abs(two - one)[:, 16:].mean() > np.abs(two - one)[:, :16].mean()


def test_contact_sheet_places_images_and_masks():
  import sys, os
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'tools'))
  from contact_sheet import contact_sheet, mask_picture
  red = np.zeros((10, 20, 3), np.float32)
  red[..., 0] = 1
  blue = np.zeros((10, 10, 3), np.float32)
  blue[..., 2] = 1
  sheet = np.asarray(contact_sheet([('a', red), ('b', blue)], cols=2, height=10, pad=2,
                                   label_h=5))
  assert tuple(sheet[2 + 5, 2 + 10]) == (255, 0, 0)         # first cell: red
  assert tuple(sheet[2 + 5, 2 + 20 + 2 + 10]) == (0, 0, 255)  # second cell: blue
  pic = mask_picture(mask_io.halves((4, 4), 'x'))
  assert pic[0, 0, 0] != pic[0, 3, 0]                       # regions get distinct greys
