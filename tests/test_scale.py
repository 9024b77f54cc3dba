"""Scale control: fine scale of style A on the coarse scale of style B."""

import jax.numpy as jnp
import numpy as np

import nst_jax
from nst_jax import image_io, objective

LOW = ('relu1_1', 'relu2_1')
HIGH = ('relu4_1', 'relu5_1')


def _grams(params, image, layers):
  return objective.style_grams(params, image, layers)


def _dist(ga, gb, layers):
  return sum(float(jnp.sum((ga[l] - gb[l]) ** 2) / jnp.sum(gb[l] ** 2)) for l in layers)


def test_scale_mix_takes_fine_from_a_and_coarse_from_b(vgg_params, assets):
  mixed = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'],
                          params=vgg_params, scale_fine_style=assets['starry_night.jpg'],
                          scale_coarse_style=assets['the_scream.jpg'],
                          scale_size=64, scale_steps=40, scale_color_match=False,
                          mode='scale_mix')
  a = image_io.load_image(assets['starry_night.jpg'])
  b = image_io.load_image(assets['the_scream.jpg'])
  a = image_io.resize(a, image_io.fit_long_side(a.shape[:2], 64))
  b = image_io.resize(b, mixed.shape[:2])
  layers = LOW + HIGH
  g_mix, g_a, g_b = (_grams(vgg_params, x, layers) for x in (mixed, a, b))
  assert _dist(g_mix, g_a, LOW) < _dist(g_b, g_a, LOW)       # fine scale from A
  assert _dist(g_mix, g_b, HIGH) < _dist(g_a, g_b, HIGH)     # coarse scale from B


def test_naive_variant_takes_each_layer_from_its_style(vgg_params, assets):
  a = image_io.resize(image_io.load_image(assets['starry_night.jpg']), (40, 50))
  b = image_io.resize(image_io.load_image(assets['the_scream.jpg']), (50, 40))
  content = jnp.full((32, 32, 3), 0.5)
  layers = {'relu1_1': 0.5, 'relu4_1': 0.5}
  t = objective.make_targets(vgg_params, content, [a, b], content_layers={'relu4_2': 1.0},
                             style_layers=layers, style_blend=(0.5, 0.5),
                             layer_styles={'relu1_1': 0, 'relu4_1': 1})
  for layer, image, other in (('relu1_1', a, b), ('relu4_1', b, a)):
    want = _grams(vgg_params, image, [layer])[layer]
    wrong = _grams(vgg_params, other, [layer])[layer]
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(t.style[layer].value, want, atol=1e-6 * scale)
    assert float(jnp.max(jnp.abs(t.style[layer].value - wrong))) > 1e-2 * scale


def test_scale_mix_option_of_a_normal_run(vgg_params, assets, tmp_path):
  out = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'], params=vgg_params,
                        sizes=(32,), steps=(3,), scale_fine_style=assets['starry_night.jpg'],
                        scale_coarse_style=assets['the_scream.jpg'], scale_size=32,
                        scale_steps=3, workdir=str(tmp_path))
  assert out.shape == (21, 32, 3)
  records = (tmp_path / 'losses.jsonl').read_text().count('"terms"')
  assert records == 2                                    # the mix stage + the transfer stage
