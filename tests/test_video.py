"""Video (Ruder et al. 2016): warp, reliability, temporal loss, clip I/O, and a
clip through the engine (CLI and API), resumed mid-clip bit for bit."""

import dataclasses
import fractions
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import config as config_lib
from nst_jax import flow
from nst_jax import image_io
from nst_jax import objective
from nst_jax import video_io
from nst_jax.errors import NSTError

import av  # the test extra installs PyAV and OpenCV (pyproject.toml)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pan(image, n, size=(48, 64), step=2):
  """n crops of ``image`` sliding right by ``step`` px per frame: frame t at
  column offset step·t, so the true flow t -> t-1 is (+step, 0) everywhere."""
  h, w = size
  img = np.asarray(image_io.resize(image, (h, w + step * n)), np.float32)
  return [img[:, step * t:step * t + w] for t in range(n)]


# --- the warp ---------------------------------------------------------------

def test_warp_integer_shift_is_exact(rng):
  img = rng.random((20, 30, 3), dtype=np.float32)
  f = np.zeros((20, 30, 2), np.float32)
  f[..., 0], f[..., 1] = 3.0, -2.0
  out, inside = flow.warp(img, f)
  # out(y, x) = img(y - 2, x + 3) where that exists.
  np.testing.assert_array_equal(out[2:, :27], img[:18, 3:])
  assert inside[2:, :27].all() and not inside[:2].any() and not inside[:, 27:].any()


def test_warp_subpixel_flow_on_a_linear_image_is_exact(rng):
  # Bilinear interpolation reproduces a function linear in x and y exactly,
  # so any flow that stays inside gives the analytic value.
  h, w = 24, 32
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  img = np.stack([0.01 * xx, 0.02 * yy, 0.005 * xx + 0.01 * yy], -1)
  f = rng.uniform(-3, 3, (h, w, 2)).astype(np.float32)
  out, inside = flow.warp(img, f)
  x, y = xx + f[..., 0], yy + f[..., 1]
  want = np.stack([0.01 * x, 0.02 * y, 0.005 * x + 0.01 * y], -1)
  np.testing.assert_allclose(out[inside], want[inside], atol=2e-6)   # float32 rounding


def test_pan_warped_by_its_true_flow_matches_the_next_frame():
  chelsea = image_io.load_image(config_lib.asset('chelsea.png'))
  frames = _pan(chelsea, 2)
  back = np.zeros(frames[0].shape[:2] + (2,), np.float32)
  back[..., 0] = 2.0                                      # t -> t-1
  omega, inside = flow.warp(frames[0], back)
  np.testing.assert_allclose(omega[inside], frames[1][inside], atol=1e-6)
  assert not inside[:, -2:].any() and inside[:, :-2].all()


def test_dis_flow_recovers_a_known_pan():
  # A 3-px pan of a real photo at 128 px: DIS's median estimate within 0.25 px.
  chelsea = image_io.load_image(config_lib.asset('chelsea.png'))
  a, b = _pan(chelsea, 2, size=(96, 128), step=3)
  back = flow.optical_flow(b, a)                        # t -> t-1: (+3, 0)
  core = back[8:-8, 8:-16]
  assert abs(np.median(core[..., 0]) - 3.0) < 0.25 and abs(np.median(core[..., 1])) < 0.25


# --- reliability ------------------------------------------------------------

def _moving_square():
  """A square moving 4 px right over a static background, frames t-1 -> t."""
  h = w = 32
  back = np.zeros((h, w, 2), np.float32)     # t -> t-1
  fwd = np.zeros((h, w, 2), np.float32)      # t-1 -> t
  back[10:18, 12:20, 0] = -4.0               # the square at t came from 4 px left
  fwd[10:18, 8:16, 0] = 4.0                  # the square at t-1 goes 4 px right
  return fwd, back


def test_reliability_marks_hand_built_disocclusion_and_motion_boundaries():
  fwd, back = _moving_square()
  c = flow.reliability(fwd, back, smooth_sigma=0.0)
  # Disoccluded: background at t that the square covered at t-1 (cols 8..11).
  expect = np.ones((32, 32), bool)
  expect[10:18, 8:12] = False
  # Motion boundaries: a pixel whose 4-neighbour has another backward flow
  # (central differences see a jump of 4 px on both sides of an edge).
  u = back[..., 0]
  jump = np.zeros_like(expect)
  jump[:, 1:-1] |= (u[:, 2:] != u[:, 1:-1]) | (u[:, :-2] != u[:, 1:-1])
  jump[1:-1, :] |= (u[2:, :] != u[1:-1, :]) | (u[:-2, :] != u[1:-1, :])
  expect &= ~jump
  np.testing.assert_array_equal(c, expect.astype(np.float32))
  assert c[12:16, 14:18].all() and c[:5].all()     # the square's inside, the background


def test_reliability_zero_where_the_flow_leaves_the_frame():
  f = np.zeros((16, 16, 2), np.float32)
  f[..., 0] = 3.0                                  # t -> t-1: 3 px right
  c = flow.reliability(-f, f, smooth_sigma=0.0)
  assert not c[:, 13:].any() and c[:, :12].all()


