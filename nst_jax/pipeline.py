"""The pipeline: config -> images -> targets -> compiled loop per stage -> image.

:func:`stylize` is the entry point for other JAX code (arrays or paths in, an
array out, no files unless a workdir is given); :func:`run` is what the CLI
calls (it writes the workdir's files). Both go through :func:`optimize`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nst_jax import config as config_lib
from nst_jax import image_io
from nst_jax import objective
from nst_jax import optim
from nst_jax.errors import NSTError
from nst_jax.progress import Reporter, plot_losses
from nst_jax.weights import atomic_write, load_vgg19

log = logging.getLogger(__name__)

LOSS_LOG = 'losses.jsonl'
LOSS_PLOT = 'losses.png'
CONFIG_FILE = 'config.json'
INTERMEDIATES = 'intermediates'


def initial_image(init: str, content, style, key, hw, max_pixels) -> jax.Array:
  """The first stage's starting image: content, seeded noise, style or a file."""
  if init == 'content':
    return jnp.asarray(content)
  if init == 'noise':
    return jax.random.uniform(key, tuple(hw) + (3,), jnp.float32)
  if init == 'style':
    return image_io.resize(style, hw)
  return image_io.resize(image_io.load_image(init, max_pixels), hw)


def stage_inputs(spec, content_full, styles_full, stage):
  """Content and styles resized for one stage (style long side * style_scale)."""
  hw = image_io.fit_long_side(content_full.shape[:2], stage.long_side)
  style_side = max(16, round(stage.long_side * spec.style_scale))
  styles = [image_io.resize(s, image_io.fit_long_side(s.shape[:2], style_side))
            for s in styles_full]
  return hw, image_io.resize(content_full, hw), styles


def optimize(spec: config_lib.RunSpec, params, reporter: Reporter,
             on_chunk: Callable | None = None) -> np.ndarray:
  """Runs every stage of ``spec``; returns the final float32 RGB image."""
  content_full = image_io.read_image(spec.content, 'content image',
                                     spec.max_input_pixels)
  styles_full = [image_io.read_image(s, f'style image {i + 1}',
                                     spec.max_input_pixels)
                 for i, s in enumerate(spec.styles)]
  key = jax.random.PRNGKey(spec.seed)
  weights = objective.LossWeights(*(jnp.float32(w) for w in (
      spec.content_weight, spec.style_weight, spec.tv_weight)))
  pooling = spec.pooling
  loss_fn = lambda pixels, consts: objective.total_loss(pixels, *consts, pooling)
  terms_fn = jax.jit(lambda pixels, consts: objective.loss_terms(
      consts[0], objective.pixels_to_image(pixels), *consts[1:], pooling))
  optimizer = optim.make_optimizer(spec.optimizer, spec.learning_rate,
                                   spec.lbfgs_memory)
  chunk = math.gcd(spec.log_every, spec.save_every) if spec.save_every else spec.log_every
  run_chunk = optim.make_chunk_fn(loss_fn, optimizer, chunk)
  image = None
  for k, stage in enumerate(spec.stages):
    hw, content, styles = stage_inputs(spec, content_full, styles_full, stage)
    targets = objective.make_targets(
        params, content, styles,
        content_layer_weights=spec.content_layer_weights,
        style_layer_weights=spec.style_layer_weights,
        style_blend=spec.style_blend, normalization=spec.normalization,
        pooling=pooling)
    if image is None:
      start = initial_image(spec.init, content, styles[0],
                            jax.random.fold_in(key, k), hw, spec.max_input_pixels)
    else:
      start = image_io.resize(image, hw)
    consts = (params, targets, weights)
    state = optim.init_state(optimizer, jnp.asarray(start, jnp.float32))
    num_steps = jnp.int32(stage.steps)
    t = time.perf_counter()
    compiled = run_chunk.lower(state, consts, num_steps).compile()
    reporter.start_stage(k, len(spec.stages), hw, stage.steps,
                         time.perf_counter() - t)
    while int(state.step) < stage.steps:
      before = int(state.step)
      state, metrics = compiled(state, consts, num_steps)
      active = np.asarray(metrics.active)
      terms = {n: float(v) for n, v in terms_fn(state.pixels, consts).items()}
      reporter.chunk(np.asarray(metrics.loss)[active],
                     np.asarray(metrics.evaluations)[active], terms)
      if not math.isfinite(terms['total']):
        raise NSTError(f'optimisation diverged (loss {terms["total"]}) in stage '
                       f'{k + 1} at step {int(state.step)}; lower the weights '
                       'or try --config.optimizer=adam')
      if on_chunk is not None:
        on_chunk(k, before, int(state.step), state.pixels)
    reporter.end_stage()
    image = objective.pixels_to_image(state.pixels)
  return np.asarray(image, np.float32)


