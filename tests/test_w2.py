"""The Wasserstein-2 style statistic: square roots, closed forms, tiling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import image_io, linalg, losses, mask_io, objective, tiling


def _spd(rng, n, cond=100.0):
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  w = np.geomspace(1.0, 1.0 / cond, n)
  return (q * w) @ q.T, q, w


def test_sqrtm_matches_the_eigendecomposition(rng):
  a, q, w = _spd(rng, 48, cond=1e3)
  exact = (q * np.sqrt(w)) @ q.T
  got = np.asarray(linalg.sqrtm(jnp.asarray(a, jnp.float32), 20, shift=0.0))
  # float32 products: 1e-5 of the largest root is the rounding floor here.
  np.testing.assert_allclose(got, exact, atol=2e-5)
  np.testing.assert_allclose(linalg.sqrtm(jnp.diag(jnp.array([4.0, 9.0])), 20),
                             np.diag([2.0, 3.0]), atol=1e-5)
  assert float(jnp.abs(linalg.sqrtm(jnp.zeros((3, 3)))).max()) == 0.0


@pytest.mark.parametrize('method', linalg.METHODS)
def test_trace_sqrt_value_gradient_closed_form_and_finite_differences(rng, method):
  """tr(A^½) = Σ√λ and d tr(A^½)/dA = ½ A^−½ for symmetric positive definite
  A; and a directional finite difference of the function as computed. The
  Newton–Schulz shift δ = 1e-7·‖A‖_F moves the trace by < 16·√δ here."""
  a, q, w = _spd(rng, 16, cond=10.0)
  x = jnp.asarray(a, jnp.float32)
  assert abs(float(linalg.trace_sqrt(x, method)) - np.sqrt(w).sum()) <= 2e-4
  g = np.asarray(jax.grad(lambda x: linalg.trace_sqrt(x, method))(x))
  g = 0.5 * (g + g.T)                     # the symmetric part acts on symmetric A
  np.testing.assert_allclose(g, 0.5 * (q / np.sqrt(w)) @ q.T, atol=2e-4)
  d = rng.normal(size=a.shape)
  d = (d + d.T) / np.linalg.norm(d + d.T)        # unit direction
  # h: the O(h²) truncation (λ_min = 0.1) and float32 noise (~1e-6 / h) both
  # stay below 1e-3 of the derivative.
  h = 3e-3
  f = lambda x: float(linalg.trace_sqrt(jnp.asarray(x, jnp.float32), method))
  fd = (f(a + h * d) - f(a - h * d)) / (2 * h)
  assert abs(fd - float(np.sum(g * d))) <= 1e-3 * abs(fd) + 1e-4


def test_the_gradient_through_the_shift(rng):
  """With a large shift (0.1·‖A‖_F) the term of the gradient through δ is a
  sizeable part: both closed-form VJPs equal ½(A+δI)^-½ + ½ tr((A+δI)^-½)·0.1·A/‖A‖_F
  computed in float64, and a finite difference of the function itself."""
  a, _, _ = _spd(rng, 12, cond=10.0)
  shift = 0.1
  frob = np.linalg.norm(a)
  w, v = np.linalg.eigh(a + shift * frob * np.eye(12))
  inv_root = (v / np.sqrt(w)) @ v.T
  expected = 0.5 * inv_root + 0.5 * np.trace(inv_root) * shift * a / frob
  through_shift = 0.5 * np.trace(inv_root) * shift * a / frob
  assert np.abs(through_shift).max() > 0.2 * np.abs(expected).max()   # it matters here
  x = jnp.asarray(a, jnp.float32)
  d = rng.normal(size=a.shape)
  d = (d + d.T) / np.linalg.norm(d + d.T)
  for fn in (lambda x: linalg._trace_sqrt_ns(x, 24, shift),
             lambda x: linalg._trace_sqrt_eigh(x, shift)):
    g = np.asarray(jax.grad(fn)(x))
    np.testing.assert_allclose(0.5 * (g + g.T), expected, atol=1e-5)
    h = 1e-2
    fd = (float(fn(jnp.asarray(a + h * d, jnp.float32))) -
          float(fn(jnp.asarray(a - h * d, jnp.float32)))) / (2 * h)
    assert abs(fd - float(np.sum(g * d))) <= 1e-3 * abs(fd) + 1e-4


def test_newton_schulz_stays_finite_on_a_vgg_like_spectrum(rng):
  """Eigenvalues over 15 decades (the style loss's Σ_s^½ Σ Σ_s^½ on VGG
  layers): unshifted, float32 Newton–Schulz diverges within 30 iterations
  (the reason for the shift); shifted, any count stays at the same trace,
  within the shift's bias of the exact one."""
  q, _ = np.linalg.qr(rng.normal(size=(128, 128)))
  w = np.geomspace(1.0, 1e-15, 128)
  a = jnp.asarray((q * w) @ q.T, jnp.float32)
  exact = np.sqrt(w).sum()
  values = [float(linalg.trace_sqrt(a, 'newton_schulz', n))
            for n in (linalg.NS_ITERATIONS, 30, 60)]
  assert np.all(np.isfinite(values)) and max(values) - min(values) <= 1e-4 * exact
  # Both ways compute tr((A + δI)^½), δ = 1e-7 ‖A‖_F (≈ 1.9e-7 here): the
  # exact trace plus Σ(√(λ+δ) − √λ) (0.3 % here). float32 eigenvalues carry
  # ~1e-7·‖A‖ of noise, which δ keeps out of the square roots.
  delta = 1e-7 * np.sqrt(np.sum(w * w))
  shifted = exact + np.sum(np.sqrt(w + delta) - np.sqrt(w))
  assert abs(values[0] - shifted) <= 1e-3 * exact
  assert abs(float(linalg.trace_sqrt(a, 'eigh')) - shifted) <= 1e-4 * exact