def test_reliability_smoothing_fades_in_and_keeps_flagged_pixels_zero():
  fwd, back = _moving_square()
  hard = flow.reliability(fwd, back, smooth_sigma=0.0)
  c = flow.reliability(fwd, back)
  assert 0.0 <= c.min() and c.max() <= 1.0
  np.testing.assert_array_equal(c[hard == 0], 0.0)          # flagged stay out
  # reliable pixels next to a flagged one get less than full weight, far ones ~1
  near = (hard == 1) & (np.roll(hard, 1, 1) == 0)
  assert near.any() and (c[near] < 0.95).all() and (c[near] > 0).all()
  assert c[0, 0] > 0.999


def test_long_term_weights_closest_first():
  c1 = np.array([[1.0, 0.0, 0.0, 1.0]], np.float32)
  c2 = np.array([[1.0, 1.0, 0.0, 0.5]], np.float32)
  c4 = np.array([[1.0, 1.0, 1.0, 1.0]], np.float32)
  w1, w2, w4 = flow.long_term_weights([c1, c2, c4])
  np.testing.assert_array_equal(w1, c1)
  np.testing.assert_array_equal(w2, [[0.0, 1.0, 0.0, 0.0]])       # max(c2 - c1, 0)
  np.testing.assert_array_equal(w4, [[0.0, 0.0, 1.0, 0.0]])       # max(c4 - c1 - c2, 0)


def test_temporal_error_zero_for_a_consistent_clip():
  chelsea = image_io.load_image(config_lib.asset('chelsea.png'))
  frames = _pan(chelsea, 3)
  back = np.zeros(frames[0].shape[:2] + (2,), np.float32)
  back[..., 0] = 2.0
  c = (~np.zeros(back.shape[:2], bool)).astype(np.float32)
  c[:, -2:] = 0
  assert flow.temporal_error(frames, [back, back], [c, c]) < 1e-6
  flicker = [f + (0.1 if t % 2 else 0.0) for t, f in enumerate(frames)]
  assert abs(flow.temporal_error(flicker, [back, back], [c, c]) - 0.1) < 1e-5


# --- the temporal loss ------------------------------------------------------

def test_temporal_loss_value_and_gradient_by_hand(rng):
  x = jnp.asarray(rng.random((5, 6, 3), dtype=np.float32))
  prev = jnp.asarray(rng.random((2, 5, 6, 3), dtype=np.float32))
  c = jnp.asarray(rng.random((2, 5, 6), dtype=np.float32))
  t = objective.Temporal(prev, c)
  d = 5 * 6 * 3
  want = sum(float(np.sum(np.asarray(c[j])[..., None] * (np.asarray(x) - np.asarray(prev[j])) ** 2))
             for j in range(2)) / d
  np.testing.assert_allclose(float(objective.temporal_loss(x, t)), want, rtol=1e-6)
  g = jax.grad(objective.temporal_loss)(x, t)
  want_g = sum(2 * np.asarray(c[j])[..., None] * (np.asarray(x) - np.asarray(prev[j]))
               for j in range(2)) / d
  np.testing.assert_allclose(np.asarray(g), want_g, rtol=1e-5, atol=1e-7)


def test_loss_terms_add_the_weighted_temporal_term(vgg_params, rng):
  content = jnp.asarray(rng.random((32, 32, 3), dtype=np.float32))
  style = jnp.asarray(rng.random((32, 32, 3), dtype=np.float32))
  base = objective.make_targets(vgg_params, content, [style])
  x = jnp.asarray(rng.random((32, 32, 3), dtype=np.float32))
  temporal = objective.Temporal(jnp.zeros((1, 32, 32, 3)), jnp.ones((1, 32, 32)))
  with_t = objective.Targets(base.content, base.style, temporal=temporal)
  w = objective.LossWeights(1.0, 100.0, 0.0, 7.0)
  a = objective.loss_terms(vgg_params, x, base, w)
  b = objective.loss_terms(vgg_params, x, with_t, w)
  assert 'temporal' not in a
  np.testing.assert_allclose(float(b['temporal']), 7.0 * float(jnp.mean(x * x)), rtol=1e-5)
  np.testing.assert_allclose(float(b['total']), float(a['total'] + b['temporal']), rtol=1e-6)


