"""The one stage engine: runs a :class:`~nst_jax.plan.Plan` and calls hooks.

For every phase of the plan (see :mod:`nst_jax.plan`) and every stage of it:
targets and start (:mod:`nst_jax.inputs`), an optimiser state with a leading batch
axis, placement on the device mesh, one AOT compilation of the chunk
function (:mod:`nst_jax.optim`), then compiled chunks until the stage's steps
are done. Between chunks the host evaluates the loss terms once and calls the
hooks: progress and the loss log (:class:`~nst_jax.progress.Reporter`),
intermediate images and outputs (:mod:`nst_jax.workdir`), checkpoints
(:class:`~nst_jax.checkpoint.Checkpointer`, which is also what ``resume``
reads from). One image, a folder of photos, the scale mix and every control
go through this same loop. :func:`enable_compilation_cache` turns on JAX's
persistent compilation cache that the loop's compilations then reuse.

Example:
  >>> plan = nst_jax.plan.make_plan(spec)
  >>> outputs = execute(plan, params, hooks=[reporter])
  >>> outputs[-1][0]                      # last phase, first image
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from nst_jax import inputs
from nst_jax import objective
from nst_jax import optim
from nst_jax import plan as plan_lib
from nst_jax import sharding
from nst_jax import vgg
from nst_jax import video_io
from nst_jax.errors import NSTError
from nst_jax.files import cache_dir

log = logging.getLogger(__name__)


class Hook:
  """Callbacks of the engine; every method is optional (no-ops here).

  ``stage`` is the stage's index over the whole plan (phases in order); a
  hook that needs the stages' sizes or steps is given them when it is made
  (e.g. :class:`~nst_jax.progress.Reporter`), so the same hooks serve the
  optimisation and fast-network training, which has one stage and no plan.
  """

  def stage_skipped(self, stage: int) -> None:
    """A stage finished before a resume."""

  def stage_start(self, stage: int, compile_s: float, resumed_at: int) -> None:
    """Compiled; about to run from step ``resumed_at``."""

  def chunk(self, stage: int, before: int, state: optim.StageState,
            metrics: optim.StepMetrics, terms: dict) -> None:
    """After a compiled chunk: ``metrics`` per step (``[chunk, B]``, numpy),
    ``terms`` the loss terms (mean over the batch) at the chunk's final images
    (``state.output``: the iterate average with averaging).
    With several processes every process calls every hook (``state`` is a
    global array: use :func:`nst_jax.sharding.to_host` on all of them); only
    process 0 writes files."""

  def stage_end(self, stage: int, state: optim.StageState) -> None:
    """The stage's steps are done."""

  def phase_end(self, index: int, phase: plan_lib.Phase, images: list) -> None:
    """A phase's output images (float32 RGB, one per content image)."""


def enable_compilation_cache(directory: str | None = None) -> str:
  """JAX's persistent compilation cache under the cache dir (reused across runs)."""
  directory = directory or os.path.join(cache_dir(), 'xla_cache')
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return directory


def execute(plan: plan_lib.Plan, params, *, hooks: Sequence[Hook] = (),
            resume=None, keep_outputs: bool = True) -> list[list[np.ndarray]]:
  """Runs every phase of ``plan``; returns each phase's output images.

  Args:
    plan: from :func:`nst_jax.plan.make_plan`.
    params: VGG19 params.
    hooks: called in order at every event (see :class:`Hook`).
    resume: a :class:`~nst_jax.checkpoint.Checkpointer` to continue from, or None.
    keep_outputs: False: a phase's images are dropped (None in the result)
      once no later phase needs them (a long clip's frames, written by the
      hooks, need not all stay in memory).
  """
  _COMPILED.clear()                              # reused within a run only
  needed = {}                                    # phase -> last phase that reads it
  for i, phase in enumerate(plan.phases):
    for e in phase.reads:
      needed[e.phase] = i
  if plan.phases[0].kind == 'scale_mix':
    needed[0] = len(plan.phases)                 # its output is the later phases' style
  ends = np.cumsum([len(p.stages) for p in plan.phases]) - 1   # each phase's last stage
  unfinished = next((i for i, e in enumerate(ends)
                     if resume is None or not resume.skip_stage(int(e))), len(ends))
  # Winograd F(4x4, 3x3) kernels of the layers the losses reach, once per run
  # (on CPU: vgg.winograd_kernels; none elsewhere or with bf16 activations).
  reached = {l for p in plan.phases
             for l in (*p.loss.content_layer_weights, *p.loss.style_layer_weights)}
  # Not with bands of rows over devices (h > 1): the tiles' strided slices
  # over sharded rows were not measured there.
  banded = any(plan_lib.stage_mesh(p, s)[1] > 1 for p in plan.phases for s in p.stages)
  params = vgg.winograd_kernels(params, () if banded else vgg.winograd_layers(
      reached, activation_dtype=plan.spec.activation_dtype))
  try:
    return _phases(plan, params, hooks, resume, keep_outputs, needed, unfinished)
  finally:
    video_io.close_readers()


