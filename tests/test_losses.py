"""Gram, content, style and TV losses against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import losses


def test_gram_by_hand():
  # Two positions (1x2 grid), two channels: F = [[1, 2], [3, 4]] (rows = positions).
  f = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])          # [h=1, w=2, C=2]
  expected = np.array([[1 * 1 + 3 * 3, 1 * 2 + 3 * 4],
                       [2 * 1 + 4 * 3, 2 * 2 + 4 * 4]]) / 2.0
  np.testing.assert_allclose(losses.gram(f), expected, rtol=1e-6)


def test_gram_batched_and_resolution_independent(rng):
  f = rng.normal(size=(3, 5, 4, 7)).astype(np.float32)
  g = losses.gram(jnp.asarray(f))
  assert g.shape == (3, 7, 7)
  np.testing.assert_allclose(g[1], losses.gram(jnp.asarray(f[1])), rtol=1e-5)
  # Repeating every position 2x2 (nearest upsampling) leaves the mean Gram unchanged.
  up = np.repeat(np.repeat(f[0], 2, axis=0), 2, axis=1)
  np.testing.assert_allclose(losses.gram(jnp.asarray(up)), g[0], rtol=1e-5)


def test_content_loss_relative_and_gatys_by_hand():
  p = jnp.array([[[1.0, 2.0]], [[0.0, 2.0]]])       # [2, 1, 2], Σp² = 9
  f = jnp.array([[[2.0, 2.0]], [[0.0, 0.0]]])       # diff² sum = 1 + 4 = 5
  rel = losses.content_targets({'relu4_2': p}, {'relu4_2': 1.0}, 'relative')
  assert float(losses.content_loss({'relu4_2': f}, rel)) == pytest.approx(5 / 9)
  gat = losses.content_targets({'relu4_2': p}, {'relu4_2': 0.5}, 'gatys')
  # 0.5 * Σ diff² / (2 · M · N) with M·N = 4.
  assert float(losses.content_loss({'relu4_2': f}, gat)) == pytest.approx(0.5 * 5 / 8)


def test_style_loss_by_hand():
  f = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])          # gram = I / 2
  a = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  d2 = (0.5 - 1.0) ** 2 + 0.5 ** 2                   # Σ (G − A)²
  rel = losses.style_targets([{'l': a}], [1.0], {'l': 1.0}, 'relative')
  assert float(losses.style_loss({'l': f}, rel)) == pytest.approx(d2 / 1.0)
  gat = losses.style_targets([{'l': a}], [1.0], {'l': 1.0}, 'gatys')
  assert float(losses.style_loss({'l': f}, gat)) == pytest.approx(d2 / (4 * 2 ** 2))


def test_blended_target_has_the_gradient_of_the_weighted_sum(rng):
  a1 = rng.normal(size=(4, 4)).astype(np.float32)
  a2 = rng.normal(size=(4, 4)).astype(np.float32)
  f = jnp.asarray(rng.normal(size=(3, 3, 4)).astype(np.float32))
  b = [0.25, 0.75]
  blended = losses.style_targets([{'l': a1}, {'l': a2}], b, {'l': 1.0}, 'gatys')

  def per_style(x):
    g = losses.gram(x)
    return sum(w * jnp.sum((g - a) ** 2) for w, a in zip(b, (a1, a2))) / 64.0

  g1 = jax.grad(lambda x: losses.style_loss({'l': x}, blended))(f)
  g2 = jax.grad(per_style)(f)
  np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-6)


def test_total_variation_by_hand():
  x = jnp.array([[0.0, 1.0], [1.0, 3.0]])[..., None]   # [2, 2, 1]
  dy = [(1 - 0) ** 2, (3 - 1) ** 2]                     # mean 2.5
  dx = [(1 - 0) ** 2, (3 - 1) ** 2]                     # mean 2.5
  assert float(losses.total_variation(x)) == pytest.approx(np.mean(dy) + np.mean(dx))


def test_zero_target_does_not_make_nan():
  z = jnp.zeros((2, 2, 3))
  t = losses.content_targets({'c': z}, {'c': 1.0}, 'relative')
  assert float(losses.content_loss({'c': z + 1}, t)) == 0.0
