"""Batch mode: a folder in, one vmapped compiled loop, outputs named after inputs."""

import os

import numpy as np
import pytest
from PIL import Image

import nst_jax
from nst_jax import image_io


def test_batch_equals_single_runs(vgg_params, assets, tmp_path):
  folder = tmp_path / 'photos'
  folder.mkdir()
  cat = Image.open(assets['chelsea.png']).convert('RGB')
  cat.save(folder / 'cat.png')
  cat.transpose(Image.FLIP_LEFT_RIGHT).save(folder / 'cat_flipped.jpg', quality=95)
  (folder / 'notes.txt').write_text('not an image')
  c = nst_jax.get_default_config()
  c.content, c.sizes, c.steps, c.log_every = str(folder), (48,), (6,), 3
  work = tmp_path / 'work'
  nst_jax.run(c, str(work), params=vgg_params, quiet=True)
  assert sorted(os.listdir(work / 'batch')) == ['cat.png', 'cat_flipped.png']
  # Each batch member equals the same image run alone (own L-BFGS per image).
  for name, src in (('cat.png', folder / 'cat.png'), ('cat_flipped.png', folder / 'cat_flipped.jpg')):
    alone = nst_jax.stylize(str(src), assets['starry_night.jpg'], params=vgg_params,
                            sizes=(48,), steps=(6,), log_every=3)
    got = image_io.load_image(str(work / 'batch' / name))
    assert np.abs(got - image_io.to_uint8(alone) / 255.0).max() <= 2 / 255


def test_batch_refuses_single_image_controls(vgg_params, tmp_path, assets):
  folder = tmp_path / 'p'
  folder.mkdir()
  Image.open(assets['chelsea.png']).save(folder / 'a.png')
  c = nst_jax.get_default_config()
  c.content, c.sizes, c.steps, c.color_control = str(folder), (32,), (1,), 'luminance'
  with pytest.raises(nst_jax.NSTError, match='batch mode .* color_control'):
    nst_jax.run(c, str(tmp_path / 'w'), params=vgg_params, quiet=True)
  empty = tmp_path / 'empty'
  empty.mkdir()
  c.content, c.color_control = str(empty), 'none'
  with pytest.raises(nst_jax.NSTError, match='holds no images'):
    nst_jax.run(c, str(tmp_path / 'w'), params=vgg_params, quiet=True)