def _moments(f):
  f = f.reshape(-1, f.shape[-1])
  return jnp.mean(f, axis=0), f.T @ f / f.shape[0]


@pytest.mark.parametrize('method', linalg.METHODS)
def test_w2_of_a_gaussian_to_itself_is_zero(rng, method):
  """Relative to the distribution's scale (its W2 from a point at 0). The
  shift δ of the square root reads a little below zero, −2Σ(√(λ+δ) − √λ):
  measured ≤ 1.3 % on VGG layers; bound 1 % for these 32 channels."""
  f = jnp.asarray(rng.gamma(1.0, size=(20, 20, 32)).astype(np.float32))
  mu, s = _moments(f)
  t = losses.w2_target(mu, s)
  d = float(losses.w2_distance(mu, s, t, method))
  assert abs(d) <= 1e-2 * float(jnp.sum(mu * mu) + t.cov_trace)


def test_w2_against_the_closed_form_for_diagonal_covariances():
  """Diagonal Σ₁, Σ₂: W2² = ‖μ₁ − μ₂‖² + Σ_i (√σ₁ᵢ − √σ₂ᵢ)² (both + ε)."""
  mu1, mu2 = jnp.array([1.0, 0.0, 2.0, 0.5]), jnp.array([0.0, 1.0, 2.0, 0.0])
  v1, v2 = jnp.array([1.0, 4.0, 0.25, 2.0]), jnp.array([4.0, 1.0, 1.0, 0.5])
  second = lambda mu, v: jnp.diag(v) + jnp.outer(mu, mu)
  t = losses.w2_target(mu2, second(mu2, v2))
  eps = float(t.eps)
  expected = float(jnp.sum((mu1 - mu2) ** 2)
                   + jnp.sum((jnp.sqrt(v1 + eps) - jnp.sqrt(v2 + eps)) ** 2))
  got = float(losses.w2_distance(mu1, second(mu1, v1), t))
  assert abs(got - expected) <= 1e-4 * expected


def test_blended_styles_are_the_mixture_of_their_distributions(rng):
  """Two styles blended 1:1: the target is the Gaussian of both feature sets
  pooled (means and second moments blend, not covariances)."""
  a = jnp.asarray(rng.normal(1.0, 1.0, (10, 10, 8)).astype(np.float32))
  b = jnp.asarray(rng.normal(-1.0, 2.0, (10, 10, 8)).astype(np.float32))
  (ma, sa), (mb, sb) = _moments(a), _moments(b)
  t = losses.style_targets([{'l': sa}, {'l': sb}], (0.5, 0.5), {'l': 1.0},
                           means_per_style=[{'l': ma}, {'l': mb}])['l']
  pooled = losses.w2_target(*_moments(jnp.concatenate([a, b])))
  np.testing.assert_allclose(t.value.mean, pooled.mean, atol=1e-6)
  np.testing.assert_allclose(t.value.cov_sqrt, pooled.cov_sqrt, atol=1e-5)
  # 'relative': 1 / W2²(target, point at 0), so an image whose features are
  # all zero starts at ~1 — exactly, that image is the Gaussian N(0, εI):
  # ‖μ_s‖² + tr(Σ_s + εI) + nε − 2√ε tr((Σ_s + εI)^½).
  v = t.value
  zero = float(t.scale * losses.w2_distance(jnp.zeros(8), jnp.zeros((8, 8)), v))
  exact = float(t.scale * (jnp.sum(v.mean ** 2) + v.cov_trace + 8 * v.eps
                           - 2 * jnp.sqrt(v.eps) * jnp.trace(v.cov_sqrt)))
  assert abs(zero - exact) <= 1e-4 and abs(zero - 1.0) <= 0.01


