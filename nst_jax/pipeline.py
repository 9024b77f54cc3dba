"""The pipeline: config -> images -> targets -> compiled loop per stage -> image.

:func:`stylize` is the entry point for other JAX code (arrays or paths in, an
array out, no files unless a workdir is given); :func:`run` is what the CLI
calls (it writes the workdir's files). Both go through :func:`optimize`.
"""

from __future__ import annotations

import dataclasses
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

from nst_jax import batch
from nst_jax import checkpoint
from nst_jax import color
from nst_jax import config as config_lib
from nst_jax import guidance
from nst_jax import image_io
from nst_jax import objective
from nst_jax import optim
from nst_jax import poster as poster_lib
from nst_jax import sharding
from nst_jax.errors import NSTError
from nst_jax.progress import Reporter, plot_losses
from nst_jax.weights import atomic_write, load_vgg19

log = logging.getLogger(__name__)

LOSS_LOG = 'losses.jsonl'
LOSS_PLOT = 'losses.png'
CONFIG_FILE = 'config.json'
INTERMEDIATES = 'intermediates'
MIXED_STYLE = 'mixed_style.png'


def initial_image(init: str, content, style, key, hw, max_pixels) -> jax.Array:
  """The first stage's starting image: content, seeded noise, style or a file."""
  if init == 'content':
    return jnp.asarray(content)
  if init == 'noise':
    return jax.random.uniform(key, tuple(hw) + (3,), jnp.float32)
  if init == 'style':
    return image_io.resize(style, hw)
  return image_io.resize(image_io.load_image(init, max_pixels), hw)


def stage_inputs(spec, content_full, styles_full, stage, row_multiple: int = 1):
  """Content and styles resized for one stage (style long side * style_scale).

  ``row_multiple``: the height is rounded to a multiple of it (the number of
  devices the image is sharded over, so that every band has equal rows).
  """
  hw = image_io.fit_long_side(content_full.shape[:2], stage.long_side)
  if row_multiple > 1:
    hw = (max(row_multiple, round(hw[0] / row_multiple) * row_multiple), hw[1])
  style_side = max(16, round(stage.long_side * spec.style_scale))
  styles = [image_io.resize(s, image_io.fit_long_side(s.shape[:2], style_side))
            for s in styles_full]
  return hw, image_io.resize(content_full, hw), styles


def _read_inputs(spec, styles: bool = True):
  content = image_io.read_image(spec.content, 'content image', spec.max_input_pixels)
  style_images = [image_io.read_image(s, f'style image {i + 1}', spec.max_input_pixels)
                  for i, s in enumerate(spec.styles)] if styles else []
  return content, style_images


def _grey(y):
  return np.repeat(np.asarray(y, np.float32), 3, axis=-1)


def optimize(spec: config_lib.RunSpec, params, reporter: Reporter,
             on_chunk: Callable | None = None,
             artifacts: dict | None = None, ckpt=None) -> np.ndarray:
  """Runs ``spec`` (every control it asks for); returns float32 RGB [H, W, 3].

  Order: read images -> scale mix (new style) -> colour control (histogram
  matching or luminance) -> guidance masks -> coarse-to-fine stages ->
  luminance recombination / swap. ``artifacts``, if a dict, receives
  by-products by name (``'mixed_style'``).
  """
  # With a scale mix, the mixed image replaces config.styles: don't read them.
  content, styles = _read_inputs(spec, styles=not spec.scale_mix)
  if spec.poster:
    spec = poster_spec(spec, content.shape[:2])
    reporter.stages = [(n, float(px)) for n, px in _stage_costs(spec)]
  if spec.scale_mix:
    mixed = mix_scales(spec, params, reporter)
    if artifacts is not None:
      artifacts['mixed_style'] = mixed
    if spec.mode == 'scale_mix':
      return mixed
    styles = [mixed]
  if spec.color_control == 'histogram':
    styles = [np.clip(color.match_histogram(s, content, spec.histogram_mode), 0, 1)
              for s in styles]
  target_content = content
  if spec.color_control == 'luminance':
    y = color.luminance(content)
    target_content = _grey(y)
    styles = [_grey(color.match_luminance(color.luminance(s), y)) for s in styles]
  masks = None
  if spec.content_guidance:
    masks = (guidance.load_guidance(spec.content_guidance, content.shape[:2],
                                    spec.max_input_pixels),
             [guidance.load_guidance(g, s.shape[:2], spec.max_input_pixels)
              for g, s in zip(spec.style_guidance, styles)])
  image = run_stages(spec, params, reporter, target_content, styles, masks,
                     on_chunk, channels=1 if spec.color_control == 'luminance' else 3,
                     ckpt=ckpt)
  if spec.color_control in ('luminance', 'luminance_swap'):
    content_final = np.asarray(image_io.resize(content, image.shape[:2]))
    image = color.combine_luminance(np.asarray(image)[..., :1], content_final)
  return np.asarray(image, np.float32)


