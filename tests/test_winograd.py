"""Winograd F(2x2, 3x3) and F(4x4, 3x3) (nst_jax/winograd.py) against lax.conv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nst_jax import objective
from nst_jax import vgg
from nst_jax import winograd
from nst_jax.errors import NSTError


def _reference(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), 'SAME', precision=lax.Precision.HIGHEST,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('m', winograd.TILES)
def test_matrices_compute_a_1d_correlation_exactly(m, rng):
  # In float64 the transforms are exact: Aᵀ[(G g) ⊙ (Bᵀ d)] is the m outputs
  # of correlating the m + 2 inputs d with the 3 taps g (a wrong entry gives
  # an error of order one).
  bt, g, at = winograd.matrices(m)
  for _ in range(5):
    d, taps = rng.standard_normal(m + 2), rng.standard_normal(3)
    want = [d[i:i + 3] @ taps for i in range(m)]
    np.testing.assert_allclose(at @ ((g @ taps) * (bt @ d)), want, rtol=1e-12, atol=1e-12)


# Float32 error, max |Δ| / max |reference| on standard-normal inputs, measured
# on the 2-core Xeon: F(2, 3) 1.4e-7 ... 3.4e-7, F(4, 3) 1.5e-6 ... 2.6e-6
# (the transforms' constants up to 8 and 1/24 amplify rounding). The bounds
# are 10x that: other kernels sum in other orders, while a wrong tile
# offset, padding or transform entry gives errors of 1e-1 or more.
BOUND = {2: 5e-6, 4: 3e-5}


@pytest.mark.parametrize('m', winograd.TILES)
@pytest.mark.parametrize('shape', [(2, 7, 9, 8, 5), (1, 16, 16, 16, 16), (1, 13, 10, 64, 32)])
def test_conv_equals_lax_conv_at_any_size(m, shape, rng):
  n, h, w, c, k = shape                      # odd sides: partial tiles at the edge
  x = jnp.asarray(rng.standard_normal((n, h, w, c)), jnp.float32)
  g = jnp.asarray(rng.standard_normal((3, 3, c, k)), jnp.float32)
  ref = _reference(x, g)
  got = winograd.conv3x3_same(x, g, m)
  assert got.shape == ref.shape
  assert float(jnp.abs(got - ref).max() / jnp.abs(ref).max()) < BOUND[m]


@pytest.mark.parametrize('algorithm', ['winograd2', 'winograd4', 'prepared'])
def test_vjp_of_conv3x3_equals_lax_conv(algorithm, rng):
  # The custom VJP runs the input gradient as the same algorithm's conv with
  # the flipped, transposed kernel (prepared: the engine's u_t from
  # winograd_kernels, 'auto' on a 32 x 32 grid): both cotangents equal XLA
  # autodiff's.
  x = jnp.asarray(rng.standard_normal((1, 33, 32, 16)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 16, 8)), jnp.float32)
  b = jnp.asarray(rng.standard_normal(8), jnp.float32)
  dy = jnp.asarray(rng.standard_normal((1, 33, 32, 8)), jnp.float32)
  p = vgg.winograd_kernels({'c': {'w': w, 'b': b}}, ['c'])['c']
  conv = ((lambda x, w: vgg.conv3x3(x, w, b, None, 'auto', p['u'], p['u_t']))
          if algorithm == 'prepared' else
          (lambda x, w: vgg.conv3x3(x, w, b, algorithm=algorithm)))
  assert vgg.conv_algorithm(16, jnp.float32, 'auto', True, 33 * 32) == 'winograd4'
  _, vjp = jax.vjp(conv, x, w)
  _, vjp_ref = jax.vjp(lambda x, w: _reference(x, w) + b, x, w)
  for got, want in zip(vjp(dy), vjp_ref(dy)):
    assert float(jnp.abs(got - want).max() / jnp.abs(want).max()) < BOUND[4]


def test_auto_runs_f4_exactly_where_the_kernels_are_prepared(vgg_params):
  # 'auto' is F(4, 3) for a layer whose transformed kernels were prepared,
  # XLA's conv otherwise; on CPU the engine prepares conv3_1 ... up to the
  # deepest layer the loss reads (WINOGRAD_MIN_CHANNELS outputs), none with
  # bf16 activations.
  f32, bf16 = jnp.float32, jnp.bfloat16
  assert vgg.conv_algorithm(64, f32, 'auto', prepared=True) == 'winograd4'
  assert vgg.conv_algorithm(64, f32, 'auto', prepared=True, positions=31 * 32) == 'xla'
  assert vgg.conv_algorithm(64, f32, 'auto', prepared=False) == 'xla'
  assert vgg.conv_algorithm(64, bf16, 'auto', prepared=True) == 'xla'
  assert vgg.conv_algorithm(64, f32, 'winograd2') == 'winograd2'
  with pytest.raises(NSTError, match='conv algorithm'):
    vgg.conv_algorithm(64, f32, 'fft')
  if jax.default_backend() == 'cpu':
    assert vgg.winograd_layers(('relu4_2',)) == (
        'conv3_1', 'conv3_2', 'conv3_3', 'conv3_4', 'conv4_1', 'conv4_2')
    assert vgg.winograd_layers(('relu2_1',)) == ()
    assert vgg.winograd_layers(('relu5_1',), activation_dtype='bfloat16') == ()
  prepared = vgg.winograd_kernels(vgg_params, ['conv4_1'])
  assert prepared['conv4_1']['u'].shape == (36, 256, 512)
  assert 'u' not in prepared['conv3_1'] and 'u' not in vgg_params['conv4_1']
  assert vgg.winograd_kernel_bytes(['conv4_1']) == 2 * 36 * 256 * 512 * 4
  # the prepared transforms are G g Gᵀ of the kernel and of its flip
  g = winograd.matrices(4)[1]
  w = np.asarray(vgg_params['conv4_1']['w'], np.float64)
  want = np.einsum('ai,ijck,bj->abck', g, w, g).reshape(36, 256, 512)
  np.testing.assert_allclose(prepared['conv4_1']['u'], want, atol=1e-5 * np.abs(want).max())


def test_loss_and_gradient_with_winograd_match_xla(vgg_params, rng):
  # The default objective through VGG19 to relu5_1 with conv3_1 ... conv3_4
  # by F(4, 3), prepared kernels: loss and gradient against XLA's convs
  # (measured 1.0e-6 and 2.4e-6 here: 4 layers of ~1e-5 per-conv error
  # that partly cancels; bounds 10x). A whole run's losses: issue 17's 1e-3
  # (tools/winograd_benchmark.py run).
  # 128 px: conv3_x's 32 x 32 grids run by Winograd ('auto': the deeper,
  # smaller grids stay XLA's, WINOGRAD_MIN_POSITIONS).
  content = jnp.asarray(rng.random((128, 128, 3)), jnp.float32)
  style = jnp.asarray(rng.random((96, 96, 3)), jnp.float32)
  targets = objective.make_targets(vgg_params, content, [style])
  weights = objective.LossWeights(1.0, 100.0, 0.0)
  x = jnp.asarray(rng.random((128, 128, 3)), jnp.float32)
  fast = vgg.winograd_kernels(vgg_params, ['conv3_1', 'conv3_2', 'conv3_3', 'conv3_4'])
  vg = jax.jit(jax.value_and_grad(lambda x, p: objective.total_loss(x, p, targets, weights)))
  (v0, g0), (v1, g1) = vg(x, vgg_params), vg(x, fast)
  rel = float(jnp.linalg.norm(g1 - g0) / jnp.linalg.norm(g0))
  assert abs(float(v1 - v0)) / abs(float(v0)) < 1e-5
  assert 0 < rel < 1e-4                      # 0: Winograd did not run


def test_memory_plan_counts_the_transformed_kernels():
  # On CPU the engine holds F(4, 3) transforms of conv3_1 ... the deepest
  # conv the loss reaches: the plan counts them as weights (2 x 36 x C x K
  # floats each) and their compilation on the host; none for relu2_1 only
  # or bf16 activations.
  from nst_jax import memory
  kw = dict(batch=1, channels=3, content_layers=('relu4_2',), tile=0, lbfgs_memory=10)
  deep = memory.estimate((256, 256), layers=('relu1_1', 'relu5_1', 'relu4_2'), **kw)
  shallow = memory.estimate((256, 256), layers=('relu1_1', 'relu2_1'),
                            **dict(kw, content_layers=('relu2_1',)))
  bf16 = memory.estimate((256, 256), layers=('relu1_1', 'relu5_1', 'relu4_2'),
                         activation_dtype='bfloat16', **kw)
  kernels = vgg.winograd_kernel_bytes(vgg.winograd_layers(('relu5_1',)))
  assert shallow.parts['weights'] == bf16.parts['weights'] == memory.WEIGHTS_BYTES
  assert deep.parts['weights'] == memory.WEIGHTS_BYTES + kernels
  if jax.default_backend() == 'cpu':
    assert kernels == 2 * 36 * 4 * (128 * 256 + 3 * 256 * 256 + 256 * 512 + 4 * 512 * 512)
    assert deep.parts['host'] - bf16.parts['host'] == memory.WINOGRAD_COMPILE_BYTES


def test_engine_prepares_the_kernels_of_the_layers_the_loss_reaches(monkeypatch, vgg_params):
  # A real run through the engine on CPU: winograd_kernels is called once
  # with conv3_1 ... conv4_2 (the default loss reaches relu5_1 and relu4_2:
  # up to conv5_1), and the chunk's loss sees the prepared params.
  import nst_jax
  calls = []
  original = vgg.winograd_kernels
  monkeypatch.setattr(vgg, 'winograd_kernels',
                      lambda params, layers=None: calls.append(tuple(layers)) or
                      original(params, layers))
  out = nst_jax.stylize(nst_jax.config.asset('chelsea.png'),
                        nst_jax.config.asset('starry_night.jpg'), params=vgg_params,
                        sizes=(64,), steps=(1,), quiet=True)
  assert out.shape[1] == 64
  want = (('conv3_1', 'conv3_2', 'conv3_3', 'conv3_4', 'conv4_1', 'conv4_2', 'conv4_3',
           'conv4_4', 'conv5_1'),) if jax.default_backend() == 'cpu' else ((),)
  assert calls == list(want)
