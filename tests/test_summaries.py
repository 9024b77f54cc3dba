"""TensorBoard summaries (nst_jax.summaries), read back with TensorBoard's own reader.

Every scalar must equal the loss log's value at the same global step, every
step must show once (also after a crash and resume), images have the
outputs' size and pixels, the config text is config.json.
"""

import io
import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea

import nst_jax
from nst_jax import checkpoint
from nst_jax import config as config_lib
from nst_jax import summaries
from nst_jax.errors import NSTError

TERMS = ('content', 'style', 'tv')


def _read(path):
  acc = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0,
                                                      ea.TENSORS: 0})
  acc.Reload()
  return acc


def _scalars(acc, tag):
  return [(e.step, e.value) for e in acc.Scalars(tag)]


def _expected(workdir, stage_steps):
  """Per tag, (global step, float32 value) from losses.jsonl."""
  offsets = np.cumsum([0, *stage_steps])
  records = [json.loads(l) for l in open(os.path.join(workdir, 'losses.jsonl'))]
  out = {'loss/total': [(int(offsets[r['stage']] + r['step']), np.float32(r['loss']))
                        for r in records if 'loss' in r]}
  for k in TERMS:
    out[f'loss/{k}'] = [(int(offsets[r['stage']] + r['step']), np.float32(r['terms'][k]))
                        for r in records if 'terms' in r]
  return out


def _assert_scalars_match_log(acc, workdir, stage_steps):
  expected = _expected(workdir, stage_steps)
  assert sorted(acc.Tags()['scalars']) == sorted(expected)
  for tag, points in expected.items():
    assert _scalars(acc, tag) == points, tag


def _png(event):
  return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert('RGB'))


def _event_files(workdir):
  return sorted(n for n in os.listdir(workdir) if 'tfevents' in n)


@pytest.fixture(scope='module')
def single(tmp_path_factory, vgg_params):
  """One photo, two stages (4 + 3 steps), chunks of 2, images every 2 steps."""
  work = tmp_path_factory.mktemp('single')
  config = nst_jax.make_config(sizes=(32, 48), steps=(4, 3), log_every=2, save_every=2)
  nst_jax.run(config, str(work), params=vgg_params, quiet=True)
  return work


def test_losses_images_and_config_read_back(single):
  acc = _read(single)
  _assert_scalars_match_log(acc, single, [4, 3])
  assert [s for s, _ in _scalars(acc, 'loss/total')] == list(range(1, 8))
  assert [s for s, _ in _scalars(acc, 'loss/style')] == [2, 4, 6, 7]   # chunk ends
  assert sorted(acc.Tags()['images']) == ['image/current', 'image/final']
  current = acc.Images('image/current')
  assert [(e.step, e.width, e.height) for e in current] == [(2, 32, 21), (4, 32, 21),
                                                            (6, 48, 32)]
  np.testing.assert_array_equal(               # the same pixels as intermediates/
      _png(current[-1]),
      np.asarray(Image.open(single / 'intermediates' / 'stage2_step00002.png')))
  [final] = acc.Images('image/final')
  assert (final.step, final.width, final.height) == (7, 48, 32)
  np.testing.assert_array_equal(_png(final), np.asarray(Image.open(single / 'final.png')))
  [text] = acc.Tensors('config/text_summary')
  body = text.tensor_proto.string_val[0].decode()
  assert body.startswith('```json\n') and body.endswith('\n```')
  assert json.loads(body[8:-4]) == json.load(open(single / 'config.json'))
  assert text.step == 0
  assert len(_event_files(single)) == 1


def test_a_cut_last_record_is_skipped_by_the_reader(single, tmp_path):
  """A kill in the middle of a write leaves a cut record: the reader keeps the rest."""
  [name] = _event_files(single)
  data = open(single / name, 'rb').read()
  (tmp_path / name).write_bytes(data[:-30])          # inside the final image's record
  acc = _read(tmp_path)
  assert 'image/final' not in acc.Tags()['images']
  assert [s for s, _ in _scalars(acc, 'loss/total')] == list(range(1, 8))