def _check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, '.write-test')
    with open(probe, 'w') as f:
      f.write('ok')
    os.unlink(probe)
  except OSError as e:
    raise NSTError(f'workdir {workdir} is not writable ({e.strerror or e})') from None


def _stage_costs(spec):
  """(steps, approximate pixels) per stage, for the progress ETA."""
  return [(s.steps, s.long_side ** 2) for s in spec.stages]


def _execute(spec, config, workdir, params, quiet, on_chunk=None) -> np.ndarray:
  """Loads weights if needed, optimises, writes the workdir's files if any."""
  if workdir is not None:
    _check_workdir(workdir)
    atomic_write(os.path.join(workdir, CONFIG_FILE),
                 lambda f: f.write(config.to_json_best_effort(indent=2) + '\n'), 'w')
  if params is None:
    params = load_vgg19(spec.weights or None)
  log_path = os.path.join(workdir, LOSS_LOG) if workdir is not None else None
  if log_path and os.path.exists(log_path):
    os.unlink(log_path)
  reporter = Reporter(_stage_costs(spec), log_path, quiet=quiet)
  try:
    image = optimize(spec, params, reporter, on_chunk)
  finally:
    reporter.close()
  if workdir is not None:
    image_io.save_image(os.path.join(workdir, spec.output), image)
    plot_losses(os.path.join(workdir, LOSS_PLOT), reporter.history,
                reporter.stage_starts)
  return image


def run(config: ml_collections.ConfigDict, workdir: str, *,
        params=None, quiet: bool = False) -> np.ndarray:
  """Runs a configured job, writing into ``workdir``.

  Files: ``final.png`` (``config.output``), ``losses.jsonl``, ``losses.png``,
  ``config.json`` and, with ``save_every``, ``intermediates/``.
  """
  spec = config_lib.validate(config)

  def on_chunk(stage, before, after, pixels):
    if spec.save_every and after // spec.save_every > before // spec.save_every:
      path = os.path.join(workdir, INTERMEDIATES,
                          f'stage{stage + 1}_step{after:05d}.png')
      image_io.save_image(path, objective.pixels_to_image(pixels))

  return _execute(spec, config, workdir, params, quiet, on_chunk)


def make_config(config=None, **overrides) -> ml_collections.ConfigDict:
  """Default config (or a copy of ``config``) with ``overrides`` applied."""
  c = (config_lib.get_default_config() if config is None
       else config.copy_and_resolve_references())
  for k, v in overrides.items():
    if k not in c:
      raise NSTError(f'unknown config field {k!r}')
    c[k] = tuple(v) if isinstance(v, list) else v
  return c


def stylize(content, styles, config: ml_collections.ConfigDict | None = None, *,
            params=None, workdir: str | None = None, quiet: bool = True,
            **overrides) -> np.ndarray:
  """Neural style transfer (Gatys et al.) for other Python / JAX code.

  Args:
    content: image path, or array ``[H, W, 3]`` (uint8, or float in [0, 1]).
    styles: one style (path or array) or a list of them.
    config: a ConfigDict (default: :func:`nst_jax.get_default_config`).
    params: VGG19 params from :func:`load_vgg19` (loaded once if omitted).
    workdir: if given, also write the CLI's files there.
    quiet: no progress bar.
    **overrides: config fields, e.g. ``sizes=(128,), steps=(50,)``.

  Returns:
    The stylised image, float32 ``[H, W, 3]`` in [0, 1], at the last stage's size.

  Example:
    >>> img = nst_jax.stylize('cat.jpg', 'starry.jpg', sizes=(256,), steps=(100,))
  """
  if isinstance(styles, (str, os.PathLike)) or hasattr(styles, 'shape'):
    styles = [styles]
  c = make_config(config, **overrides)
  spec = config_lib.validate(c, content=content, styles=tuple(styles))
  c.content = content if isinstance(content, str) else '<array>'
  c.styles = tuple(s if isinstance(s, str) else '<array>' for s in styles)
  return _execute(spec, c, workdir, params, quiet)
