"""Fast networks (nst_jax.fast): the network, training, resume, control, apply."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import nst_jax
from nst_jax import color
from nst_jax import inputs
from nst_jax.errors import NSTError
from nst_jax.fast import apply as apply_lib
from nst_jax.fast import model_file
from nst_jax.fast import network
from nst_jax.fast import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(job='fast_train', train_size=32, batch_size=2, net_width=4, net_res_blocks=1,
            learning_rate=1e-2, log_every=5, save_every=0, seed=3)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  """Three small synthetic 'photos' (smooth colour patterns, different sizes)."""
  d = tmp_path_factory.mktemp('photos')
  rng = np.random.default_rng(0)
  for i, (h, w) in enumerate([(40, 56), (48, 48), (36, 64)]):
    y, x = np.mgrid[:h, :w] / 16.0
    img = np.stack([np.sin(x * (1 + i)) * .5 + .5, np.cos(y * (2 + i)) * .5 + .5,
                    np.full((h, w), rng.random())], -1)
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(d / f'p{i}.png')
  return str(d)


def _model(channels=3, regions=0, width=4, seed=0):
  graphdef, params = network.create(channels, regions, width, 1, seed=seed)
  meta = dict(format=model_file.FORMAT, channels=channels, guidance_channels=regions,
              width=width, res_blocks=1, color_control='luminance' if channels == 1 else 'none',
              guidance='halves_x' if regions else '')
  return apply_lib.FastModel(meta, graphdef, params)


# -- the network --------------------------------------------------------------


@pytest.mark.parametrize('hw', [(37, 53), (31, 31), (9, 8)])
def test_output_shape_is_input_shape_under_jit(hw):
  graphdef, params = network.create(3, 2, width=4, res_blocks=1, seed=1)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, *hw, 3))
  g = jnp.ones((2, *hw, 2)) * 0.5
  y = jax.jit(lambda p, x, g: network.apply(graphdef, p, x, g))(params, x, g)
  assert y.shape == x.shape
  assert y.dtype == jnp.float32
  assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


@pytest.mark.parametrize('stride,hw', [(1, (11, 14)), (2, (13, 16)), (2, (14, 17))])
def test_conv_gradient_equals_autodiff(stride, hw):
  key1, key2 = jax.random.split(jax.random.PRNGKey(stride))
  x = jax.random.normal(key1, (2, *hw, 3))
  w = jax.random.normal(key2, (3, 3, 3, 5))
  plain = lambda x, w: jnp.sum(jnp.sin(network._conv(x, w, stride)))
  ours = lambda x, w: jnp.sum(jnp.sin(network.conv_valid(x, w, stride)))
  assert float(ours(x, w)) == pytest.approx(float(plain(x, w)), rel=1e-6)
  for a, b in zip(jax.grad(plain, (0, 1))(x, w), jax.grad(ours, (0, 1))(x, w)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)


def test_guidance_changes_the_output_where_the_mask_changes():
  model = _model(regions=2, seed=2)
  image = np.asarray(jax.random.uniform(jax.random.PRNGKey(5), (64, 64, 3)))
  left = nst_jax.mask_io.load_guidance('halves_x', (64, 64))
  moved = left.copy()
  moved[:, 24:32] = left[:, 40:48]            # columns 24..31 switch to region 2
  a = apply_lib.stylize(model, image, left)
  assert np.array_equal(a, apply_lib.stylize(model, image, left.copy()))
  diff = np.abs(apply_lib.stylize(model, image, moved) - a).mean(axis=(0, 2))  # per column
  changed, far = diff[24:32].mean(), diff[56:].mean()
  assert changed > 1e-3
  assert changed > 3 * far, (changed, far)


# -- training -----------------------------------------------------------------


def _records(workdir):
  with open(os.path.join(workdir, 'losses.jsonl'), encoding='utf-8') as f:
    return [json.loads(l) for l in f]


def test_a_few_dozen_steps_lower_the_loss(photos, tmp_path, vgg_params):
  config = nst_jax.make_config(train_images=photos, train_steps=40, **TINY)
  nst_jax.run(config, str(tmp_path), params=vgg_params, quiet=True)
  losses = [r['loss'] for r in _records(tmp_path) if 'loss' in r]
  assert len(losses) == 40 and all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
  # The files a user gets, and a model that loads and stylises any size.
  assert os.path.exists(tmp_path / 'losses.png')
  assert os.path.exists(tmp_path / 'samples' / 'step_000040.png')
  model = nst_jax.fast.load(str(tmp_path))
  assert model.meta['step'] == 40
  out = nst_jax.fast.stylize(model, np.zeros((21, 30, 3), np.uint8))
  assert out.shape == (21, 30, 3) and out.dtype == np.float32


def test_guided_luminance_training_and_apply(photos, tmp_path, vgg_params):
  styles = (nst_jax.config.asset('starry_night.jpg'), nst_jax.config.asset('the_scream.jpg'))
  config = nst_jax.make_config(train_images=photos, train_steps=5, styles=styles,
                               content_guidance='halves_x', color_control='luminance',
                               **TINY)
  nst_jax.run(config, str(tmp_path), params=vgg_params, quiet=True)
  model = nst_jax.fast.load(str(tmp_path))
  assert (model.channels, model.regions, model.meta['region_styles']) == (1, 2, [0, 1])
  content = nst_jax.load_image(nst_jax.image_io.list_images(photos)[0])
  out = nst_jax.fast.stylize(model, content, 'disc:0.3')
  chroma = lambda x: color.rgb_to_yiq(x)[..., 1:]
  assert np.max(np.abs(chroma(out) - chroma(content))) < 1e-3


def test_training_honours_the_memory_options(photos, tmp_path, vgg_params):
  """remat and activation_dtype are training fields (in the fingerprint), so
  they reach VGG in the training loss: bfloat16 activations change the loss a
  little, block remat puts optimisation barriers into the gradient and leaves
  the value; a network trains with both."""
  spec = nst_jax.config.validate(nst_jax.make_config(train_images=photos, **TINY))
  crops = train.Crops(nst_jax.image_io.list_images(photos), 32)
  targets, _ = train.training_targets(spec, train.prepare_styles(spec, crops), vgg_params)
  graphdef, params = network.create(3, 0, 4, 1, seed=0)
  x = jnp.asarray(crops.batch(0, 2))
  shared = (vgg_params, targets, inputs.loss_weights(spec.loss))

  def loss(**options):
    fn = train.make_loss_fn(graphdef, spec.loss, options)
    grad = jax.jit(jax.grad(lambda p: fn(p, x, None, shared)[0])).lower(params).as_text()
    return float(jax.jit(fn)(params, x, None, shared)[0]), grad

  (plain, plain_hlo), (bf16, bf16_hlo), (remat, remat_hlo) = (
      loss(), loss(activation_dtype='bfloat16'), loss(remat='block'))
  assert 'bf16' in bf16_hlo and 'bf16' not in plain_hlo
  assert 0 < abs(bf16 - plain) < 1e-2 * plain, (bf16, plain)
  assert 'optimization_barrier' in remat_hlo and 'optimization_barrier' not in plain_hlo
  assert remat == pytest.approx(plain, rel=1e-6)
  config = nst_jax.make_config(train_images=photos, train_steps=10, remat='block',
                               activation_dtype='bfloat16', **TINY)
  nst_jax.run(config, str(tmp_path), params=vgg_params, quiet=True)
  losses = [r['loss'] for r in _records(tmp_path) if 'loss' in r]
  assert len(losses) == 10 and all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_histogram_control_gives_the_style_the_photos_colour_statistics(photos):
  # style_scale: the style at about its own size (921 px), so that only the
  # colour transform changes its statistics.
  tiny = dict(TINY, style_scale=28.0)
  config = nst_jax.make_config(train_images=photos, color_control='histogram', **tiny)
  spec = nst_jax.config.validate(config)
  crops = train.Crops(nst_jax.image_io.list_images(photos), 32)
  style = train.prepare_styles(spec, crops)[0].reshape(-1, 3)
  plain = train.prepare_styles(nst_jax.config.validate(
      nst_jax.make_config(train_images=photos, **tiny)), crops)[0].reshape(-1, 3)
  pixels = crops.pixels()
  # Matched at full size, clipped to [0, 1] and resized to the training scale,
  # so not exact: the mean and the covariance move most of the way to the photos'.
  np.testing.assert_allclose(style.mean(0), pixels.mean(0), atol=0.05)
  mean_error = lambda x: np.linalg.norm(x.mean(0) - pixels.mean(0))
  cov_error = lambda x: np.linalg.norm(np.cov(x.T) - np.cov(pixels.T))
  assert mean_error(style) < 0.5 * mean_error(plain)
  assert cov_error(style) < 0.5 * cov_error(plain)


def test_crops_are_a_function_of_seed_and_step(photos):
  paths = nst_jax.image_io.list_images(photos)
  a, b = train.Crops(paths, 32, seed=1), train.Crops(paths, 32, seed=1)
  b.batch(7, 3)                                   # another history of calls
  np.testing.assert_array_equal(a.batch(5, 3), b.batch(5, 3))
  assert not np.array_equal(a.batch(5, 3), a.batch(6, 3))
  assert a.batch(0, 2).shape == (2, 32, 32, 3)


def _cli(workdir, photos, *extra):
  args = [sys.executable, '-m', 'nst_jax', '--config=configs/fast_train.py', '--quiet',
          f'--workdir={workdir}', f'--config.train_images={photos}',
          '--config.train_size=32', '--config.batch_size=2', '--config.net_width=4',
          '--config.net_res_blocks=1', '--config.train_steps=16', '--config.log_every=2',
          '--config.checkpoint_every=2', '--config.save_every=0', *extra]
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return args, env


@pytest.mark.slow
def test_kill9_during_training_then_resume_gives_the_same_parameters(photos, tmp_path):
  args, env = _cli(tmp_path / 'reference', photos)
  r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  work = tmp_path / 'killed'
  args, env = _cli(work, photos)
  p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  ckpt = work / 'checkpoints'
  t0 = time.time()
  while time.time() - t0 < 300 and p.poll() is None:
    if ckpt.is_dir() and any(n.isdigit() and int(n) >= 4 for n in os.listdir(ckpt)):
      p.send_signal(signal.SIGKILL)
      break
    time.sleep(0.02)
  p.communicate(timeout=300)
  assert p.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
  assert not os.path.exists(work / 'model.json') or json.load(
      open(work / 'model.json'))['step'] < 16
  r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  assert 'resuming from stage 1 step' in r.stderr
  # Exact: the same program on the same CPU resumes from an exact state
  # (passes with emulated AVX2 and AVX kernels too: tools/isa_spread.py --cpu).
  with np.load(tmp_path / 'reference' / 'model.npz') as a, np.load(work / 'model.npz') as b:
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  steps = [r['step'] for r in _records(work) if 'loss' in r]
  assert steps == list(range(1, 17))             # the log trimmed to the checkpoint


# -- colour and spatial control at apply time ----------------------------------


def test_luminance_network_keeps_the_content_chroma(tmp_path):
  model = _model(channels=1, seed=4)
  model_file.write(str(tmp_path), model.params, model.meta)
  loaded = nst_jax.fast.load(str(tmp_path))
  content = nst_jax.load_image(nst_jax.config.asset('chelsea.png'))[::3, ::3]
  out = nst_jax.fast.stylize(loaded, content)
  assert out.shape == content.shape
  yiq_out, yiq_in = color.rgb_to_yiq(out), color.rgb_to_yiq(content)
  assert np.max(np.abs(yiq_out[..., 1:] - yiq_in[..., 1:])) < 1e-3
  # ... and its luminance is the network's, not the content's.
  y = model.forward(model.params, jnp.asarray(color.luminance(content))[None], None)[0]
  assert np.median(np.abs(yiq_out[..., 0] - np.asarray(y)[..., 0])) < 1e-3
  assert np.mean(np.abs(yiq_out[..., 0] - yiq_in[..., 0])) > 0.02


def test_apply_checks_guidance_against_the_model(tmp_path):
  guided, plain = _model(regions=2), _model()
  image = np.zeros((20, 24, 3), np.float32)
  assert nst_jax.fast.stylize(guided, image, 'disc:0.3').shape == (20, 24, 3)
  assert nst_jax.fast.stylize(guided, image).shape == (20, 24, 3)   # training mask
  with pytest.raises(NSTError, match='regions'):
    nst_jax.fast.stylize(guided, image, np.ones((20, 24, 3)))
  with pytest.raises(NSTError, match='without spatial guidance'):
    nst_jax.fast.stylize(plain, image, 'halves_x')
  model_file.write(str(tmp_path), guided.params, dict(guided.meta, width=8))
  with pytest.raises(NSTError, match='parameter'):
    nst_jax.fast.load(str(tmp_path))
  with pytest.raises(NSTError, match='no trained model'):
    nst_jax.fast.load(str(tmp_path / 'missing'))
  # A cut-short parameter file: one line, not a zipfile traceback.
  model_file.write(str(tmp_path), guided.params, guided.meta)
  npz = tmp_path / 'model.npz'
  npz.write_bytes(npz.read_bytes()[:1000])
  with pytest.raises(NSTError, match='unreadable'):
    nst_jax.fast.load(str(tmp_path))


def test_fast_apply_job_writes_one_image_per_input_at_its_size(photos, tmp_path):
  model = _model()
  model_file.write(str(tmp_path / 'model'), model.params, model.meta)
  config = nst_jax.make_config(job='fast_apply', model=str(tmp_path / 'model'),
                               content=photos)
  outs = nst_jax.run(config, str(tmp_path / 'out'), quiet=True)
  for path, out in zip(nst_jax.image_io.list_images(photos), outs):
    name = os.path.basename(path)
    written = nst_jax.load_image(str(tmp_path / 'out' / 'batch' / name))
    assert written.shape == nst_jax.load_image(path).shape == out.shape
    np.testing.assert_allclose(written, out, atol=1 / 255)


def test_bundled_demo_model_loads_and_stylises():
  model = nst_jax.fast.load()
  assert model.channels == 3 and model.regions == 0
  assert (model.meta['styles'], model.meta['step']) == (['starry_night.jpg'], 1500)
  content = nst_jax.load_image(nst_jax.config.asset('chelsea.png'))
  out = nst_jax.fast.stylize(model, nst_jax.config.asset('chelsea.png'))
  assert out.shape == content.shape
  # A trained stylisation: far from the photo, yet not flat, and following it
  # (the output's luminance correlates with the photo's).
  assert np.mean(np.abs(out - content)) > 0.05
  assert out.std() > 0.05
  y_out, y_in = color.luminance(out)[..., 0], color.luminance(content)[..., 0]
  assert np.corrcoef(y_out.ravel(), y_in.ravel())[0, 1] > 0.3


@pytest.mark.parametrize('overrides,message', [
    (dict(job='fast_train'), 'config.train_images'),
    (dict(job='fast_train', train_images='EMPTY'), 'config.train_images: .* holds no images'),
    (dict(job='fast_train', train_images='PHOTOS', color_control='luminance_swap'),
     'config.color_control'),
    (dict(job='fast_train', train_images='PHOTOS', train_size=8), 'config.train_size'),
    (dict(job='fast_train', train_images='PHOTOS', net_width=0), 'config.net_width'),
    (dict(job='fast_apply', model='/nonexistent'), 'config.model'),
    (dict(job='fast_apply', color_control='luminance'), 'config.color_control'),
    (dict(job='fast_train', train_images='PHOTOS', devices=2), 'config.devices'),
    (dict(job='nope'), 'config.job'),
])
def test_config_errors_name_the_field(overrides, message, photos, tmp_path):
  folders = {'PHOTOS': photos, 'EMPTY': str(tmp_path)}
  overrides = {k: folders.get(v, v) if isinstance(v, str) else v
               for k, v in overrides.items()}
  with pytest.raises(NSTError, match=message):
    nst_jax.config.validate(nst_jax.make_config(**overrides))


@pytest.mark.parametrize('job', ['fast_apply', 'fast_train'])
def test_stylize_refuses_the_fast_jobs(job):
  """nst_jax.stylize is the optimisation: a fast job is one line pointing to
  nst_jax.fast.stylize and nst_jax.run, not a silent optimisation."""
  image = np.zeros((16, 16, 3), np.float32)
  with pytest.raises(NSTError, match=f'config.job={job}: .*nst_jax.fast.stylize') as e:
    nst_jax.stylize(image, image, job=job)
  assert '\n' not in str(e.value) and 'nst_jax.run' in str(e.value)


def test_training_fingerprint_ignores_fields_training_does_not_use(photos):
  """A 40k-step run stays resumable when optimisation-only fields (or fields
  added in a later version) change; a training field refuses it."""
  from nst_jax import checkpoint
  base = nst_jax.make_config(job='fast_train', train_images=photos)
  key = lambda c: checkpoint.fingerprint(c, [], train.TRAINING_FIELDS)
  other = nst_jax.make_config(base, sizes=(64,), tile='0', lbfgs_memory=3, log_every=5,
                              train_steps=99)
  other.some_later_field = 1
  assert key(other) == key(base)
  assert key(nst_jax.make_config(base, style_weight=3.0)) != key(base)
  assert key(nst_jax.make_config(base, net_width=8)) != key(base)


def test_upsampled_conv_equals_conv_of_the_resized_image(rng):
  # The up path's sub-pixel form: conv3x3(reflect_pad(nearest_2x(x))) from a
  # conv of x itself, exact up to float32 rounding (measured 3.7e-7 relative);
  # a size that is not 2x falls back to resize + conv.
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from nst_jax.fast import network
  layer = network.ConvNormReLU(8, 5, 3, rngs=nnx.Rngs(0))
  x = jnp.asarray(rng.standard_normal((2, 10, 13, 8)), jnp.float32)
  for hw in ((20, 26), (19, 25)):
    want = layer(jax.image.resize(x, (2, *hw, 8), 'nearest'))
    got = layer.upsampled(x, hw)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5 * float(jnp.abs(want).max()))
  w = jnp.asarray(rng.standard_normal((3, 3, 8, 5)), jnp.float32)
  b = jnp.zeros(5)
  up = jnp.pad(jax.image.resize(x, (2, 20, 26, 8), 'nearest'), ((0, 0), (1, 1), (1, 1), (0, 0)),
               mode='reflect')
  ref = jax.lax.conv_general_dilated(up, w, (1, 1), 'VALID',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  got = network.upsampled_conv3x3(x, w, b)
  assert float(jnp.abs(got - ref).max() / jnp.abs(ref).max()) < 5e-6