def test_tiled_loss_with_the_temporal_term_equals_untiled(vgg_params, rng):
  # The temporal term is a pixel term outside the tiled custom VJP (like TV),
  # so a frame too big for memory keeps the tiled path's exactness (the bound
  # of test_tiling.py: float32 summation order over tiles).
  from nst_jax import tiling
  hw = (128, 120)            # layers up to relu2_1 (halo 16 px): several cheap tiles
  chelsea = image_io.load_image(config_lib.asset('chelsea.png'))
  content = jnp.asarray(image_io.resize(chelsea, hw))
  style = jnp.asarray(image_io.resize(image_io.load_image(
      config_lib.asset('starry_night.jpg')), hw))
  base = objective.make_targets(vgg_params, content, [style], content_layers=('relu2_1',),
                                style_layers=('relu1_1', 'relu2_1'))
  temporal = objective.Temporal(jnp.asarray(rng.random((2,) + hw + (3,), dtype=np.float32)),
                                jnp.asarray(rng.random((2,) + hw, dtype=np.float32)))
  t = objective.Targets(base.content, base.style, temporal=temporal)
  w = objective.LossWeights(1.0, 100.0, 0.5, 30.0)
  x = jnp.asarray(rng.uniform(-0.1, 1.1, hw + (3,)).astype(np.float32))
  f = lambda tile: jax.jit(jax.value_and_grad(
      lambda x: objective.total_loss(x, vgg_params, t, w, tile=tile)))(x)
  (v0, g0), (v1, g1) = f(0), f(32)
  assert tiling.make_tiling(hw, 32, t.layers).count > 1
  assert abs(float(v1 - v0)) <= 1e-5 * abs(float(v0))
  assert float(jnp.linalg.norm(g1 - g0) / jnp.linalg.norm(g0)) <= 1e-5
  # ... and the term is really in there: its gradient alone is 2λc(x - ω)/D.
  clip = jnp.clip(x, 0, 1)
  want = 30.0 * jnp.sum(2 * temporal.weights[..., None] * (clip - temporal.previous), 0) \
      / clip.size * ((x > 0) & (x < 1))
  only = objective.LossWeights(0.0, 0.0, 0.0, 30.0)
  g_t = jax.grad(lambda x: objective.total_loss(x, vgg_params, t, only, tile=32))(x)
  np.testing.assert_allclose(np.asarray(g_t), np.asarray(want), rtol=1e-5, atol=1e-9)


# --- clip files -------------------------------------------------------------

def _write_clip(path, frames, rate=12, audio=False):
  """An H.264 test clip (optionally with a 440 Hz AAC track) written with PyAV."""
  if not audio:
    video_io.write_video(path, frames, rate)
    return
  out = av.open(path, 'w')
  v = out.add_stream('libx264' if 'libx264' in av.codecs_available else 'mpeg4', rate=rate)
  v.height, v.width = frames[0].shape[:2]
  v.pix_fmt = 'yuv420p'
  a = out.add_stream('aac', rate=44100)
  for f in frames:
    for p in v.encode(av.VideoFrame.from_ndarray(image_io.to_uint8(f), format='rgb24')):
      out.mux(p)
  for p in v.encode():
    out.mux(p)
  t = np.arange(44100 * len(frames) // rate) / 44100
  samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
  for k in range(0, samples.shape[1], 1024):
    fr = av.AudioFrame.from_ndarray(samples[:, k:k + 1024], format='fltp', layout='mono')
    fr.sample_rate = 44100
    for p in a.encode(fr):
      out.mux(p)
  for p in a.encode():
    out.mux(p)
  out.close()


@pytest.fixture(scope='module')
def pan_frames():
  return _pan(image_io.load_image(config_lib.asset('chelsea.png')), 4)


def test_clip_round_trip_keeps_frames_rate_and_audio(tmp_path, pan_frames):
  src = str(tmp_path / 'src.mp4')
  _write_clip(src, pan_frames, rate=12, audio=True)
  info = video_io.probe(src)
  assert (info.frames, info.hw, info.rate, info.audio) == (4, (48, 64), 12, True)
  frames, rate = video_io.read_video(src)
  # H.264 at CRF 18 on 4:2:0 chroma: a few 8-bit steps per pixel on average.
  assert len(frames) == 4 and np.mean(np.abs(np.stack(frames) - np.stack(pan_frames))) < 0.03
  out = str(tmp_path / 'out.mp4')
  video_io.write_video(out, frames, rate, audio_from=src)
  with av.open(src) as a, av.open(out) as b:
    # The packets that start before the video's end (4 frames at 12 fps),
    # unchanged: the encoder's last flush packet starts after it.
    pa = [bytes(p) for p in a.demux(a.streams.audio[0])
          if p.dts is not None and p.pts * p.time_base < fractions.Fraction(4, 12)]
    pb = [bytes(p) for p in b.demux(b.streams.audio[0]) if p.dts is not None]
  assert pa == pb and len(pa) >= 10               # 1/3 s of 1024-sample AAC packets
  assert video_io.probe(out).rate == fractions.Fraction(12)
  assert not [n for n in os.listdir(tmp_path) if n.startswith('.tmp')]


def test_odd_sides_are_cropped_to_even_in_the_video(tmp_path, rng):
  frames = [rng.random((17, 23, 3), dtype=np.float32) for _ in range(2)]
  video_io.write_video(str(tmp_path / 'o.mp4'), frames, 10)
  assert video_io.probe(str(tmp_path / 'o.mp4')).hw == (16, 22)


def test_bad_clips_are_one_line_errors(tmp_path, rng):
  bad = tmp_path / 'bad.mp4'
  bad.write_bytes(rng.bytes(2000))
  with pytest.raises(NSTError, match='not readable'):
    video_io.probe(str(bad))
  with pytest.raises(NSTError, match='does not exist'):
    video_io.probe(str(tmp_path / 'missing.mp4'))
  sound = tmp_path / 'sound.mp4'
  with av.open(str(sound), 'w') as out:        # audio only: no video stream
    a = out.add_stream('aac', rate=8000)
    fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp',
                                    layout='mono')
    fr.sample_rate = 8000
    for p in [*a.encode(fr), *a.encode()]:
      out.mux(p)
  with pytest.raises(NSTError, match='has no video stream'):
    video_io.probe(str(sound))
  (tmp_path / 'nothing').mkdir()
  with pytest.raises(NSTError, match='holds no images'):
    video_io.probe(str(tmp_path / 'nothing'))   # an empty frame folder: zero frames
  folder = tmp_path / 'frames'
  folder.mkdir()
  image_io.save_image(str(folder / 'a.png'), rng.random((16, 16, 3)))
  image_io.save_image(str(folder / 'b.png'), rng.random((16, 20, 3)))
  with pytest.raises(NSTError, match='differ in size'):
    video_io.probe(str(folder))