def poster_spec(spec, content_hw):
  """``spec`` with its stages derived from the poster size and DPI."""
  poster_name, print_size, start = spec.poster
  h, w = poster_lib.poster_pixels(content_hw, spec.dpi, poster_name, print_size)
  first = spec.stages[0].steps
  stages = tuple(config_lib.Stage(s, n) for s, n in
                 poster_lib.schedule(max(h, w), start, first_steps=first))
  log.info('poster %s at %g dpi: %dx%d px, stages %s', poster_name or print_size,
           spec.dpi, w, h, [(s.long_side, s.steps) for s in stages])
  return dataclasses.replace(spec, stages=stages)


def mix_scales(spec, params, reporter) -> np.ndarray:
  """Scale control: a new style with style A's fine scale on style B's coarse.

  Starts from B (colour-matched to A if ``scale_color_match``) and optimises
  only a Gram loss towards A on ``scale_layers`` (low layers = fine scale), so
  B's large-scale structure stays. Returns the new style image.
  """
  fine_path, coarse_path = spec.scale_mix
  fine = image_io.read_image(fine_path, 'scale_fine_style', spec.max_input_pixels)
  coarse = image_io.read_image(coarse_path, 'scale_coarse_style', spec.max_input_pixels)
  if spec.scale_color_match:
    coarse = np.clip(color.match_histogram(coarse, fine, spec.histogram_mode), 0, 1)
  n = len(spec.scale_layers)
  sub = dataclasses.replace(
      spec, content=coarse, styles=(fine,), style_blend=(1.0,),
      stages=(config_lib.Stage(spec.scale_size, spec.scale_steps),),
      content_weight=0.0, tv_weight=0.0, style_weight=1.0,
      style_layer_weights={l: 1.0 / n for l in spec.scale_layers},
      init='content', content_guidance='', color_control='none', scale_mix=(),
      mode='transfer', layer_styles={}, global_style_weight=1.0, style_scale=1.0)
  return np.asarray(run_stages(sub, params, reporter, coarse, [fine], None, None),
                    np.float32)


def run_stages(spec, params, reporter, content_full, styles_full, masks,
               on_chunk=None, channels: int = 3, ckpt=None) -> np.ndarray:
  """The coarse-to-fine loop over ``spec.stages`` on prepared images.

  ``ckpt`` (a :class:`nst_jax.checkpoint.Checkpointer`) skips stages already
  done, restores the interrupted stage's state, saves at chunk boundaries and
  stops cleanly on SIGTERM/SIGINT.
  """
  key = jax.random.PRNGKey(spec.seed)
  weights = objective.LossWeights(*(jnp.float32(w) for w in (
      spec.content_weight, spec.style_weight, spec.tv_weight)))
  pooling, statistic = spec.pooling, spec.guided_statistic
  opts = dict(remat=spec.remat, activation_dtype=spec.activation_dtype)
  loss_fn = lambda pixels, consts: objective.total_loss(pixels, *consts, pooling,
                                                        statistic, **opts)
  terms_fn = jax.jit(lambda pixels, consts: objective.loss_terms(
      consts[0], objective.pixels_to_image(pixels), *consts[1:], pooling, statistic,
      **opts))
  optimizer = optim.make_optimizer(spec.optimizer, spec.learning_rate,
                                   spec.lbfgs_memory)
  chunk = math.gcd(spec.log_every, spec.save_every) if spec.save_every else spec.log_every
  run_chunk = optim.make_chunk_fn(loss_fn, optimizer, chunk)
  content_layers = spec.content_layer_weights if spec.content_weight > 0 else {}
  guided = bool(masks)
  mesh = sharding.make_mesh(spec.devices)
  image = None
  offset = 0                                     # global step at stage start
  for k, stage in enumerate(spec.stages):
    if ckpt is not None and ckpt.skip_stage(k):
      reporter.skip_stage(stage.steps)
      offset += stage.steps
      continue
    hw, content, styles = stage_inputs(spec, content_full, styles_full, stage,
                                       mesh.size if mesh is not None else 1)
    targets = objective.make_targets(
        params, content, styles, content_layer_weights=content_layers,
        style_layer_weights=spec.style_layer_weights,
        style_blend=spec.style_blend, normalization=spec.normalization,
        pooling=pooling, layer_styles=spec.layer_styles,
        global_weight=spec.global_style_weight if guided else 1.0)
    if guided:
      targets = targets._replace(guided=_guided_targets(
          spec, params, masks, hw, styles, k))
    if image is None:   # first stage (or resuming: shape-only template)
      start = initial_image(spec.init, content, styles[0],
                            jax.random.fold_in(key, k), hw, spec.max_input_pixels)
    else:
      start = image_io.resize(image, hw)
    start = jnp.asarray(start, jnp.float32)[..., :channels]
    consts = (params, targets, weights)
    state = optim.init_state(optimizer, start)
    restored = ckpt.restore(k, state) if ckpt is not None else None
    if restored is not None:
      state = restored
    if mesh is not None:       # bands of the image on every device (GSPMD)
      state = sharding.shard_state(state, mesh, start.shape)
      consts = sharding.replicate(consts, mesh)
    num_steps = jnp.int32(stage.steps)
    t = time.perf_counter()
    compiled = run_chunk.lower(state, consts, num_steps).compile()
    reporter.start_stage(hw, stage.steps, time.perf_counter() - t,
                         resumed_at=int(state.step) if restored is not None else 0)
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
      if ckpt is not None:
        ckpt.save(k, offset + int(state.step), state)
        ckpt.check_stop(k, offset + int(state.step), state)
    if ckpt is not None:
      ckpt.save(k, offset + stage.steps, state, force=True)
    offset += stage.steps
    reporter.end_stage()
    image = objective.pixels_to_image(state.pixels)
  if jax.process_count() > 1:   # multi-host: gather the bands from every host
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    image = multihost_utils.process_allgather(image, tiled=True)
  return np.asarray(image, np.float32)


