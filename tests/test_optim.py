"""The compiled chunk loop on problems with known answers (batches of one and more)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import optim

TARGET = jnp.asarray(np.linspace(-1, 2, 12).reshape(2, 2, 3), jnp.float32)


def _loss(x, shared, per_image):
  scale, target = shared, per_image
  return jnp.sum(scale * (x - target) ** 2) + 0.1 * jnp.sum((x - target) ** 4)


@pytest.mark.parametrize('name, steps, tol', [('lbfgs', 30, 1e-4), ('adam', 600, 2e-2)])
def test_converges_to_known_minimum(name, steps, tol):
  opt = optim.make_optimizer(name, learning_rate=0.05)
  run = optim.make_chunk_fn(_loss, opt, chunk=10)
  consts = (jnp.arange(1.0, 13.0).reshape(2, 2, 3), TARGET[None])
  state = optim.init_state(opt, jnp.zeros((1, 2, 2, 3)))
  losses = []
  while int(state.step) < steps:
    state, m = run(state, consts, jnp.int32(steps))
    losses += list(np.asarray(m.loss)[np.asarray(m.active)])
  np.testing.assert_allclose(state.pixels[0], TARGET, atol=tol)
  assert len(losses) == steps
  assert losses[-1] < 1e-3 * losses[0]


def test_steps_past_the_end_are_no_ops():
  opt = optim.make_optimizer('lbfgs')
  run = optim.make_chunk_fn(_loss, opt, chunk=8)
  consts = (jnp.ones((2, 2, 3)), TARGET[None])
  state = optim.init_state(opt, jnp.zeros((1, 2, 2, 3)))
  state, m = run(state, consts, jnp.int32(5))
  assert int(state.step) == 5
  assert list(np.asarray(m.active)) == [True] * 5 + [False] * 3
  assert np.all(np.isnan(np.asarray(m.loss)[5:]))
  assert np.all(np.asarray(m.evaluations)[:5] >= 1)
  before = np.asarray(state.pixels)
  state, m = run(state, consts, jnp.int32(5))
  assert int(state.step) == 5 and not np.any(np.asarray(m.active))
  np.testing.assert_array_equal(state.pixels, before)


def test_lbfgs_reuses_line_search_evaluations():
  # On a quadratic the first trial step is accepted after warm-up, so most
  # iterations cost exactly one evaluation.
  opt = optim.make_optimizer('lbfgs')
  run = optim.make_chunk_fn(lambda x, s, c: jnp.sum(c * x ** 2), opt, chunk=10)
  state = optim.init_state(opt, jnp.ones((1, 4, 4, 3)))
  state, m = run(state, ((), jnp.linspace(1, 2, 48).reshape(1, 4, 4, 3)), jnp.int32(10))
  evals = np.asarray(m.evaluations)
  assert np.median(evals) == 1


def test_batch_members_are_independent_runs():
  """Every image of a batch has its own L-BFGS: same trajectory as alone.

  Exact: the batch loops the one-image update; passes on AVX-512 and with
  emulated AVX2 and AVX kernels (tools/isa_spread.py --cpu).
  """
  opt = optim.make_optimizer('lbfgs')
  run = optim.make_chunk_fn(_loss, opt, chunk=7)
  scale = jnp.arange(1.0, 13.0).reshape(2, 2, 3)
  targets = jnp.stack([TARGET, -TARGET, 3 * TARGET])
  state = optim.init_state(opt, jnp.zeros((3, 2, 2, 3)))
  state, m = run(state, (scale, targets), jnp.int32(7))
  assert np.asarray(m.loss).shape == (7, 3)
  for i in range(3):
    alone = optim.init_state(opt, jnp.zeros((1, 2, 2, 3)))
    alone, ma = run(alone, (scale, targets[i:i + 1]), jnp.int32(7))
    np.testing.assert_array_equal(alone.pixels[0], state.pixels[i])
    np.testing.assert_array_equal(np.asarray(ma.evaluations)[:, 0],
                                  np.asarray(m.evaluations)[:, i])
