"""The compiled optimisation loop of one stage.

A stage runs as a sequence of compiled *chunks*: one XLA computation performs
``chunk`` optimiser steps with ``lax.scan`` (a ``lax.cond`` makes steps past
the stage's end no-ops, so one compilation serves every chunk). The host only
sees chunk boundaries, where it reports progress and saves intermediates.

L-BFGS is optax's ``lbfgs`` with its zoom line search; the value and gradient
the line search computed at the accepted point are reused by the next
iteration (``optax.value_and_grad_from_state``), so an iteration costs exactly
``num_linesearch_steps`` loss+gradient evaluations — 1 when the first trial
step is accepted, which is the common case after the first few iterations.
The per-step count is returned in the metrics.

Example:
  >>> opt = make_optimizer('lbfgs')
  >>> state = init_state(opt, pixels)
  >>> run_chunk = make_chunk_fn(loss_fn, opt, chunk=10)
  >>> state, metrics = run_chunk(state, consts, num_steps)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax


class StageState(NamedTuple):
  pixels: jax.Array        # the optimised variable, [H, W, 3]
  opt_state: Any           # optax state
  step: jax.Array          # int32: steps done in this stage


class StepMetrics(NamedTuple):
  loss: jax.Array          # loss at the step's starting point (NaN if skipped)
  evaluations: jax.Array   # loss+gradient evaluations the step used
  active: jax.Array        # bool: the step ran


def make_optimizer(name: str, learning_rate: float = 0.02,
                   lbfgs_memory: int = 10) -> optax.GradientTransformationExtraArgs:
  """``'lbfgs'`` (zoom line search, 20 trials at most) or ``'adam'``."""
  if name == 'lbfgs':
    return optax.lbfgs(
        memory_size=lbfgs_memory,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=20, initial_guess_strategy='one'))
  if name == 'adam':
    return optax.adam(learning_rate)
  raise ValueError(f'unknown optimizer {name!r}')


def init_state(optimizer, pixels) -> StageState:
  state = StageState(pixels, optimizer.init(pixels), jnp.zeros((), jnp.int32))
  # The chunk function donates its state; optax's init may alias leaves.
  return jax.tree.map(lambda x: jnp.array(x, copy=True), state)


def _is_lbfgs(opt_state) -> bool:
  return optax.tree_utils.tree_get(opt_state, 'num_linesearch_steps',
                                   default=None) is not None


def make_chunk_fn(loss_fn: Callable[[jax.Array, Any], jax.Array],
                  optimizer, chunk: int, batch_axes=None):
  """Returns jitted ``run(state, consts, num_steps) -> (state, StepMetrics[chunk])``.

  Args:
    loss_fn: ``loss_fn(pixels, consts) -> scalar``; ``consts`` is any pytree
      (VGG params, targets, weights) passed at call time, not baked in.
    optimizer: from :func:`make_optimizer`.
    chunk: steps per compiled call.
    batch_axes: for a batch of independent images, the ``vmap`` in_axes of
      ``consts`` (the state is batched on axis 0). Every image then has its
      own optimiser (own L-BFGS line search); metrics are ``[chunk, B]``.
  """

  def step(state: StageState, consts) -> tuple[StageState, StepMetrics]:
    value_fn = lambda p: loss_fn(p, consts)
    if _is_lbfgs(state.opt_state):
      value, grad = optax.value_and_grad_from_state(value_fn)(
          state.pixels, state=state.opt_state)
    else:
      value, grad = jax.value_and_grad(value_fn)(state.pixels)
    updates, opt_state = optimizer.update(
        grad, state.opt_state, state.pixels, value=value, grad=grad,
        value_fn=value_fn)
    pixels = optax.apply_updates(state.pixels, updates)
    evals = optax.tree_utils.tree_get(opt_state, 'num_linesearch_steps',
                                      default=jnp.ones((), jnp.int32))
    return (StageState(pixels, opt_state, state.step + 1),
            StepMetrics(value, jnp.asarray(evals, jnp.int32), jnp.array(True)))

  def skip(state, consts):
    del consts
    return state, StepMetrics(jnp.array(jnp.nan, jnp.float32),
                              jnp.zeros((), jnp.int32), jnp.array(False))

  def one(s, c, num_steps):
    return lax.cond(s.step < num_steps, step, skip, s, c)

  def run(state: StageState, consts, num_steps):
    def body(s, _):
      if batch_axes is None:
        return one(s, consts, num_steps)
      return jax.vmap(one, in_axes=(0, batch_axes, None))(s, consts, num_steps)
    return lax.scan(body, state, None, length=chunk)

  return jax.jit(run, donate_argnums=0)
