"""The objective from other JAX code, exactly as the README shows it."""

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax
from nst_jax import image_io


def _images(assets):
  content = image_io.resize(image_io.load_image(assets['chelsea.png']), (48, 64))
  style = image_io.resize(image_io.load_image(assets['starry_night.jpg']), (50, 64))
  return content, style


def test_readme_example(vgg_params, assets):
  content, style = _images(assets)
  params = vgg_params
  targets = nst_jax.make_targets(params, content, [style])   # the paper's layers
  weights = nst_jax.LossWeights(1.0, 100.0, 0.0)                # plain floats
  loss = lambda x: nst_jax.total_loss(x, params, targets, weights)
  value, grad = jax.jit(jax.value_and_grad(loss))(content)
  images = jnp.stack([content, 1.0 - content, jnp.full_like(content, 0.5)])
  batch_losses = jax.vmap(loss)(images)                         # [B, H, W, 3]

  assert sorted(targets.content) == ['relu4_2']
  assert sorted(targets.style) == ['relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1']
  assert grad.shape == content.shape and np.all(np.isfinite(grad))
  # At the content image the content term is zero: the value is beta * style loss.
  terms = nst_jax.loss_terms(params, content, targets, weights)
  assert float(terms['content']) == 0.0
  np.testing.assert_allclose(value, terms['style'], rtol=1e-5)
  # vmap over a batch = the loss of each image alone.
  for i in range(3):
    np.testing.assert_allclose(batch_losses[i], loss(images[i]), rtol=1e-5)
  assert len(set(np.asarray(batch_losses).tolist())) == 3        # one value per image
  # The gradient is a descent direction: a small step along -grad lowers the loss.
  step = 1e-3 / float(jnp.max(jnp.abs(grad)))
  assert float(loss(content - step * grad)) < float(value)


def test_targets_are_a_pytree_that_remembers_its_pooling(vgg_params, assets):
  content, style = _images(assets)
  weights = nst_jax.LossWeights(1.0, 100.0, 0.0)
  t_max = nst_jax.make_targets(vgg_params, content, [style])
  t_avg = nst_jax.make_targets(vgg_params, content, [style], pooling='avg')
  assert (t_max.pooling, t_avg.pooling) == ('max', 'avg')
  # total_loss itself is jit-able with the targets as an argument: no static args.
  f = jax.jit(nst_jax.total_loss)
  x = 1.0 - content
  v_max, v_avg = f(x, vgg_params, t_max, weights), f(x, vgg_params, t_avg, weights)
  np.testing.assert_allclose(v_max, nst_jax.total_loss(x, vgg_params, t_max, weights),
                             rtol=1e-5)
  # avg-pool targets are compared with avg-pool features of the image.
  feats = nst_jax.vgg_features(vgg_params, x, ['relu5_1'], 'avg')
  d = nst_jax.gram(feats['relu5_1']) - t_avg.style['relu5_1'].value
  assert abs(float(v_avg) - float(v_max)) > 1e-3 * float(v_max)
  assert float(jnp.sum(d * d)) > 0
  leaves = jax.tree.leaves(t_max)
  assert all(isinstance(l, jax.Array) for l in leaves)


def test_public_api_is_exported():
  for name in ('Targets', 'LossWeights', 'total_loss', 'pixels_to_image', 'make_targets',
               'stylize', 'load_vgg19', 'gram'):
    assert name in nst_jax.__all__ and hasattr(nst_jax, name), name
  x = jnp.array([[[-0.5], [0.3], [1.7]]])
  np.testing.assert_allclose(nst_jax.pixels_to_image(x)[0, :, 0], [0.0, 0.3, 1.0])
  assert nst_jax.pixels_to_image(x).shape == (1, 3, 3)
