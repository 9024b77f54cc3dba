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

Adam can average its iterates (``average_decay``, :func:`with_averaging`):
a bias-corrected exponential moving average of the image, which is then what
the stage reports, hands on and writes (:attr:`StageState.output`). From one
stage to the next Adam's moments are carried over, resized to the new size
(:func:`carry_moments`).

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


class AverageState(NamedTuple):
  """:func:`with_averaging`'s state: the wrapped optimiser's and the EMA's."""
  inner: Any               # the wrapped optimiser's state
  total: jax.Array         # sum_t (1 - d) d^(n - t) x_t over the iterates x_t so far
  weight: jax.Array        # 1 - d^n: ``total / weight`` is the bias-corrected average


class StageState(NamedTuple):
  pixels: jax.Array        # the optimised variables, [B, H, W, C]
  opt_state: Any           # optax state, every leaf with a leading B axis
  step: jax.Array          # int32 scalar: steps done in this stage (all images)

  @property
  def output(self) -> jax.Array:
    """What the stage reports, hands on and writes: the iterate average with
    averaging (the iterate itself before the first step), else the iterate."""
    return averaged(self.pixels, self.opt_state)


def averaged(pixels, opt_state):
  """The bias-corrected iterate average in ``opt_state``, or ``pixels`` if
  it holds none (no averaging, or no step yet). Any leading axes."""
  if not isinstance(opt_state, AverageState):
    return pixels
  w = opt_state.weight.reshape(opt_state.weight.shape + (1,) * (pixels.ndim -
                                                              opt_state.weight.ndim))
  return jnp.where(w > 0, opt_state.total / jnp.where(w > 0, w, 1), pixels)


def with_averaging(optimizer, decay: float) -> optax.GradientTransformationExtraArgs:
  """``optimizer`` that also keeps the bias-corrected EMA of its iterates.

  After step n the average is ``sum_t (1 - d) d^(n-t) x_t / (1 - d^n)`` over the
  iterates ``x_1 .. x_n`` (Adam's bias correction, applied to the parameters;
  Polyak-style averaging that smooths Adam's last-steps jitter). The updates
  are the wrapped optimiser's own: averaging changes what is read out, not the
  path. ``decay=0`` is the last iterate.

  Example:
    >>> opt = with_averaging(optax.adam(0.02), 0.9)
    >>> state = opt.init(x)
    >>> updates, state = opt.update(g, state, x)
    >>> averaged(optax.apply_updates(x, updates), state)
  """
  if not 0.0 <= decay < 1.0:
    raise ValueError(f'averaging decay must be in [0, 1), got {decay}')
  optimizer = optax.with_extra_args_support(optimizer)

  def init(params):
    return AverageState(optimizer.init(params), jnp.zeros_like(params),
                        jnp.zeros((), jnp.float32))

  def update(grads, state, params=None, **extra):
    updates, inner = optimizer.update(grads, state.inner, params, **extra)
    new = optax.apply_updates(params, updates)
    total = decay * state.total + (1.0 - decay) * new
    weight = decay * state.weight + (1.0 - decay)
    return updates, AverageState(inner, total, weight)

  return optax.GradientTransformationExtraArgs(init, update)


def carry_moments(fresh, previous, old_hw, new_hw):
  """Adam's state for a new stage from the previous stage's (coarse to fine).

  Leaves shaped like the old image (the first and second moments, ``[...,
  h, w, C]``) are resized to the new size and rescaled for the gradient's
  size there: every loss term is a mean over positions, so a pixel's gradient
  scales as 1/pixels, the first moment by ``r = old/new pixels`` and the
  second by ``r²`` (the update ``m / sqrt(v)`` is unchanged by this). The step
  count (bias correction) is kept. An :class:`AverageState` starts its
  average afresh (``fresh``'s) around the carried inner state.
  """
  if isinstance(fresh, AverageState):
    inner = previous.inner if isinstance(previous, AverageState) else previous
    return fresh._replace(inner=carry_moments(fresh.inner, inner, old_hw, new_hw))
  ratio = (old_hw[0] * old_hw[1]) / (new_hw[0] * new_hw[1])
  adam = optax.tree_utils.tree_get(previous, 'nu', default=None) is not None

  def carry(new, old):
    if new.ndim >= 3 and tuple(new.shape[-3:-1]) == tuple(new_hw) and \
        tuple(old.shape[-3:-1]) == tuple(old_hw):
      up = jax.image.resize(old, new.shape, 'linear')
      return up * ratio
    return old if old.shape == new.shape else new

  if not adam:
    return fresh
  moments = [optax.tree_utils.tree_get(previous, k) for k in ('mu', 'nu')]
  if any(tuple(m.shape[-3:-1]) != tuple(old_hw) for m in moments):
    raise ValueError(f'Adam moments of shape {moments[0].shape} are not of the previous '
                     f'stage size {tuple(old_hw)}')
  carried = jax.tree.map(carry, fresh, previous)
  # The second moment scales with the gradient squared.
  nu = optax.tree_utils.tree_get(carried, 'nu')
  return optax.tree_utils.tree_set(carried, nu=nu * ratio)


class StepMetrics(NamedTuple):
  loss: jax.Array          # [B]: loss at the step's starting point (NaN if skipped)
  evaluations: jax.Array   # [B] int32: loss+gradient evaluations the step used
  active: jax.Array        # bool scalar: the step ran


def make_optimizer(name: str, learning_rate: float = 0.02, lbfgs_memory: int = 10,
                   average_decay: float = 0.0) -> optax.GradientTransformationExtraArgs:
  """``'lbfgs'`` (zoom line search, 20 trials at most) or ``'adam'``, with
  iterate averaging (:func:`with_averaging`) if ``average_decay > 0``."""
  if name == 'lbfgs':
    if average_decay:
      raise ValueError('iterate averaging is for Adam')
    return optax.lbfgs(
        memory_size=lbfgs_memory,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=20, initial_guess_strategy='one'))
  if name == 'adam':
    adam = optax.adam(learning_rate)
    return with_averaging(adam, average_decay) if average_decay else adam
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