def _phases(plan, params, hooks, resume, keep_outputs, needed, unfinished):
  """:func:`execute`'s loop; ``needed``: phase -> the last phase reading its
  images; ``unfinished``: the first phase a resume has not finished."""
  spec = plan.spec
  # A phase's images may go once no later phase reads them: with
  # keep_outputs=False any phase's, else a multi-pass clip's earlier passes
  # (never returned).
  droppable = lambda k: not keep_outputs or plan.phases[k].kind == 'pass'
  outputs = []
  first = 0                                      # global index of the phase's stage 0
  for i, phase in enumerate(plan.phases):
    n = len(phase.stages)
    if (resume is not None and i < unfinished and droppable(i)
        and needed.get(i, i) < unfinished):      # finished, written, read by no one left
      for k in range(n):
        for h in hooks:
          h.stage_skipped(first + k)
      outputs.append(None)
    elif resume is not None and resume.skip_stage(first + n - 1):
      done = resume.phase_output(i)              # finished before a resume
      if done is None:
        raise NSTError(f'{resume.directory} lacks the outputs of finished phase '
                       f'{i + 1}; rerun with --config.resume=False')
      for k in range(n):
        for h in hooks:
          h.stage_skipped(first + k)
      outputs.append(done)
    else:
      prepared = inputs.prepare(phase, inputs.style_images(phase, outputs,
                                                           spec.max_input_pixels),
                                spec.max_input_pixels, outputs)
      images = run_phase(spec, phase, prepared, params, hooks, resume, first)
      outputs.append(inputs.finish(phase, prepared, images))
    for h in hooks:
      h.phase_end(i, phase, outputs[-1])
    first += n
    # Only once the phase reading it is one phase back: until a later phase
    # saves a checkpoint, a resume re-enters the reader's last stage.
    for k in range(i + 1):
      if droppable(k) and outputs[k] is not None and needed.get(k, k) < i:
        outputs[k] = None
        if resume is not None:
          resume.drop_phase_output(k)
  return outputs