# --- a clip through the engine ----------------------------------------------

ARGS = ['--config=configs/video.py', '--config.sizes=48', '--config.steps=12',
        '--config.frame_steps=6', '--config.checkpoint_every=2', '--config.log_every=2',
        '--config.tensorboard=False', '--config.output_bits=16']


def _env():
  return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))


def _cli(workdir, clip, *extra):
  return [sys.executable, '-m', 'nst_jax', *ARGS, f'--config.content={clip}',
          f'--workdir={workdir}', *extra]


def _last_state_pixels(workdir):
  """The newest checkpoint's optimised pixels (the last frame's; float32, exact)."""
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'),
                               item_names=('state', 'meta'))
  state = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))['state']
  mngr.close()
  return np.asarray(state['pixels'] if isinstance(state, dict) else state[0])


def _frames16(workdir):
  d = os.path.join(workdir, 'frames')
  return [np.asarray(__import__('PIL.Image').Image.open(os.path.join(d, n)))
          for n in sorted(os.listdir(d)) if n.endswith('.png')]


def _kill9_once_written(cmd, path) -> bool:
  """Runs ``cmd``, kill -9 as soon as ``path`` exists; True if it was killed
  (False: it ended first)."""
  p = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  t0 = time.time()
  while time.time() - t0 < 300 and p.poll() is None and not os.path.exists(path):
    time.sleep(0.02)
  killed = p.poll() is None
  p.send_signal(signal.SIGKILL)
  p.communicate(timeout=60)
  return killed