def _guided_targets(spec, params, masks, hw, styles, stage_index):
  """Per-stage guided targets; warns once about regions skipped as empty."""
  content_masks, style_masks = masks
  r = content_masks.shape[-1]
  style_masks = [np.repeat(m, r, axis=-1) if m.shape[-1] == 1 else m
                 for m in style_masks]                     # 'whole'
  for i, m in enumerate(style_masks):
    if m.shape[-1] != r:
      raise NSTError(f'content guidance has {r} regions but style {i + 1}\'s has '
                     f'{m.shape[-1]}')
  region_styles = spec.region_styles
  if not region_styles:
    if len(styles) == 1:
      region_styles = (0,) * r
    elif len(styles) == r:
      region_styles = tuple(range(r))
    else:
      raise NSTError(f'{len(styles)} styles for {r} regions: set '
                     'config.region_styles (style index per region)')
  if len(region_styles) != r:
    raise NSTError(f'config.region_styles has {len(region_styles)} values for {r} regions')
  region_weights = config_lib.normalized_weights('region_weights',
                                                 spec.region_weights, r)
  cm = image_io.resize(content_masks, hw)
  sm = [image_io.resize(m, s.shape[:2]) for m, s in zip(style_masks, styles)]
  guided, skipped = objective.make_guided_targets(
      params, cm, styles, sm, region_styles, region_weights,
      style_layer_weights=spec.style_layer_weights, mode=spec.guidance_mode,
      extra=spec.guidance_extra, statistic=spec.guided_statistic,
      normalization=spec.normalization, pooling=spec.pooling)
  if skipped and stage_index == 0:
    where = ', '.join(f'region {r + 1} at {l} ({w})' for l, r, w in skipped[:6])
    log.warning('empty guidance, skipped: %s%s', where,
                ' ...' if len(skipped) > 6 else '')
  return guided


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
  """(steps, approximate pixels) per stage, for the progress ETA.

  For posters the stages are only known once the content is read;
  :func:`optimize` then updates the Reporter's list.
  """
  mix = [(spec.scale_steps, spec.scale_size ** 2)] if spec.scale_mix else []
  main = [] if spec.mode == 'scale_mix' else [(s.steps, s.long_side ** 2)
                                              for s in spec.stages]
  return mix + main