HW = (160, 144)
SHALLOW = dict(content_layers=('relu3_1',), style_layers=('relu1_1', 'relu2_1', 'relu3_1'))


def _images():
  load = lambda n, hw: np.asarray(image_io.resize(nst_jax.load_image(nst_jax.config.asset(n)),
                                                  hw))
  return load('chelsea.png', HW), load('starry_night.jpg', (120, 160))


def _value_and_grad(params, targets, x, tile):
  w = objective.LossWeights(1.0, 100.0, 0.5)
  return jax.jit(jax.value_and_grad(
      lambda x: objective.total_loss(x, params, targets, w, tile=tile)))(x)


@pytest.mark.parametrize('guided', [False, True])
def test_tiled_w2_equals_untiled(vgg_params, guided):
  """μ and S are sums over positions, so the tiles' passes carry over: the
  value to 1e-5. The gradient's bound: the Gram statistic's tiled/untiled
  agreement is ~2e-7; Newton–Schulz amplifies the float32 summation-order
  differences of the moments ~100x (measured 2.0e-5 plain, 2.5e-5 guided)."""
  content, style = _images()
  guided_t = {}
  if guided:
    guided_t, _ = objective.make_guided_targets(
        vgg_params, mask_io.halves(HW), [style], [mask_io.halves(style.shape[:2])], (0, 0),
        (0.5, 0.5), statistic='w2', style_layers=SHALLOW['style_layers'])
  t = objective.make_targets(vgg_params, content, [style], style_statistic='w2',
                             guided=guided_t, statistic='w2',
                             global_weight=0.0 if guided else 1.0, **SHALLOW)
  assert isinstance(next(iter((t.guided if guided else t.style).values())).value,
                    losses.W2Target)
  x = jnp.asarray(np.random.default_rng(0).uniform(-0.1, 1.1, HW + (3,)).astype(np.float32))
  v0, g0 = _value_and_grad(vgg_params, t, x, 0)
  v1, g1 = _value_and_grad(vgg_params, t, x, 48)
  assert tiling.make_tiling(HW, 48, t.layers).count > 1
  assert abs(float(v1 - v0)) <= 1e-5 * abs(float(v0))
  assert float(jnp.linalg.norm(g1 - g0) / jnp.linalg.norm(g0)) <= 1e-4


def _w2_style_distance(params, image, style, layers):
  """Σ_l relative W2² of ``image``'s features to ``style``'s (the judged distance)."""
  t = objective.style_targets(params, [style], layers, style_statistic='w2')
  s = objective.position_sums(params, jnp.asarray(image), losses.Wanted.of(
      objective.Targets(content={}, style=t)))
  m = {l: losses.layer_positions(image.shape[:2], l) for l in layers}
  return float(losses.loss_from_sums(s, objective.Targets(content={}, style=t), m)['style'])


def test_a_w2_run_moves_the_image_towards_the_styles_distribution(vgg_params, assets):
  """End to end (config -> plan -> engine): a few L-BFGS steps with
  style_statistic=w2 lower the W2 style distance well below the photo's own."""
  layers = SHALLOW['style_layers']
  out = nst_jax.stylize(assets['chelsea.png'], assets['starry_night.jpg'], params=vgg_params,
                        sizes=(96,), steps=(12,), style_statistic='w2', style_weight=1e3,
                        **SHALLOW)
  style = image_io.resize(nst_jax.load_image(assets['starry_night.jpg']), (72, 96))
  photo = image_io.resize(nst_jax.load_image(assets['chelsea.png']), out.shape[:2])
  before = _w2_style_distance(vgg_params, np.asarray(photo), style, layers)
  after = _w2_style_distance(vgg_params, out, style, layers)
  assert after < 0.5 * before, (before, after)


def test_w2_with_guidance_luminance_and_two_styles(vgg_params, assets):
  """Every control composes: regions get their own style's Gaussian, the
  luminance run optimises one channel, two styles blend their moments."""
  kw = dict(params=vgg_params, sizes=(64,), steps=(3,), style_statistic='w2', **SHALLOW)
  styles = [assets['starry_night.jpg'], assets['the_scream.jpg']]
  guided = nst_jax.stylize(assets['chelsea.png'], styles, content_guidance='halves_x',
                           color_control='luminance', **kw)
  blended = nst_jax.stylize(assets['chelsea.png'], styles, **kw)
  assert guided.shape == blended.shape and np.all(np.isfinite(guided))
  chroma = lambda x: nst_jax.color.rgb_to_yiq(x)[..., 1:]
  photo = image_io.resize(nst_jax.load_image(assets['chelsea.png']), guided.shape[:2])
  assert np.max(np.abs(chroma(guided) - chroma(np.asarray(photo)))) < 1e-3
  with pytest.raises(nst_jax.NSTError, match="guided_statistic='mean'"):
    nst_jax.config.validate(nst_jax.make_config(
        content=assets['chelsea.png'], styles=tuple(styles), content_guidance='halves_x',
        guided_statistic='mean', style_statistic='w2'))
  with pytest.raises(nst_jax.NSTError, match='config.style_statistic'):
    nst_jax.config.validate(nst_jax.make_config(style_statistic='wasserstein'))


