"""Batch mode: a folder in, the one engine with a batch axis, outputs named after inputs."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import nst_jax
from nst_jax import color, image_io, plan


def _folder(tmp_path, assets, rotated=False):
  folder = tmp_path / 'photos'
  folder.mkdir()
  cat = Image.open(assets['chelsea.png']).convert('RGB')
  cat.save(folder / 'cat.png')
  cat.transpose(Image.FLIP_LEFT_RIGHT).save(folder / 'cat_flipped.jpg', quality=95)
  if rotated:   # another aspect ratio: a group (phase) of its own
    cat.transpose(Image.ROTATE_90).save(folder / 'cat_rotated.png')
  (folder / 'notes.txt').write_text('not an image')
  return folder


def test_batch_equals_single_runs(vgg_params, assets, tmp_path):
  folder = _folder(tmp_path, assets, rotated=True)
  c = nst_jax.get_default_config()
  c.content, c.sizes, c.steps, c.log_every = str(folder), (48,), (6,), 3
  work = tmp_path / 'work'
  images = nst_jax.run(c, str(work), params=vgg_params, quiet=True)
  assert sorted(os.listdir(work / 'batch')) == ['cat.png', 'cat_flipped.png',
                                                'cat_rotated.png']
  assert [i.shape for i in images] == [(32, 48, 3), (32, 48, 3), (48, 32, 3)]
  # Each batch member equals the same image run alone (own L-BFGS per image).
  # The batch loops the one-image update, so its float32 results were equal
  # to the alone runs' bit for bit on AVX-512 and emulated AVX2, AVX and
  # no-YNNPACK kernels (tools/isa_spread.py batch); 2/255 allows the 8-bit
  # files' rounding and a compiler that schedules the batch loop otherwise.
  for name, src in (('cat.png', folder / 'cat.png'),
                    ('cat_flipped.png', folder / 'cat_flipped.jpg'),
                    ('cat_rotated.png', folder / 'cat_rotated.png')):
    alone = nst_jax.stylize(str(src), assets['starry_night.jpg'], params=vgg_params,
                            sizes=(48,), steps=(6,), log_every=3)
    got = image_io.load_image(str(work / 'batch' / name))
    assert np.abs(got - image_io.to_uint8(alone) / 255.0).max() <= 2 / 255
  # Two phases: the two landscape cats together, the rotated one alone.
  starts = [json.loads(l) for l in open(work / 'losses.jsonl') if 'stage_start' in l]
  assert [(s['size'], s['batch']) for s in starts] == [([32, 48], 2), ([48, 32], 1)]


def test_batch_size_splits_a_group(vgg_params, assets, tmp_path):
  folder = _folder(tmp_path, assets)
  c = nst_jax.get_default_config()
  c.content, c.sizes, c.steps, c.batch_size = str(folder), (32,), (2,), 1
  spec = nst_jax.config.validate(c)
  p = plan.make_plan(spec)
  assert [[s.name for s in ph.contents] for ph in p.phases] == [['cat'], ['cat_flipped']]


def test_batch_with_luminance_and_guidance(vgg_params, assets, tmp_path):
  """Every control works on a folder: luminance-only transfer keeps each
  photo's own chroma, and spatial guidance applies per image."""
  folder = _folder(tmp_path, assets)
  c = nst_jax.get_default_config()
  c.content, c.sizes, c.steps = str(folder), (48,), (6,)
  c.color_control, c.content_guidance = 'luminance', 'halves_x'
  c.styles = (assets['starry_night.jpg'], assets['the_scream.jpg'])
  images = nst_jax.run(c, str(tmp_path / 'w'), params=vgg_params, quiet=True)
  for out, src in zip(images, ('cat.png', 'cat_flipped.jpg')):
    content = np.asarray(image_io.resize(image_io.load_image(str(folder / src)),
                                         out.shape[:2]))
    np.testing.assert_allclose(color.rgb_to_yiq(out)[..., 1:],
                               color.rgb_to_yiq(content)[..., 1:], atol=2e-6)
  alone = nst_jax.stylize(str(folder / 'cat.png'), list(c.styles), params=vgg_params,
                          sizes=(48,), steps=(6,), color_control='luminance',
                          content_guidance='halves_x')
  assert np.abs(images[0] - alone).max() < 1e-4   # measured 0 on every kernel set, as above


def test_batch_refuses_an_empty_folder(vgg_params, tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  c = nst_jax.get_default_config()
  c.content, c.sizes, c.steps = str(empty), (32,), (1,)
  with pytest.raises(nst_jax.NSTError, match='holds no images'):
    nst_jax.run(c, str(tmp_path / 'w'), params=vgg_params, quiet=True)


def test_output_names_of_files_sharing_a_stem():
  assert plan.output_names(['a/cat.png', 'a/cat.JPG', 'a/dog.png']) == [
      'cat_png', 'cat_jpg', 'dog']
