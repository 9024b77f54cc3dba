"""VGG19 features against an independent numpy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import vgg


def _np_conv3x3(x, w, b):
  """Direct same-padded 3x3 convolution by explicit shifted sums (float64)."""
  h, wd, _ = x.shape
  xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
  out = np.zeros((h, wd, w.shape[-1]))
  for i in range(3):
    for j in range(3):
      out += xp[i:i + h, j:j + wd, :] @ w[i, j]
  return out + b


def _np_first_layers(params, image):
  mean = np.array(vgg.MEAN_PIXEL_BGR)
  x = image[..., ::-1].astype(np.float64) * 255.0 - mean
  conv1_1 = _np_conv3x3(x, params['conv1_1']['w'], params['conv1_1']['b'])
  relu1_1 = np.maximum(conv1_1, 0)
  relu1_2 = np.maximum(_np_conv3x3(relu1_1, params['conv1_2']['w'],
                                   params['conv1_2']['b']), 0)
  h, w = relu1_2.shape[0] // 2 * 2, relu1_2.shape[1] // 2 * 2
  blocks = relu1_2[:h, :w].reshape(h // 2, 2, w // 2, 2, -1)
  return {'conv1_1': conv1_1, 'relu1_1': relu1_1, 'relu1_2': relu1_2,
          'pool1': blocks.max(axis=(1, 3)), 'avgpool1': blocks.mean(axis=(1, 3))}


def test_first_layers_match_direct_numpy(vgg_params, vgg_params_np, rng):
  image = rng.uniform(size=(13, 10, 3)).astype(np.float32)
  ref = _np_first_layers(vgg_params_np, image)
  got = vgg.vgg_features(vgg_params, jnp.asarray(image),
                         ['conv1_1', 'relu1_1', 'relu1_2', 'pool1'])
  for name in ('conv1_1', 'relu1_1', 'relu1_2', 'pool1'):
    err = np.max(np.abs(got[name] - ref[name])) / np.max(np.abs(ref[name]))
    assert err < 1e-5, (name, err)
  avg = vgg.vgg_features(vgg_params, jnp.asarray(image), ['pool1'], 'avg')
  np.testing.assert_allclose(avg['pool1'], ref['avgpool1'], rtol=1e-4,
                             atol=1e-3)
  assert got['pool1'].shape == (6, 5, 64)          # odd sizes floor


def test_layer_names_shapes_and_channels(vgg_params):
  assert len(vgg.LAYER_NAMES) == 16 * 2 + 5
  feats = vgg.vgg_features(vgg_params, jnp.zeros((64, 48, 3)),
                           ['relu1_1', 'relu2_1', 'relu3_1', 'relu4_2', 'relu5_1', 'pool5'])
  assert feats['relu1_1'].shape == (64, 48, 64)
  assert feats['relu2_1'].shape == (32, 24, 128)
  assert feats['relu3_1'].shape == (16, 12, 256)
  assert feats['relu4_2'].shape == (8, 6, 512)
  assert feats['relu5_1'].shape == (4, 3, 512)
  assert feats['pool5'].shape == (2, 1, 512)
  for name in feats:
    assert vgg.layer_channels(name) == feats[name].shape[-1]
    assert 64 // vgg.layer_stride(name) == feats[name].shape[0]


def test_computes_only_up_to_deepest_layer(vgg_params):
  jaxpr = jax.make_jaxpr(lambda x: vgg.vgg_features(vgg_params, x, ['relu2_1']))(
      jnp.zeros((32, 32, 3)))
  convs = str(jaxpr).count('conv_general_dilated')
  assert convs == 3    # conv1_1, conv1_2, conv2_1


def test_unknown_layer_and_pooling_raise(vgg_params):
  with pytest.raises(nst_jax.NSTError, match='relu9_9'):
    vgg.vgg_features(vgg_params, jnp.zeros((8, 8, 3)), ['relu9_9'])
  with pytest.raises(nst_jax.NSTError, match='pooling'):
    vgg.vgg_features(vgg_params, jnp.zeros((8, 8, 3)), ['relu1_1'], 'median')


def test_preprocessing_maps_mean_pixel_to_zero():
  mean_rgb = np.array(vgg.MEAN_PIXEL_BGR[::-1]) / 255.0
  x = vgg.preprocess(jnp.asarray(np.broadcast_to(mean_rgb, (2, 2, 3)), jnp.float32))
  np.testing.assert_allclose(x, 0.0, atol=1e-4)
  # Channel order: pure red RGB lands in the last (R) slot of BGR.
  red = vgg.preprocess(jnp.asarray([[[1.0, 0.0, 0.0]]]))
  np.testing.assert_allclose(red[0, 0], [-103.939, -116.779, 255 - 123.68], rtol=1e-5)


def test_batch_vmap_jit_grad_agree(vgg_params, rng):
  imgs = jnp.asarray(rng.uniform(size=(2, 20, 20, 3)).astype(np.float32))
  f = lambda x: vgg.vgg_features(vgg_params, x, ['relu2_1'])['relu2_1']
  batched = f(imgs)
  vmapped = jax.vmap(f)(imgs)
  single = jax.jit(f)(imgs[1])
  scale = float(jnp.max(jnp.abs(batched)))       # activations reach ~1e3
  np.testing.assert_allclose(batched, vmapped, rtol=1e-5, atol=1e-6 * scale)
  np.testing.assert_allclose(batched[1], single, rtol=1e-5, atol=1e-6 * scale)
  g = jax.grad(lambda x: jnp.sum(f(x) ** 2))(imgs[0])
  assert g.shape == (20, 20, 3) and bool(jnp.all(jnp.isfinite(g)))


def test_custom_conv_gradient_equals_plain_autodiff(vgg_params, rng):
  """The hand-written conv VJP against autodiff of a plain lax.conv VGG."""
  from jax import lax

  def plain_features(x):
    x = vgg.preprocess(x)[None]
    for name in vgg.LAYER_NAMES[:vgg.LAYER_INDEX['relu3_1'] + 1]:
      if name.startswith('conv'):
        p = vgg_params[name]
        x = lax.conv_general_dilated(
            x, p['w'], (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
            precision=lax.Precision.HIGHEST) + p['b']
      elif name.startswith('relu'):
        x = jax.nn.relu(x)
      else:
        x = vgg.pool2x2(x)
    return x[0]

  img = jnp.asarray(rng.uniform(size=(24, 20, 3)).astype(np.float32))
  loss_ours = lambda x: jnp.mean(vgg.vgg_features(vgg_params, x, ['relu3_1'])['relu3_1'] ** 2)
  loss_ref = lambda x: jnp.mean(plain_features(x) ** 2)
  g_ours, g_ref = jax.grad(loss_ours)(img), jax.grad(loss_ref)(img)
  scale = float(jnp.max(jnp.abs(g_ref)))
  np.testing.assert_allclose(g_ours, g_ref, atol=1e-5 * scale)
  # Weight gradients too (for users who differentiate through the params).
  gw = jax.grad(lambda p: jnp.mean(vgg.vgg_features(p, img, ['relu1_2'])['relu1_2']))(
      vgg_params)['conv1_1']['w']
  assert bool(jnp.any(gw != 0))


def test_remat_gives_the_same_gradient(vgg_params, rng):
  img = jnp.asarray(rng.uniform(size=(32, 24, 3)).astype(np.float32))
  def loss(x, remat):
    f = vgg.vgg_features(vgg_params, x, ['relu1_1', 'relu3_1', 'relu4_2'], remat=remat)
    return sum(jnp.mean(v ** 2) for v in f.values())
  g0 = jax.grad(lambda x: loss(x, 'none'))(img)
  g1 = jax.grad(lambda x: loss(x, 'block'))(img)
  np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(g0))))
  # And the backward pass really recomputes: one checkpoint (remat) per block.
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: loss(x, 'block')))(img))
  assert jaxpr.count('remat') + jaxpr.count('checkpoint') >= 4


def test_bfloat16_activations_are_close_and_float32_out(vgg_params, rng):
  img = jnp.asarray(rng.uniform(size=(32, 24, 3)).astype(np.float32))
  f32 = vgg.vgg_features(vgg_params, img, ['relu3_1'])['relu3_1']
  bf16 = vgg.vgg_features(vgg_params, img, ['relu3_1'], activation_dtype='bfloat16')['relu3_1']
  assert bf16.dtype == jnp.float32
  rel = float(jnp.linalg.norm(bf16 - f32) / jnp.linalg.norm(f32))
  assert 1e-4 < rel < 5e-2, rel           # bf16 rounding: visible, but small