def test_fast_training_with_w2(tmp_path, vgg_params, assets):
  """A fast network trains against the W2 statistic (the targets helper is
  the optimisation's): the loss falls."""
  photos = tmp_path / 'photos'
  photos.mkdir()
  for name in ('chelsea.png', 'woman-with-hat-matisse.jpg'):
    image_io.save_image(str(photos / name.replace('.jpg', '.png')),
                        image_io.resize(nst_jax.load_image(assets[name]), (48, 48)))
  config = nst_jax.make_config(job='fast_train', train_images=str(photos), train_size=32,
                               batch_size=2, net_width=4, net_res_blocks=1,
                               learning_rate=1e-2, log_every=5, save_every=0, seed=3,
                               train_steps=20, style_statistic='w2', **SHALLOW)
  nst_jax.run(config, str(tmp_path / 'w'), params=vgg_params, quiet=True)
  import json
  records = [json.loads(l) for l in open(tmp_path / 'w' / 'losses.jsonl')]
  losses_ = [r['loss'] for r in records if 'loss' in r]
  assert len(losses_) == 20 and np.mean(losses_[-5:]) < 0.8 * np.mean(losses_[:5]), losses_


def test_the_public_style_loss_takes_w2_targets(vgg_params):
  """nst_jax.style_loss(features, targets) with W2 targets is Σ scale · W2²."""
  content, style = _images()
  layers = SHALLOW['style_layers']
  t = objective.style_targets(vgg_params, [style], layers, style_statistic='w2')
  feats = objective.features(vgg_params, content, layers)
  expected = 0.0
  for l in layers:
    mean, second = objective.style_moments(vgg_params, content, (l,))
    expected += float(t[l].scale * losses.w2_distance(mean[l], second[l], t[l].value))
  assert abs(float(nst_jax.style_loss(feats, t)) - expected) <= 1e-5 * expected


def test_the_statistic_reaches_the_stage_and_training_targets(vgg_params, assets, tmp_path):
  """What the engine and fast training compare really is W2 (plain and guided)."""
  from nst_jax import config as config_lib, inputs, plan as plan_lib
  from nst_jax.fast import train
  c = nst_jax.make_config(content=assets['chelsea.png'], styles=(assets['the_scream.jpg'],),
                          sizes=(64,), steps=(1,), style_statistic='w2',
                          content_guidance='halves_x', global_style_weight=0.5, **SHALLOW)
  spec = config_lib.validate(c)
  phase = plan_lib.make_plan(spec).phases[0]
  prepared = inputs.prepare(phase, inputs.style_images(phase, [], spec.max_input_pixels),
                            spec.max_input_pixels)
  targets, _ = inputs.stage_targets(phase, prepared, 0, vgg_params)
  assert targets.statistic == 'w2'
  assert all(isinstance(t.value, losses.W2Target) for t in targets.style.values())
  assert all(isinstance(t.value, losses.W2Target) for t in targets.guided.values())
  photos = tmp_path / 'photos'
  photos.mkdir()
  image_io.save_image(str(photos / 'a.png'), np.asarray(prepared.contents[0]))
  c.job, c.train_images, c.train_size = 'fast_train', str(photos), 32
  spec = config_lib.validate(c)
  styles = train.prepare_styles(spec, train.Crops([str(photos / 'a.png')], 32, 0,
                                                  spec.max_input_pixels))
  t, _ = train.training_targets(spec, styles, vgg_params)
  assert all(isinstance(v.value, losses.W2Target) for v in (*t.style.values(),
                                                            *t.guided.values()))


def test_config_refuses_w2_where_it_would_do_nothing(assets):
  base = dict(scale_fine_style=assets['starry_night.jpg'],
              scale_coarse_style=assets['the_scream.jpg'], mode='scale_mix')
  with pytest.raises(nst_jax.NSTError, match='would do nothing with mode=scale_mix'):
    nst_jax.config.validate(nst_jax.make_config(style_statistic='w2', **base))
  # Unguided, guided_statistic has nothing to compare: no refusal.
  spec = nst_jax.config.validate(nst_jax.make_config(style_statistic='w2',
                                                     guided_statistic='mean'))
  assert spec.loss.style_statistic == 'w2'
