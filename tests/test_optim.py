"""The compiled chunk loop on problems with known answers (batches of one and more)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
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


def test_averaging_is_the_bias_corrected_ema_of_the_iterates():
  # Hand-computed: x_1..x_n are Adam's own iterates (averaging does not change
  # the path), the average after n steps sum_t (1-d) d^(n-t) x_t / (1 - d^n).
  d, n = 0.8, 7
  plain = optim.make_optimizer('adam', learning_rate=0.1)
  averaging = optim.make_optimizer('adam', learning_rate=0.1, average_decay=d)
  consts = (jnp.arange(1.0, 13.0).reshape(2, 2, 3), TARGET[None])
  iterates = []
  states = [optim.init_state(o, jnp.zeros((1, 2, 2, 3))) for o in (plain, averaging)]
  runs = [optim.make_chunk_fn(_loss, o, chunk=1) for o in (plain, averaging)]
  assert np.array_equal(states[1].output, states[1].pixels)      # no step yet
  for _ in range(n):
    states = [run(s, consts, jnp.int32(n))[0] for run, s in zip(runs, states)]
    # The same updates; two compiled programs may round an op differently
    # (1 ulp), on some CPU kernel sets: far below the EMA's effect (> 1e-3).
    np.testing.assert_allclose(states[0].pixels, states[1].pixels, rtol=1e-6, atol=1e-7)
    iterates.append(np.asarray(states[0].pixels, np.float64))
  weights = np.array([(1 - d) * d ** (n - t) for t in range(1, n + 1)])
  expected = np.tensordot(weights, np.stack(iterates), axes=1) / (1 - d ** n)
  np.testing.assert_allclose(states[1].output, expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(expected, iterates[-1], atol=1e-3)       # it is not the iterate
  np.testing.assert_array_equal(states[0].output, states[0].pixels)


def test_averaging_is_refused_for_lbfgs_and_decay_one():
  with pytest.raises(ValueError, match='Adam'):
    optim.make_optimizer('lbfgs', average_decay=0.9)
  with pytest.raises(ValueError, match=r'\[0, 1\)'):
    optim.with_averaging(optim.make_optimizer('adam'), 1.0)


@pytest.mark.parametrize('average', [0.0, 0.9])
def test_adam_moments_carry_over_resized_and_rescaled(average):
  opt = optim.make_optimizer('adam', average_decay=average)
  old = optim.init_state(opt, jnp.zeros((1, 4, 6, 3)))
  run = optim.make_chunk_fn(lambda x, s, c: jnp.mean((x - c) ** 2), opt, chunk=3)
  old, _ = run(old, ((), jnp.full((1, 4, 6, 3), 0.5)), jnp.int32(3))
  fresh = optim.init_state(opt, jnp.zeros((1, 8, 12, 3)))
  carried = optim.carry_moments(fresh.opt_state, old.opt_state, (4, 6), (8, 12))
  get = lambda s, k: optax.tree_utils.tree_get(s, k)
  # A constant field resizes to itself; the gradient of a mean over 4x the
  # pixels is 1/4 as large: m scales by 1/4, v by 1/16, the count is kept.
  np.testing.assert_allclose(get(carried, 'mu'), np.full((1, 8, 12, 3), get(old.opt_state, 'mu')
                                                         .mean() / 4), rtol=1e-6)
  np.testing.assert_allclose(get(carried, 'nu'), np.full((1, 8, 12, 3), get(old.opt_state, 'nu')
                                                         .mean() / 16), rtol=1e-6)
  assert int(get(carried, 'count')[0]) == 3
  if average:            # the average starts afresh at the new size
    assert float(carried.weight[0]) == 0 and not np.any(np.asarray(carried.total))
  # L-BFGS has nothing to carry: its fresh state is kept.
  lb = optim.make_optimizer('lbfgs')
  f = optim.init_state(lb, jnp.zeros((1, 8, 12, 3))).opt_state
  assert optim.carry_moments(f, optim.init_state(lb, jnp.ones((1, 4, 6, 3))).opt_state,
                             (4, 6), (8, 12)) is f
