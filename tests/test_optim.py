"""The compiled chunk loop on problems with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import optim

TARGET = jnp.asarray(np.linspace(-1, 2, 12).reshape(2, 2, 3), jnp.float32)


def _loss(x, consts):
  scale, target = consts
  return jnp.sum(scale * (x - target) ** 2) + 0.1 * jnp.sum((x - target) ** 4)


@pytest.mark.parametrize('name, steps, tol', [('lbfgs', 30, 1e-4), ('adam', 600, 2e-2)])
def test_converges_to_known_minimum(name, steps, tol):
  opt = optim.make_optimizer(name, learning_rate=0.05)
  run = optim.make_chunk_fn(_loss, opt, chunk=10)
  consts = (jnp.arange(1.0, 13.0).reshape(2, 2, 3), TARGET)
  state = optim.init_state(opt, jnp.zeros((2, 2, 3)))
  losses = []
  while int(state.step) < steps:
    state, m = run(state, consts, jnp.int32(steps))
    losses += list(np.asarray(m.loss)[np.asarray(m.active)])
  np.testing.assert_allclose(state.pixels, TARGET, atol=tol)
  assert len(losses) == steps
  assert losses[-1] < 1e-3 * losses[0]


def test_steps_past_the_end_are_no_ops():
  opt = optim.make_optimizer('lbfgs')
  run = optim.make_chunk_fn(_loss, opt, chunk=8)
  consts = (jnp.ones((2, 2, 3)), TARGET)
  state = optim.init_state(opt, jnp.zeros((2, 2, 3)))
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
  run = optim.make_chunk_fn(lambda x, c: jnp.sum(c * x ** 2), opt, chunk=10)
  state = optim.init_state(opt, jnp.ones((4, 4, 3)))
  state, m = run(state, jnp.linspace(1, 2, 48).reshape(4, 4, 3), jnp.int32(10))
  evals = np.asarray(m.evaluations)
  assert np.median(evals) == 1
