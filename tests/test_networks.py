"""Gatys et al.'s normalised VGG19: the original up to a per-filter scale."""

import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import image_io, networks, vgg


def _image(name, side):
  x = nst_jax.load_image(nst_jax.config.asset(name))
  return np.asarray(image_io.resize(x, image_io.fit_long_side(x.shape[:2], side)))


@pytest.mark.parametrize('pooling', ['max', 'avg'])
def test_normalized_relu_outputs_are_the_originals_divided_per_filter(vgg_params_np,
                                                                      pooling):
  """Positive homogeneity of ReLU and of both poolings: exact up to float32
  rounding (1e-5 relative: the products are of different but equal-valued
  factors)."""
  normalized = networks.normalize(vgg_params_np, networks.load_means())
  scale = networks.factors(networks.load_means())
  layers = tuple(networks.relu_of(c) for c in networks.conv_names())
  x = jnp.asarray(_image('chelsea.png', 96))
  a = vgg.vgg_features(vgg_params_np, x, layers, pooling)
  b = vgg.vgg_features(normalized, x, layers, pooling)
  for conv in networks.conv_names():
    relu = networks.relu_of(conv)
    expected = np.asarray(a[relu]) / scale[conv]
    err = np.abs(np.asarray(b[relu]) - expected).max() / np.abs(expected).max()
    assert err <= 1e-5, (relu, err)


def test_normalizing_on_a_set_gives_mean_activation_one_on_it(vgg_params_np):
  """The paper's definition: each filter's mean over the images and positions
  is 1 (filters the floor touched aside)."""
  images = [_image('chelsea.png', 128), _image('starry_night.jpg', 128)]
  means = networks.channel_means(vgg_params_np, images)
  again = networks.channel_means(networks.normalize(vgg_params_np, means), images)
  for conv in networks.conv_names():
    kept = means[conv] >= networks.MEAN_FLOOR * np.median(means[conv])
    np.testing.assert_allclose(again[conv][kept], 1.0, rtol=1e-4)
    assert np.all(again[conv][~kept] < 1.0)


def test_shipped_factors_and_the_network_option(tmp_path):
  means = networks.load_means()
  assert set(means) == set(vgg.conv_shapes()) and all(np.all(v > 0) for v in means.values())
  params = nst_jax.load_vgg19(network='normalized')
  assert params['conv5_4']['w'].shape == vgg.conv_shapes()['conv5_4']
  with pytest.raises(nst_jax.NSTError, match='unknown network'):
    nst_jax.load_vgg19(network='imagenet')
  bad = tmp_path / 'means.npz'
  np.savez(bad, conv1_1=np.ones(3))
  with pytest.raises(nst_jax.NSTError, match='lack conv1_1|wrong shape'):
    networks.load_means(str(bad))
  with pytest.raises(nst_jax.NSTError, match='config.network'):
    nst_jax.config.validate(nst_jax.make_config(network='vgg16'))


def test_the_network_field_reaches_the_weights(monkeypatch, tmp_path):
  """config.network is what api.run loads (optimisation and fast training)."""
  from nst_jax import api
  from nst_jax.fast import train
  asked = []

  class Loaded(Exception):
    pass

  def fake(path=None, **kw):
    asked.append(kw.get('network'))
    raise Loaded
  monkeypatch.setattr(api, 'load_vgg19', fake)
  monkeypatch.setattr(nst_jax.weights, 'load_vgg19', fake)
  with pytest.raises(Loaded):
    nst_jax.run(nst_jax.make_config(network='normalized', sizes=(32,), steps=(1,)),
                str(tmp_path / 'opt'), quiet=True)
  photos = tmp_path / 'photos'
  photos.mkdir()
  image_io.save_image(str(photos / 'a.png'), np.zeros((40, 40, 3), np.float32))
  with pytest.raises(Loaded):
    nst_jax.run(nst_jax.make_config(network='normalized', job='fast_train',
                                    train_images=str(photos), train_size=32),
                str(tmp_path / 'fast'), quiet=True)
  assert asked == ['normalized', 'normalized']


def test_fields_added_later_keep_earlier_checkpoints_resumable():
  """A checkpoint made before the fields of checkpoint._ADDED_LATER existed
  resumes: at the values that reproduce those runs the fields are not in
  the fingerprint (of the optimisation, and of fast training's fields), any
  other value is; and every config field added since is listed there (a
  config without all of them hashes like the default)."""
  from nst_jax import checkpoint
  from nst_jax.fast import train
  c = nst_jax.get_default_config()
  before = c.copy_and_resolve_references()
  with before.unlocked():
    for k in checkpoint._ADDED_LATER:  # pylint: disable=protected-access
      del before[k]
  for fields in (None, train.TRAINING_FIELDS):
    assert checkpoint.fingerprint(c, [], fields) == checkpoint.fingerprint(before, [], fields)
    for k, v in (('style_statistic', 'w2'), ('network', 'normalized')):
      other = c.copy_and_resolve_references()
      other[k] = v
      assert checkpoint.fingerprint(other, [], fields) != checkpoint.fingerprint(c, [], fields)
