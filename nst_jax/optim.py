"""The compiled optimisation loop of one stage, for a batch of images.

A stage runs as a sequence of compiled *chunks*: one XLA computation performs
``chunk`` optimiser steps with ``lax.scan`` (a ``lax.cond`` makes steps past
the stage's end no-ops, so one compilation serves every chunk). The host only
sees chunk boundaries, where it reports progress and saves checkpoints.

The state always has a leading batch axis ``B`` (one image = a batch of one).
Each image has its own optimiser state, line search and step sizes, exactly as
if it ran alone: a step loops the single-image update over the batch,
updating the batch in place (``vmap`` would be wrong here: it turns the line
search's and ``value_and_grad_from_state``'s ``lax.cond`` into selects that
evaluate both branches, ~3x the loss evaluations per step; ``lax.map`` would
keep a second copy of the whole batch's optimiser state — both measured in
WORKSPACE.md).
With a device mesh that has a batch axis ``'b'``, each device runs the loop
on its own images (``shard_map``); a spatial axis ``'h'`` is left to GSPMD.

L-BFGS is optax's ``lbfgs`` with its zoom line search; the value and gradient
the line search computed at the accepted point are reused by the next
iteration (``optax.value_and_grad_from_state``), so an iteration costs exactly
``num_linesearch_steps`` loss+gradient evaluations — 1 when the first trial
step is accepted, the common case after the first few iterations.

Example:
  >>> opt = make_optimizer('lbfgs')
  >>> state = init_state(opt, pixels[None])          # a batch of one
  >>> run_chunk = make_chunk_fn(loss_fn, opt, chunk=10)
  >>> state, metrics = run_chunk(state, (shared, per_image), num_steps)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import PartitionSpec as P


class StageState(NamedTuple):
  pixels: jax.Array        # the optimised variables, [B, H, W, C]
  opt_state: Any           # optax state, every leaf with a leading B axis
  step: jax.Array          # int32 scalar: steps done in this stage (all images)


class StepMetrics(NamedTuple):
  loss: jax.Array          # [B]: loss at the step's starting point (NaN if skipped)
  evaluations: jax.Array   # [B] int32: loss+gradient evaluations the step used
  active: jax.Array        # bool scalar: the step ran


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
  """The state of a batch ``pixels`` ``[B, H, W, C]`` at step 0."""
  state = StageState(pixels, jax.vmap(optimizer.init)(pixels), jnp.zeros((), jnp.int32))
  # The chunk function donates its state; optax's init may alias leaves.
  return jax.tree.map(lambda x: jnp.array(x, copy=True), state)


def _is_lbfgs(opt_state) -> bool:
  return optax.tree_utils.tree_get(opt_state, 'num_linesearch_steps',
                                   default=None) is not None


def make_chunk_fn(loss_fn: Callable[..., jax.Array], optimizer, chunk: int,
                  mesh=None):
  """Returns jitted ``run(state, consts, num_steps) -> (state, StepMetrics[chunk])``.

  Args:
    loss_fn: ``loss_fn(pixels, shared, per_image) -> scalar`` for *one* image
      (``pixels`` ``[H, W, C]``).
    optimizer: from :func:`make_optimizer`.
    chunk: steps per compiled call.
    mesh: a device mesh with axes ``('b', 'h')`` or None. With ``'b'`` larger
      than 1 every device optimises its own slice of the batch.

  ``consts = (shared, per_image)``: ``shared`` (VGG params, loss weights) is
  the same for every image, every leaf of ``per_image`` (targets) has a
  leading batch axis. Both are arguments, never baked-in constants.
  """

  def image_step(pixels, opt_state, shared, per_image):
    value_fn = lambda p: loss_fn(p, shared, per_image)
    if _is_lbfgs(opt_state):
      value, grad = optax.value_and_grad_from_state(value_fn)(pixels, state=opt_state)
    else:
      value, grad = jax.value_and_grad(value_fn)(pixels)
    updates, opt_state = optimizer.update(
        grad, opt_state, pixels, value=value, grad=grad, value_fn=value_fn)
    evals = optax.tree_utils.tree_get(opt_state, 'num_linesearch_steps',
                                      default=jnp.ones((), jnp.int32))
    return (optax.apply_updates(pixels, updates), opt_state, value,
            jnp.asarray(evals, jnp.int32))

  def batch_step(pixels, opt_state, shared, per_image):
    """One image at a time, each updated in place in the batch."""
    b = pixels.shape[0]

    def body(i, carry):
      take = lambda x: lax.dynamic_index_in_dim(x, i, keepdims=False)
      put = lambda full, x: lax.dynamic_update_index_in_dim(full, x, i, 0)
      pixels, opt_state, values, evals = carry
      out = image_step(take(pixels), jax.tree.map(take, opt_state), shared,
                       jax.tree.map(take, per_image))
      return (put(pixels, out[0]), jax.tree.map(put, opt_state, out[1]),
              put(values, out[2]), put(evals, out[3]))

    return lax.fori_loop(0, b, body, (pixels, opt_state, jnp.zeros((b,), jnp.float32),
                                      jnp.zeros((b,), jnp.int32)))

  def scan_steps(update, state: StageState, consts, num_steps, metric_shape):
    shared, per_image = consts

    def active(state):
      pixels, opt_state, value, evals = update(state.pixels, state.opt_state, shared,
                                               per_image)
      return (StageState(pixels, opt_state, state.step + 1),
              StepMetrics(value, evals, jnp.array(True)))

    def skip(state):
      return state, StepMetrics(jnp.full(metric_shape, jnp.nan, jnp.float32),
                                jnp.zeros(metric_shape, jnp.int32), jnp.array(False))

    step = lambda s, _: lax.cond(s.step < num_steps, active, skip, s)
    return lax.scan(step, state, None, length=chunk)

  def run(state: StageState, consts, num_steps):
    b = state.pixels.shape[0]
    if b > 1:
      return scan_steps(batch_step, state, consts, num_steps, (b,))
    # One image: drop the batch axis around the loop, not inside it (a
    # reshape inside the loop's cond made XLA copy the whole optimiser state:
    # 38 extra image-sized buffers at 1024², measured).
    squeeze = lambda t: jax.tree.map(lambda x: x.reshape(x.shape[1:]), t)
    expand = lambda t: jax.tree.map(lambda x: x.reshape((1,) + x.shape), t)
    inner = StageState(*squeeze((state.pixels, state.opt_state)), state.step)
    inner, m = scan_steps(image_step, inner, (consts[0], squeeze(consts[1])), num_steps, ())
    return (StageState(*expand((inner.pixels, inner.opt_state)), inner.step),
            StepMetrics(m.loss[:, None], m.evaluations[:, None], m.active))

  if mesh is not None and mesh.shape.get('b', 1) > 1:
    state_spec = StageState(P('b'), P('b'), P())
    run = jax.shard_map(
        run, mesh=mesh, in_specs=(state_spec, (P(), P('b')), P()),
        out_specs=(state_spec, StepMetrics(P(None, 'b'), P(None, 'b'), P())),
        axis_names={'b'}, check_vma=False)
  return jax.jit(run, donate_argnums=0)