@pytest.fixture(scope='module')
def clip_file(tmp_path_factory, pan_frames):
  path = str(tmp_path_factory.mktemp('clip') / 'pan.mp4')
  _write_clip(path, pan_frames, rate=12, audio=True)
  return path


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, clip_file, vgg_params):
  work = tmp_path_factory.mktemp('clip_run')
  r = subprocess.run(_cli(work, clip_file, '--quiet'), cwd=ROOT, env=_env(),
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  return work, r


@pytest.mark.slow
def test_cli_clip_writes_frames_and_video(uninterrupted):
  work, r = uninterrupted
  assert r.stdout.strip().endswith('final.mp4')
  info = video_io.probe(os.path.join(work, 'final.mp4'))
  assert (info.frames, info.hw, info.rate, info.audio) == (4, (36, 48), 12, True)   # sizes=48
  assert sorted(os.listdir(os.path.join(work, 'frames'))) == [
      f'{k:05d}.png' for k in range(1, 5)]
  records = [json.loads(l) for l in open(os.path.join(work, 'losses.jsonl'))]
  later = [r['terms'] for r in records if 'terms' in r and r['stage'] >= 1]
  assert later and all(t['temporal'] > 0 for t in later)    # frames 2-4 have the term


# Bit-identical on any CPU for the reason of test_resume.py (same machine, same
# programs, exact restore); the flow is OpenCV's, deterministic per input.
@pytest.mark.slow
def test_kill9_mid_clip_then_resume_is_bit_identical(uninterrupted, clip_file, tmp_path):
  killed = _kill9_once_written(_cli(tmp_path, clip_file, '--quiet'),
                               os.path.join(tmp_path, 'frames', '00002.png'))
  assert killed, 'the run ended before frame 2 was written'
  assert not os.path.exists(os.path.join(tmp_path, 'final.mp4'))
  r = subprocess.run(_cli(tmp_path, clip_file), cwd=ROOT, env=_env(), capture_output=True,
                     text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  # It resumed: frame 1 was not run again, frame 2 (finished: its PNG was
  # there) at most restored at its last step, none of its steps redone.
  assert 'stage 1/4:' not in r.stderr, r.stderr[-2000:]
  assert re.search(r'stage 2/4: .*resumed at step 6', r.stderr) or 'stage 2/4:' not in r.stderr
  assert 'stage 4/4:' in r.stderr
  np.testing.assert_array_equal(_last_state_pixels(tmp_path),
                                _last_state_pixels(uninterrupted[0]))
  ref, got = _frames16(uninterrupted[0]), _frames16(tmp_path)
  assert len(ref) == len(got) == 4
  for a, b in zip(ref, got):
    np.testing.assert_array_equal(a, b)
  # Only the frames a frame still being run may read are kept as float
  # arrays: a long clip's checkpoint does not grow with every frame (at the
  # end: the last frame and the one it read; a kill right after a frame
  # resumes in that frame's last stage, which reads the one before).
  kept = os.listdir(os.path.join(tmp_path, 'checkpoints', 'phase_outputs'))
  assert sorted(n for n in kept if n.endswith('.npy')) == ['2.npy', '3.npy']


@pytest.mark.slow
def test_temporal_loss_lowers_flicker_against_independent_frames(vgg_params, pan_frames,
                                                               tmp_path):
  # The same four-frame pan through the API with and without the temporal
  # term: the temporal error (the metric of WORKSPACE.md "Video") must drop.
  import nst_jax
  folder = tmp_path / 'frames'
  folder.mkdir()
  for k, f in enumerate(pan_frames):
    image_io.save_image(str(folder / f'{k:03d}.png'), f)
  # Both start every frame from its content, so only the temporal term differs.
  common = dict(sizes=(64,), steps=(20,), frame_steps=20, clip=True, params=vgg_params,
                frame_init='content')
  style = config_lib.asset('starry_night.jpg')
  ruder = nst_jax.stylize(str(folder), style, **common)
  plain = nst_jax.stylize(str(folder), style, temporal_weight=0.0, **common)
  # The multi-pass algorithm: its pass 1 is `plain` (each frame from its
  # content, 20 steps; here as one batch), then two passes of 20 steps.
  passes = nst_jax.stylize(str(folder), style, passes=3, pass_steps=20, **common)
  contents = [np.asarray(image_io.load_image(str(folder / f'{k:03d}.png'))) for k in range(4)]
  backs = [flow.optical_flow(contents[t], contents[t - 1]) for t in range(1, 4)]
  fwds = [flow.optical_flow(contents[t - 1], contents[t]) for t in range(1, 4)]
  cs = [flow.reliability(f, b) for f, b in zip(fwds, backs)]
  e_ruder = flow.temporal_error(ruder, backs, cs)
  e_plain = flow.temporal_error(plain, backs, cs)
  e_passes = flow.temporal_error(passes, backs, cs)
  assert len(ruder) == len(passes) == 4 and ruder[0].shape == passes[0].shape == (48, 64, 3)
  # Measured 0.022 vs 0.093 (4.3x) on the 2-core Xeon; asking for 2x leaves
  # room for another CPU's kernels steering L-BFGS elsewhere, while a term
  # with no effect (or the wrong sign) gives a ratio near or above 1.
  assert e_ruder < 0.5 * e_plain, (e_ruder, e_plain)
  # Measured 0.016 vs 0.093 (5.7x), the same 2x bound for the same reason.
  assert e_passes < 0.5 * e_plain, (e_passes, e_plain)


def test_frame_start_is_the_previous_result_warped_by_the_flow(monkeypatch, rng):
  # With the flow replaced by the pan's true one, frame t's start is frame t-1's
  # result shifted 2 px (exactly), the content where the shift leaves the frame.
  from nst_jax import inputs, plan as plan_lib
  chelsea = image_io.load_image(config_lib.asset('chelsea.png'))
  a, b = _pan(chelsea, 2)
  true_back = np.zeros(a.shape[:2] + (2,), np.float32)
  true_back[..., 0] = 2.0
  monkeypatch.setattr(flow, 'optical_flow', lambda x, y, method: true_back)
  result = rng.random(a.shape, dtype=np.float32)
  spec = config_lib.validate(config_lib.get_default_config())
  source = plan_lib.Source(b, 'f2', b.shape[:2], 1)
  phase = plan_lib.Phase('frame', (source,), (), dataclasses.replace(
      spec.loss, temporal_weight=0.0), None, (plan_lib.StagePlan(b.shape[:2], 1, 64),),
      'warped', 'none', 'cholesky', (1, 1),
      (plan_lib.Earlier(plan_lib.Source(a, 'f1', a.shape[:2], 0), 0, 1),), 'dis_medium',
      (1,))
  init, temporal = inputs._frame_targets(phase, b, [[result]], 10 ** 8)
  assert temporal is None                            # temporal_weight 0: no targets
  np.testing.assert_allclose(init[:, :-2], result[:, 2:], atol=1e-6)
  np.testing.assert_allclose(init[:, -2:], b[:, -2:], atol=1e-6)


def test_clip_config_errors(tmp_path, rng):
  from nst_jax import api
  folder = tmp_path / 'f'
  folder.mkdir()
  image_io.save_image(str(folder / 'a.png'), rng.random((16, 16, 3)))
  with pytest.raises(NSTError, match='luminance_swap'):
    config_lib.validate(api.make_config(content=str(folder), clip=True,
                                        color_control='luminance_swap'))
  with pytest.raises(NSTError, match='clip=True needs'):
    config_lib.validate(api.make_config(content=config_lib.asset('chelsea.png'), clip=True))
  with pytest.raises(NSTError, match='frame_init'):
    config_lib.validate(api.make_config(content=str(folder), clip=True, frame_init='x'))
  spec = config_lib.validate(api.make_config(content=str(folder), clip=True))
  assert spec.video.info.frames == 1 and not spec.batch


def test_cli_bad_video_is_one_line(tmp_path, rng):
  bad = tmp_path / 'bad.mp4'
  bad.write_bytes(rng.bytes(500))
  r = subprocess.run([sys.executable, '-m', 'nst_jax', f'--config.content={bad}',
                      f'--workdir={tmp_path / "w"}', '--quiet'], cwd=ROOT, env=_env(),
                     capture_output=True, text=True)
  assert r.returncode == 2
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert lines[-1].startswith('error: video') and 'Traceback' not in r.stderr
  assert not os.path.exists(tmp_path / 'w' / 'final.mp4')


@pytest.mark.slow
def test_clip_with_controls_long_term_and_fast_apply(vgg_params, pan_frames, tmp_path):
  # Three frames with luminance control, a procedural mask and the long-term
  # term (frame 3 compares with frames 2 and 1: J = 2 targets): the output
  # keeps each frame's chroma (luminance control, as for a still), and the
  # fast network takes the same clip from the CLI.
  import nst_jax
  from nst_jax import color
  clip = str(tmp_path / 'c.mp4')
  _write_clip(clip, pan_frames[:3], rate=10)
  frames = nst_jax.stylize(clip, config_lib.asset('starry_night.jpg'), params=vgg_params,
                           sizes=(64,), steps=(8,), frame_steps=4, temporal_frames=(1, 2),
                           color_control='luminance', content_guidance='halves_x')
  contents = [np.asarray(image_io.resize(video_io.read_frame(clip, k), (48, 64)))
              for k in range(3)]
  assert len(frames) == 3
  for out, content in zip(frames, contents):
    yiq_o, yiq_c = color.rgb_to_yiq(out), color.rgb_to_yiq(content)
    # chroma equal up to the clamp that keeps RGB in [0, 1] (WORKSPACE: 2e-6)
    assert np.median(np.abs(yiq_o[..., 1:] - yiq_c[..., 1:])) < 1e-3
  work = tmp_path / 'fast'
  r = subprocess.run([sys.executable, '-m', 'nst_jax', '--config.job=fast_apply',
                      f'--config.content={clip}', f'--workdir={work}', '--quiet'],
                     cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  info = video_io.probe(str(work / 'final.mp4'))
  assert (info.frames, info.hw, info.rate) == (3, (48, 64), 10)


# --- the multi-pass algorithm (Ruder et al. sec. 3.3) -----------------------

def _frame_folder(folder, frames):
  folder.mkdir()
  for k, f in enumerate(frames):
    image_io.save_image(str(folder / f'{k:03d}.png'), f)
  return str(folder)


def test_multipass_plan_red_black_batches_read_the_newest_results(tmp_path, rng):
  # 5 frames, batches of 2, 3 passes: pass 1 = the stills' stages for every
  # frame; each later pass runs the even frames (batches [0, 2], [4]) and
  # then the odd ones ([1, 3]); a frame reads its own and its neighbours'
  # newest results: an even frame the previous pass's odd ones, an odd frame
  # this pass's even ones. The last pass is the clip's frames.
  from nst_jax import api, plan as plan_lib
  folder = _frame_folder(tmp_path / 'f', [rng.random((32, 48, 3)) for _ in range(5)])
  spec = config_lib.validate(api.make_config(
      content=folder, clip=True, passes=3, pass_steps=7, batch_size=2, sizes=(24, 48),
      steps=(5, 3), temporal_from_pass=3))
  phases = plan_lib.make_plan(spec).phases
  assert [p.kind for p in phases] == ['pass'] * 6 + ['frame'] * 3
  assert [[c.index for c in p.contents] for p in phases] == [
      [0, 1], [2, 3], [4], [0, 2], [4], [1, 3], [0, 2], [4], [1, 3]]
  assert [(s.hw, s.steps) for s in phases[0].stages] == [((16, 24), 5), ((32, 48), 3)]
  assert all([(s.hw, s.steps) for s in p.stages] == [((32, 48), 7)] for p in phases[3:])
  at = lambda es: [(e.phase, e.position) for e in es]
  sweeps = [p.sweep for p in phases[3:]]
  assert [at(s.own) for s in sweeps] == [
      [(0, 0), (1, 0)], [(2, 0)], [(0, 1), (1, 1)],      # pass 2: pass 1's results
      [(3, 0), (3, 1)], [(4, 0)], [(5, 0), (5, 1)]]      # pass 3: pass 2's
  assert [[at(near) for near in s.neighbour] for s in sweeps] == [
      [[(0, 1)], [(0, 1), (1, 1)]],                    # frames 0, 2: pass 1's odd
      [[(1, 1)]],                                      # frame 4
      [[(3, 0), (3, 1)], [(3, 1), (4, 0)]],            # frames 1, 3: pass 2's even
      [[(5, 0)], [(5, 0), (5, 1)]],
      [[(5, 1)]],
      [[(6, 0), (6, 1)], [(6, 1), (7, 0)]]]
  assert [s.temporal for s in sweeps] == [False] * 3 + [True] * 3   # temporal_from_pass=3
  assert sweeps[0].blend == config_lib.PASS_BLEND
  assert phases[0].temporal_terms == 0 and phases[-1].temporal_terms == 2
  # The other orders: 'sequential' (the paper's: a frame per phase, the
  # direction alternating, each reading the frame just done) and 'jacobi'
  # (every frame of a pass at once, reading the previous pass only).
  for order, want in (
      ('sequential', [[4], [3], [2], [1], [0], [0], [1], [2], [3], [4]]),
      ('jacobi', [[0, 1], [2, 3], [4], [0, 1], [2, 3], [4]])):
    spec = config_lib.validate(api.make_config(
        content=folder, clip=True, passes=3, batch_size=2, sizes=(48,), steps=(5,),
        pass_order=order))
    later = plan_lib.make_plan(spec).phases[3:]
    assert [[c.index for c in p.contents] for p in later] == want, order
    if order == 'sequential':                # pass 3 (forward), frame 3 reads frame 2 of
      assert at(later[8].sweep.neighbour[0]) == [(10, 0), (3, 0)]   # pass 3, 4 of pass 2
    else:                                    # pass 2, frame 1 reads frames 0, 2 of pass 1
      assert at(later[0].sweep.neighbour[1]) == [(0, 0), (1, 0)]
  with pytest.raises(NSTError, match='temporal_frames=1'):
    config_lib.validate(api.make_config(content=folder, clip=True, passes=2,
                                        temporal_frames=(1, 2)))
  with pytest.raises(NSTError, match='pass_order'):
    config_lib.validate(api.make_config(content=folder, clip=True, passes=2, pass_order='x'))


def test_multipass_start_blends_own_result_with_the_warped_neighbours(monkeypatch, rng):
  # The pan's true flow patched in (frame t -> t-1: +2 px, t-1 -> t: -2 px).
  # Frame 2 of 3: start = (x + δ Σ c_j ω_j) / (1 + δ Σ c_j) with ω_1 frame 1's
  # result shifted by +2 px, ω_3 frame 3's by -2 px, c_j the reliability of
  # the true flows (1 inside, 0 where a shift leaves the frame); δ = 1 and
  # both neighbours reliable: the mean of the three. Frame 1 (one neighbour)
  # has c = 0 in its second target.
  from nst_jax import inputs, plan as plan_lib
  chelsea = image_io.load_image(config_lib.asset('chelsea.png'))
  a, b, c3 = _pan(chelsea, 3)
  shift = lambda px: np.concatenate([np.full(a.shape[:2] + (1,), px, np.float32),
                                     np.zeros(a.shape[:2] + (1,), np.float32)], -1)
  index = lambda x: next(k for k, f in enumerate((a, b, c3)) if np.array_equal(x, f))
  monkeypatch.setattr(flow, 'optical_flow',
                      lambda x, y, method: shift(2.0 * (index(x) - index(y))))
  xs = [rng.random(a.shape, dtype=np.float32) for _ in range(3)]
  sources = [plan_lib.Source(im, f'f{k}', im.shape[:2], k) for k, im in enumerate((a, b, c3))]
  own = tuple(plan_lib.Earlier(s, 0, 0, k) for k, s in enumerate(sources))
  spec = config_lib.validate(config_lib.get_default_config())
  sweep = plan_lib.Sweep(2, -1, own[:2], ((own[1],), (own[0], own[2])), 1.0, True)
  phase = plan_lib.Phase('pass', tuple(sources[:2]), (), spec.loss, None,
                         (plan_lib.StagePlan(a.shape[:2], 1, 64),), 'previous_pass', 'none',
                         'cholesky', (1, 1), sweep=sweep)
  starts, temporal = inputs._sweep_targets(phase, [a, b], [xs], 10 ** 8)
  w1, in1 = flow.warp(xs[0], shift(2.0))
  w3, in3 = flow.warp(xs[2], shift(-2.0))
  c1 = flow.reliability(shift(-2.0), shift(2.0))
  c3w = flow.reliability(shift(2.0), shift(-2.0))
  assert c1[:, :20].min() > 1 - 1e-6 and not c1[:, -2:].any()   # reliable inside, 0 outside
  want = (xs[1] + c1[..., None] * w1 + c3w[..., None] * w3) / (1 + c1 + c3w)[..., None]
  np.testing.assert_allclose(starts[1], want, atol=1e-6)
  np.testing.assert_allclose(starts[1][:, 20:40],
                             (xs[0][:, 22:42] + xs[1][:, 20:40] + xs[2][:, 18:38]) / 3, atol=1e-6)
  np.testing.assert_array_equal(temporal[1][1], np.stack([c1, c3w]))
  np.testing.assert_allclose(temporal[1][0][0][in1], w1[in1], atol=1e-6)
  # Frame 1: its one neighbour (frame 2, shifted -2 px), and c = 0 for the other.
  w2, _ = flow.warp(xs[1], shift(-2.0))
  np.testing.assert_allclose(starts[0][:, 20:40], 0.5 * (xs[0] + w2)[:, 20:40], atol=1e-6)
  assert not temporal[0][1][1].any() and temporal[0][1][0].max() > 0.99


def test_clip_frames_get_their_own_masks_from_a_folder(tmp_path, monkeypatch, pan_frames):
  # A mask folder for a clip: one label map per frame, named after the frame
  # file (a frame folder) or 00001.png ... (a video file). Frame k's left
  # region is 10 + 5k columns wide: each frame's phase (single-pass) and each
  # frame of a multi-pass batch loads its own.
  from nst_jax import api, inputs, plan as plan_lib
  monkeypatch.setattr(inputs, '_frame_targets', lambda *a: (None, None))  # masks only
  h, w = pan_frames[0].shape[:2]
  folder = _frame_folder(tmp_path / 'frames', pan_frames)
  clip = str(tmp_path / 'c.mp4')
  _write_clip(clip, pan_frames, rate=12)
  for content, names in ((folder, [f'{k:03d}' for k in range(4)]),
                         (clip, [f'{k + 1:05d}' for k in range(4)])):
    masks = tmp_path / f'masks_{len(names[0])}'
    masks.mkdir()
    for k, name in enumerate(names):
      m = np.zeros((h, w, 3), np.float32)
      m[:, 10 + 5 * k:] = 1.0
      image_io.save_image(str(masks / f'{name}.png'), m)
    for extra in ({}, {'passes': 2}):
      spec = config_lib.validate(api.make_config(
          content=content, clip=True, content_guidance=str(masks), sizes=(64,), steps=(5,),
          styles=(config_lib.asset('starry_night.jpg'),), **extra))
      phases = plan_lib.make_plan(spec).phases
      assert spec.guidance.regions == 2
      widths = {}
      for p in phases if not extra else phases[:1]:      # pass 1: all frames, one batch
        prep = inputs.prepare(p, [], spec.max_input_pixels)
        for c, mask in zip(p.contents, prep.content_masks):
          left = mask[..., 0] if mask[0, 0, 0] > 0.5 else mask[..., 1]
          widths[c.index] = float(left.sum()) / h
      assert widths == {k: 10.0 + 5 * k for k in range(4)}, (content, extra, widths)


@pytest.mark.slow
def test_multipass_cli_kill9_then_resume_is_bit_identical(clip_file, tmp_path):
  # 4 frames, batches of 2, 2 passes (4 phases: pass 1 [0, 1] [2, 3], then
  # even [0, 2] and odd [1, 3]). Killed once pass 2's even batch is saved,
  # the rerun restores pass 1's and the even frames' results and resumes in
  # the odd batch, ending with the uninterrupted run's frames bit for bit
  # (the reason of test_resume.py); the frames and video are the last pass's
  # only.
  extra = ('--config.passes=2', '--config.pass_steps=4', '--config.batch_size=2', '--quiet')
  ref = tmp_path / 'ref'
  r = subprocess.run(_cli(ref, clip_file, *extra), cwd=ROOT, env=_env(), capture_output=True,
                     text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  info = video_io.probe(os.path.join(ref, 'final.mp4'))
  assert (info.frames, info.hw, info.audio) == (4, (36, 48), True)
  records = [json.loads(l) for l in open(os.path.join(ref, 'losses.jsonl'))]
  assert {r['stage'] for r in records if 'terms' in r and 'temporal' in r['terms']} == {
      2, 3}                                        # pass 2 has the term
  work = tmp_path / 'work'
  killed = _kill9_once_written(_cli(work, clip_file, *extra),
                               os.path.join(work, 'checkpoints', 'phase_outputs', '2.npy'))
  assert killed, 'the run ended before pass 2 began'
  # only the last pass writes frames: here its even batch, so far
  assert sorted(os.listdir(os.path.join(work, 'frames'))) == sorted(
      os.listdir(os.path.join(ref, 'frames')))[::2]
  r = subprocess.run(_cli(work, clip_file, *extra[:-1]), cwd=ROOT, env=_env(),
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'stage 2/4:' not in r.stderr and 'stage 4/4:' in r.stderr, r.stderr[-2000:]
  ref_frames, got = _frames16(ref), _frames16(work)
  assert len(ref_frames) == len(got) == 4
  for a, b in zip(ref_frames, got):
    np.testing.assert_array_equal(a, b)