def run_phase(spec, phase: plan_lib.Phase, prepared: inputs.Prepared, params,
              hooks: Sequence[Hook] = (), resume=None, first_stage: int = 0
              ) -> np.ndarray:
  """The coarse-to-fine stages of one phase; returns its images ``[B, H, W, 3]``."""
  weights = inputs.loss_weights(phase.loss)
  chunk = math.gcd(spec.log_every, spec.save_every) if spec.save_every else spec.log_every
  replicated = {}                                # (b, h) -> (params, weights) there
  image = previous = None                        # the last stage's output and state
  for k, stage in enumerate(phase.stages):
    g = first_stage + k
    if resume is not None and resume.skip_stage(g):
      for h in hooks:
        h.stage_skipped(g)
      continue
    shape = plan_lib.stage_mesh(phase, stage)    # the phase's, or no bands if too short
    mesh = sharding.make_mesh(spec.devices, phase.batch, shape)
    if shape not in replicated:
      replicated[shape] = sharding.replicate((params, weights), mesh)
    shared = replicated[shape]
    if resume is not None:
      stage = resume.stage_as_saved(g, stage)
    loss_fn, terms_fn = _loss_fns(stage.tile, mesh, tuple(sorted(spec.vgg_options.items())))
    optimizer = optim.make_optimizer(spec.optimizer, spec.learning_rate,
                                     stage.lbfgs_memory, spec.average_decay)
    targets, skipped = inputs.stage_targets(phase, prepared, k, params)
    if skipped and k == 0:
      inputs.warn_skipped(skipped)
    start = inputs.stage_start(phase, prepared, k, image, spec.seed)
    image = None                                 # only the start needed it
    abstract = jax.eval_shape(lambda s: optim.init_state(optimizer, s), start)
    restored = state = None
    if resume is not None:                       # straight into the mesh's shards
      restored = state = resume.restore(
          g, abstract, sharding.shardings(abstract, mesh, start.shape[1:]))
    if state is None:
      state = optim.init_state(optimizer, start)
      if previous is not None:                   # Adam's moments, resized
        state = state._replace(opt_state=optim.carry_moments(
            state.opt_state, previous.opt_state, previous.pixels.shape[1:3],
            start.shape[1:3]))
      state = sharding.place(state, mesh, start.shape[1:])
    start = previous = None
    consts = (shared, sharding.place(targets, mesh))
    num_steps = jnp.int32(stage.steps)
    t = time.perf_counter()
    key = (spec.optimizer, spec.learning_rate, spec.average_decay, stage.tile,
           stage.lbfgs_memory, chunk, mesh, tuple(sorted(spec.vgg_options.items())),
           _signature((state, consts)))
    compiled = _COMPILED.get(key)
    if compiled is None:                         # a clip's later frames reuse it
      run_chunk = optim.make_chunk_fn(loss_fn, optimizer, chunk, mesh)
      compiled = run_chunk.lower(state, consts, num_steps).compile()
      while len(_COMPILED) >= _KEEP_COMPILED:    # the oldest goes
        del _COMPILED[next(iter(_COMPILED))]
      _COMPILED[key] = compiled
    compile_s = time.perf_counter() - t
    _log_memory(g, stage, compiled)
    resumed_at = int(state.step) if restored is not None else 0
    for h in hooks:
      h.stage_start(g, compile_s, resumed_at)
    while int(state.step) < stage.steps:
      before = int(state.step)
      state, metrics = compiled(state, consts, num_steps)
      terms = {n: float(jnp.mean(v)) for n, v in terms_fn(state.output, *consts).items()}
      if not math.isfinite(terms['total']):
        raise NSTError(f'optimisation diverged (loss {terms["total"]}) in stage '
                       f'{g + 1} at step {int(state.step)}; lower the weights '
                       'or try --config.optimizer=adam')
      metrics = sharding.to_host(metrics)
      for h in hooks:
        h.chunk(g, before, state, metrics, terms)
    for h in hooks:
      h.stage_end(g, state)
    image = sharding.to_host(jax.vmap(objective.pixels_to_image)(state.output))
    previous = state if spec.optimizer == 'adam' else None   # L-BFGS starts afresh
  return np.asarray(image, np.float32)


# The last stages' compiled chunks: a clip's later frames and passes (same
# shapes, new targets) reuse them instead of compiling once per frame; a
# multi-pass clip alternates between a few shapes (its groups of frames, with
# and without the temporal term). Cleared per run.
_COMPILED: dict = {}
_KEEP_COMPILED = 4


def _signature(tree) -> tuple:
  """What a compiled chunk is specific to: the tree, shapes, dtypes, placements."""
  leaves, treedef = jax.tree.flatten(tree)
  return (treedef, tuple((x.shape, str(x.dtype), str(getattr(x, 'sharding', '')))
                         for x in leaves))


@functools.lru_cache(maxsize=8)
def _loss_fns(tile: int, mesh, vgg_options: tuple):
  """The stage's loss of one image (for the optimiser) and its batched terms.

  Tiled with a spatial mesh axis ``'h'``, the tiles are divided among its
  devices (see :mod:`nst_jax.tiling`).
  """
  bands = mesh if mesh is not None and mesh.shape['h'] > 1 else None

  def loss_fn(pixels, shared, targets):
    return objective.total_loss(pixels, shared[0], targets, shared[1], tile, bands,
                                **dict(vgg_options))

  def terms(pixels, shared, targets):
    return lax.map(lambda a: objective.loss_terms(
        shared[0], objective.pixels_to_image(a[0]), a[1], shared[1], tile, bands,
        **dict(vgg_options)), (pixels, targets))

  if mesh is not None and mesh.shape['b'] > 1:     # each device group its own images
    terms = jax.shard_map(terms, mesh=mesh, in_specs=(P('b'), P(), P('b')),
                          out_specs=P('b'), axis_names={'b'}, check_vma=False)
  return loss_fn, jax.jit(terms)


def _log_memory(stage: int, stage_plan, compiled) -> None:
  """XLA's own numbers for the compiled chunk, beside the plan's estimate."""
  try:
    a = compiled.memory_analysis()
    xla = a.temp_size_in_bytes + a.argument_size_in_bytes + a.output_size_in_bytes \
        - a.alias_size_in_bytes
  except Exception:  # pylint: disable=broad-except  (not every backend reports it)
    return
  planned = stage_plan.memory.total if stage_plan.memory else 0
  log.info('stage %d: XLA buffers %.2f GB (temp %.2f GB), plan %.2f GB', stage + 1,
           xla / 2**30, a.temp_size_in_bytes / 2**30, planned / 2**30)