@pytest.mark.slow
def test_crash_then_resume_shows_every_step_once(vgg_params, tmp_path, monkeypatch):
  """A crash after the checkpoint at step 4 but with steps 5, 6 written;
  the resumed run writes them again: TensorBoard shows each step once, with
  the (trimmed and continued) loss log's values."""
  config = nst_jax.make_config(sizes=(32, 48), steps=(8, 4), log_every=2,
                               checkpoint_every=4)
  original = checkpoint.Checkpointer.check_stop

  def crash_at_6(self, stage, global_step, state):
    original(self, stage, global_step, state)
    if global_step == 6:
      raise RuntimeError('simulated crash')

  monkeypatch.setattr(checkpoint.Checkpointer, 'check_stop', crash_at_6)
  with pytest.raises(RuntimeError, match='simulated crash'):
    nst_jax.run(config, str(tmp_path), params=vgg_params, quiet=True)
  [first] = _event_files(tmp_path)
  assert [s for s, _ in _scalars(_read(tmp_path / first), 'loss/total')] == list(range(1, 7))
  monkeypatch.setattr(checkpoint.Checkpointer, 'check_stop', original)
  nst_jax.run(config, str(tmp_path), params=vgg_params, quiet=True)
  assert len(_event_files(tmp_path)) == 2
  acc = _read(tmp_path)
  assert [s for s, _ in _scalars(acc, 'loss/total')] == list(range(1, 13))
  _assert_scalars_match_log(acc, tmp_path, [8, 4])
  assert [e.step for e in acc.Images('image/final')] == [12]
  assert [e.step for e in acc.Tensors('config/text_summary')] == [0, 4]   # per attempt


@pytest.mark.slow
def test_content_folder_tags_images_per_photo_and_logs_batch_means(
    vgg_params, assets, tmp_path):
  """Two landscape photos (one phase, batch 2) and a portrait one (a second
  phase): the losses are batch means on one global step axis."""
  folder = tmp_path / 'photos'
  folder.mkdir()
  cat = Image.open(assets['chelsea.png']).convert('RGB')
  cat.save(folder / 'cat.png')
  cat.transpose(Image.FLIP_LEFT_RIGHT).save(folder / 'flipped.png')
  cat.transpose(Image.ROTATE_90).save(folder / 'rotated.png')
  config = nst_jax.make_config(content=str(folder), sizes=(32,), steps=(4,),
                               log_every=2, save_every=4)
  work = tmp_path / 'work'
  nst_jax.run(config, str(work), params=vgg_params, quiet=True)
  acc = _read(work)
  _assert_scalars_match_log(acc, work, [4, 4])
  records = [json.loads(l) for l in open(work / 'losses.jsonl') if '"losses"' in l]
  assert len(records) == 4 and all(len(r['losses']) == 2 for r in records)  # batch 2
  assert sorted(acc.Tags()['images']) == [
      f'image/{kind}/{name}' for kind in ('current', 'final')
      for name in ('cat', 'flipped', 'rotated')]
  for name, step in (('cat', 4), ('flipped', 4), ('rotated', 8)):
    [final] = acc.Images(f'image/final/{name}')
    assert final.step == step
    np.testing.assert_array_equal(_png(final),
                                  np.asarray(Image.open(work / 'batch' / f'{name}.png')))


def test_fast_train_writes_its_losses(vgg_params, assets, tmp_path):
  photos = tmp_path / 'photos'
  photos.mkdir()
  cat = Image.open(assets['chelsea.png']).convert('RGB')
  for i, box in enumerate([(0, 0, 200, 200), (100, 50, 300, 250)]):
    cat.crop(box).save(photos / f'p{i}.png')
  config = nst_jax.make_config(job='fast_train', train_images=str(photos), train_size=32,
                               batch_size=2, net_width=4, net_res_blocks=1,
                               learning_rate=1e-2, train_steps=6, log_every=3)
  work = tmp_path / 'model'
  nst_jax.run(config, str(work), params=vgg_params, quiet=True)
  acc = _read(work)
  _assert_scalars_match_log(acc, work, [6])
  assert [s for s, _ in _scalars(acc, 'loss/total')] == list(range(1, 7))
  assert acc.Tags()['images'] == []
  assert acc.Tags()['tensors'] == ['config/text_summary']


def test_off_writes_no_event_file(vgg_params, tmp_path):
  config = nst_jax.make_config(sizes=(32,), steps=(2,), tensorboard=False)
  nst_jax.run(config, str(tmp_path), params=vgg_params, quiet=True)
  assert _event_files(tmp_path) == []
  assert os.path.exists(tmp_path / 'final.png')


def test_config_field_is_validated_and_not_fingerprinted():
  c = config_lib.get_default_config()
  assert c.tensorboard is True and config_lib.validate(c).tensorboard is True
  loose = ml_collections.ConfigDict(c.to_dict(), type_safe=False)
  loose.tensorboard = 'yes'
  with pytest.raises(NSTError, match='config.tensorboard must be True or False'):
    config_lib.validate(loose)
  off = nst_jax.make_config(tensorboard=False)
  assert checkpoint.fingerprint(off) == checkpoint.fingerprint(c)   # resume may toggle it


def test_images_are_thumbnailed_to_max_side():
  image = np.linspace(0, 1, 1500 * 3000 * 3, dtype=np.float32).reshape(1500, 3000, 3)
  assert summaries._thumbnail(image).shape == (512, summaries.MAX_SIDE, 3)
  assert summaries._thumbnail(image[:100, :200]).shape == (100, 200, 3)
