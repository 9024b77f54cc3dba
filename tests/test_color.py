"""Colour control: luminance-only transfer and histogram matching."""

import numpy as np
import pytest

import nst_jax
from nst_jax import color, image_io


def test_yiq_roundtrip_and_luminance(rng):
  x = rng.uniform(size=(5, 4, 3))
  np.testing.assert_allclose(color.yiq_to_rgb(color.rgb_to_yiq(x)), x, atol=1e-12)
  np.testing.assert_allclose(color.luminance(np.ones((1, 1, 3)))[0, 0, 0], 1.0, atol=1e-6)


def test_combine_luminance_keeps_content_chroma_exactly(rng):
  content = rng.uniform(size=(16, 12, 3))
  y = rng.uniform(-0.2, 1.2, size=(16, 12, 1))          # even out-of-range Y
  out = color.combine_luminance(y, content)
  assert out.min() >= 0 and out.max() <= 1
  np.testing.assert_allclose(color.rgb_to_yiq(out)[..., 1:],
                             color.rgb_to_yiq(content)[..., 1:], atol=2e-6)


def test_match_luminance_moments(rng):
  s = rng.uniform(0.2, 0.4, size=(30, 30, 1))
  c = rng.uniform(0.3, 0.7, size=(20, 20, 1))   # no clipping needed
  m = color.match_luminance(s, c)
  assert m.mean() == pytest.approx(c.mean(), abs=1e-3)
  assert m.std() == pytest.approx(c.std(), rel=1e-3)


@pytest.mark.parametrize('mode', color.HISTOGRAM_MODES)
def test_histogram_matching_moments(mode, assets):
  style = image_io.load_image(assets['starry_night.jpg'])
  content = image_io.load_image(assets['chelsea.png'])
  out = color.match_histogram(style, content, mode).reshape(-1, 3).astype(np.float64)
  c = content.reshape(-1, 3).astype(np.float64)
  np.testing.assert_allclose(out.mean(0), c.mean(0), atol=1e-3)
  np.testing.assert_allclose(np.cov(out, rowvar=False, bias=True),
                             np.cov(c, rowvar=False, bias=True), atol=1e-3)


def test_histogram_modes_differ_and_reject_unknown(assets):
  style = image_io.load_image(assets['the_scream.jpg'])[::4, ::4]
  content = image_io.load_image(assets['chelsea.png'])[::4, ::4]
  a = color.match_histogram(style, content, 'cholesky')
  b = color.match_histogram(style, content, 'ot')
  assert np.abs(a - b).mean() > 1e-3
  with pytest.raises(nst_jax.NSTError, match='histogram mode'):
    color.match_histogram(style, content, 'pca')


@pytest.mark.parametrize('control', ['luminance', 'luminance_swap'])
def test_luminance_transfer_output_has_content_chroma(control, vgg_params, assets):
  out = nst_jax.stylize(assets['chelsea.png'], assets['the_scream.jpg'],
                        params=vgg_params, sizes=(48,), steps=(8,), color_control=control)
  content = np.asarray(image_io.resize(image_io.load_image(assets['chelsea.png']),
                                       out.shape[:2]))
  np.testing.assert_allclose(color.rgb_to_yiq(out)[..., 1:],
                             color.rgb_to_yiq(content)[..., 1:], atol=2e-6)
  # ... and the luminance did change (it was stylised).
  assert np.abs(color.luminance(out) - color.luminance(content)).mean() > 0.01


def test_histogram_control_runs_in_content_colours(vgg_params, assets):
  kw = dict(params=vgg_params, sizes=(48,), steps=(15,), init='noise', seed=0,
            style_weight=1e3)
  plain = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'], **kw)
  matched = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'],
                            color_control='histogram', **kw)
  content = image_io.load_image(assets['chelsea.png']).reshape(-1, 3).mean(0)
  assert (np.linalg.norm(matched.reshape(-1, 3).mean(0) - content)
          < np.linalg.norm(plain.reshape(-1, 3).mean(0) - content))


def test_luminance_swap_keeps_the_stylised_luminance(vgg_params, assets):
  """The post-hoc swap takes Y of the stylised image (not its red channel)."""
  kw = dict(params=vgg_params, sizes=(48,), steps=(8,))
  plain = nst_jax.stylize(assets['chelsea.png'], assets['the_scream.jpg'], **kw)
  swap = nst_jax.stylize(assets['chelsea.png'], assets['the_scream.jpg'],
                         color_control='luminance_swap', **kw)
  y_plain, y_swap = color.luminance(plain), color.luminance(swap)
  # Y only moves where the content's chroma forces a clamp into [0, 1].
  assert np.abs(y_swap - y_plain).mean() < 0.01
  assert np.abs(y_swap - y_plain).mean() < 0.2 * np.abs(y_swap - plain[..., :1]).mean()