def _execute(spec, config, workdir, params, quiet, on_chunk=None,
             checkpoints: bool = False) -> np.ndarray:
  """Loads weights if needed, optimises, writes the workdir's files if any."""
  ckpt = None
  if workdir is not None:
    _check_workdir(workdir)
    if checkpoints:
      ckpt = checkpoint.Checkpointer(workdir, checkpoint.fingerprint(config),
                                     spec.checkpoint_every, spec.resume)
    atomic_write(os.path.join(workdir, CONFIG_FILE),
                 lambda f: f.write(config.to_json_best_effort(indent=2) + '\n'), 'w')
  if params is None:
    params = load_vgg19(spec.weights or None)
  log_path = os.path.join(workdir, LOSS_LOG) if workdir is not None else None
  kept = _trim_log(log_path, ckpt.point if ckpt else None)
  reporter = Reporter(_stage_costs(spec), log_path, quiet=quiet, previous=kept)
  artifacts = {}
  restore_signals = ckpt.install_signal_handlers() if ckpt else None
  try:
    image = optimize(spec, params, reporter, on_chunk, artifacts, ckpt)
  finally:
    reporter.close()
    if restore_signals:
      restore_signals()
    if ckpt:
      ckpt.close()
  if workdir is not None and jax.process_index() == 0:   # one writer per pod
    image_io.save_image(os.path.join(workdir, spec.output), image,
                        bits=spec.output_bits, dpi=spec.dpi or None)
    if 'mixed_style' in artifacts and spec.mode != 'scale_mix':
      image_io.save_image(os.path.join(workdir, MIXED_STYLE), artifacts['mixed_style'])
    plot_losses(os.path.join(workdir, LOSS_PLOT), reporter.history,
                reporter.stage_starts)
  return image


def _trim_log(log_path, point) -> list:
  """On resume keep the loss log up to the checkpoint; otherwise start afresh."""
  if not log_path or not os.path.exists(log_path):
    return []
  kept = []
  if point is not None:
    with open(log_path, encoding='utf-8') as f:
      for line in f:
        try:
          r = json.loads(line)
        except ValueError:
          break                                  # a line cut by a kill
        if (r.get('stage', 0), r.get('step', 0)) <= (point['stage'], point['step']):
          kept.append(r)
  atomic_write(log_path, lambda f: f.write(''.join(json.dumps(r) + '\n' for r in kept)),
               'w')
  return kept


def run(config: ml_collections.ConfigDict, workdir: str, *,
        params=None, quiet: bool = False) -> np.ndarray:
  """Runs a configured job, writing into ``workdir``.

  Files: ``final.png`` (``config.output``), ``losses.jsonl``, ``losses.png``,
  ``config.json`` and, with ``save_every``, ``intermediates/``.
  """
  spec = config_lib.validate(config)
  if isinstance(spec.content, str) and os.path.isdir(spec.content):
    return _run_batch(spec, config, workdir, params, quiet)

  def on_chunk(stage, before, after, pixels):
    if spec.save_every and after // spec.save_every > before // spec.save_every:
      path = os.path.join(workdir, INTERMEDIATES,
                          f'stage{stage + 1}_step{after:05d}.png')
      image_io.save_image(path, objective.pixels_to_image(pixels))

  if spec.compilation_cache:
    enable_compilation_cache()
  return _execute(spec, config, workdir, params, quiet, on_chunk, checkpoints=True)


def enable_compilation_cache(directory: str | None = None) -> str:
  """JAX's persistent compilation cache under the cache dir (reused across runs)."""
  from nst_jax.weights import cache_dir  # pylint: disable=g-import-not-at-top
  directory = directory or os.path.join(cache_dir(), 'xla_cache')
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return directory


def _run_batch(spec, config, workdir, params, quiet):
  """Batch mode: every image of the content folder, outputs named after them."""
  paths = batch.list_images(spec.content)
  batch.check_spec(spec)
  _check_workdir(workdir)
  atomic_write(os.path.join(workdir, CONFIG_FILE),
               lambda f: f.write(config.to_json_best_effort(indent=2) + '\n'), 'w')
  contents = [image_io.read_image(p, 'content image', spec.max_input_pixels) for p in paths]
  _, styles = _read_inputs(dataclasses.replace(spec, content=contents[0]))
  if params is None:
    params = load_vgg19(spec.weights or None)
  log_path = os.path.join(workdir, LOSS_LOG)
  _trim_log(log_path, None)
  reporter = Reporter(_stage_costs(spec), log_path, quiet=quiet)
  try:
    images = batch.stylize_batch(spec, params, contents, styles, reporter)
  finally:
    reporter.close()
  ext = os.path.splitext(spec.output)[1]
  for path, image in zip(paths, images):
    stem = os.path.splitext(os.path.basename(path))[0]
    image_io.save_image(os.path.join(workdir, batch.BATCH_DIR, stem + ext), image,
                        bits=spec.output_bits, dpi=spec.dpi or None)
  return images


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
