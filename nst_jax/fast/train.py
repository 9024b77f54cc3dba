"""Training a fast style-transfer network with our own objective.

The network (:mod:`nst_jax.fast.network`) maps a content photo to its
stylised version in one forward pass. It is trained on random crops of a
folder of photos with exactly the optimisation's loss
(:func:`nst_jax.objective.loss_terms`: VGG19 content features, Gram or guided
Gram style losses, TV), the content target being each crop itself:

  L(θ) = mean over the batch of  α L_c(f_θ(x), x) + β L_s(f_θ(x)) + γ L_tv(f_θ(x))

Data flow: photos -> :class:`Crops` (random squares, a pure function of
``(seed, step)``) -> ``[K, B, S, S, C]`` per compiled call -> ``lax.scan``
of K Adam steps -> hooks between calls: progress line and ``losses.jsonl``
(:class:`~nst_jax.progress.Reporter`), sample grid and model export
(:class:`Samples`), orbax checkpoints and SIGTERM (the optimisation's
:class:`~nst_jax.checkpoint.Checkpointer`). Since the crops depend only on
the step, a run killed at any moment and resumed from its last checkpoint
ends with the same parameters as an uninterrupted one (tested, kill -9).

Controls (Gatys et al. 2017, sec. 7):

* spatial: with ``content_guidance`` (e.g. ``halves_x`` and two styles) the
  network takes the R mask channels next to the image and is trained with
  guided Gram losses on that one fixed mask; at apply time it takes any mask.
* ``color_control='luminance'``: a 1-channel network trained on luminance
  only (the style's luminance matched to the photos' mean and spread); its
  output Y is recombined with the content's I, Q when applied.
* ``color_control='histogram'``: the style's colours are first matched to the
  mean and covariance of the training photos' pixels.

Workdir (the MODEL): ``model.json`` + ``model.npz`` (what
:func:`nst_jax.fast.load` reads), ``losses.jsonl``, ``losses.png``,
``config.json``, ``samples/step_NNNNNN.png``, ``checkpoints/``.

Example:
  >>> config = nst_jax.make_config(job='fast_train', train_images='photos/',
  ...                              styles=('starry.jpg',), train_size=128,
  ...                              train_steps=2000, learning_rate=1e-3)
  >>> nst_jax.run(config, 'model_dir')
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from PIL import Image

from nst_jax import checkpoint
from nst_jax import color
from nst_jax import image_io
from nst_jax import inputs
from nst_jax import losses
from nst_jax import mask_io
from nst_jax import objective
from nst_jax import optim
from nst_jax import plan as plan_lib
from nst_jax import summaries
from nst_jax import vgg
from nst_jax import workdir as workdir_lib
from nst_jax.engine import Hook
from nst_jax.errors import NSTError
from nst_jax.fast import model_file
from nst_jax.fast import network
from nst_jax.progress import TERMS

# The config fields a trained network depends on: its checkpoint's
# fingerprint (train_steps is left out: a longer run continues a shorter one;
# optimisation-only fields do not refuse a resume, nor do fields added later
# at the value that reproduces earlier runs: checkpoint._ADDED_LATER).
TRAINING_FIELDS = (
    'job', 'train_images', 'train_size', 'batch_size', 'net_width', 'net_res_blocks',
    'learning_rate', 'seed', 'styles', 'style_scale', 'style_blend_weights',
    'content_weight', 'style_weight', 'tv_weight', 'content_layers',
    'content_layer_weights', 'style_layers', 'style_layer_weights', 'style_layer_styles',
    'normalization', 'pooling', 'weights', 'remat', 'activation_dtype',
    'max_input_pixels', 'color_control', 'histogram_mode', 'content_guidance',
    'style_guidance', 'region_styles', 'region_weights', 'guidance_mode',
    'guidance_extra', 'guided_statistic', 'global_style_weight', 'style_statistic',
    'network')

SAMPLES = 'samples'


class TrainState(NamedTuple):
  params: Any              # the network's parameters (flax nnx State)
  opt_state: Any           # Adam's state
  step: jax.Array          # int32 scalar: steps done


# ---------------------------------------------------------------------------
# Data: random crops, a pure function of (seed, step).
# ---------------------------------------------------------------------------


class Crops:
  """Random square crops of a folder's photos, resized to ``size``.

  Each photo is first scaled so its short side is at most ``2 * size`` (and
  at least ``size``); a crop is a random square of side between ``size`` and
  that short side, randomly mirrored, resized to ``size`` x ``size``. Batch
  ``step`` depends only on ``(seed, step)``, so training resumes exactly.
  """

  def __init__(self, paths, size: int, seed: int = 0,
               max_pixels: int = image_io.DEFAULT_MAX_PIXELS, cache: int = 256):
    self.paths, self.size, self.seed, self.max_pixels = list(paths), size, seed, max_pixels
    self._cache: collections.OrderedDict = collections.OrderedDict()
    self._cache_size = cache

  def photo(self, i: int) -> Image.Image:
    """Photo ``i`` as an RGB PIL image, short side in [size, 2 * size]."""
    if i in self._cache:
      self._cache.move_to_end(i)
      return self._cache[i]
    rgb = image_io.load_image(self.paths[i], self.max_pixels)
    img = Image.fromarray(image_io.to_uint8(rgb), 'RGB')
    short = min(img.size)
    target = min(max(short, self.size), 2 * self.size)
    if target != short:
      s = target / short
      img = img.resize((max(target, round(img.width * s)), max(target, round(img.height * s))),
                       Image.BICUBIC)
    self._cache[i] = img
    if len(self._cache) > self._cache_size:
      self._cache.popitem(last=False)
    return img

  def batch(self, step: int, batch_size: int, stream: int = 0) -> np.ndarray:
    """``[B, size, size, 3]`` float32 in [0, 1] for training step ``step``."""
    rng = np.random.default_rng([self.seed, step, stream])
    out = []
    for i in rng.integers(0, len(self.paths), batch_size):
      img = self.photo(int(i))
      side = int(rng.integers(self.size, min(img.size) + 1))
      x0 = int(rng.integers(0, img.width - side + 1))
      y0 = int(rng.integers(0, img.height - side + 1))
      crop = img.resize((self.size, self.size), Image.BICUBIC,
                        box=(x0, y0, x0 + side, y0 + side))
      if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
      out.append(np.asarray(crop, np.float32) / 255.0)
    return np.stack(out)

  def samples(self, n: int) -> np.ndarray:
    """``n`` fixed crops (the sample grid's; not a training batch)."""
    return self.batch(0, n, stream=1)

  def pixels(self, limit: int = 64, side: int = 64) -> np.ndarray:
    """``[N, 3]`` pixels of up to ``limit`` photos at ``side`` px (colour statistics)."""
    out = []
    for p in self.paths[:limit]:
      rgb = image_io.load_image(p, self.max_pixels)
      out.append(np.asarray(image_io.resize(rgb, image_io.fit_long_side(rgb.shape[:2], side)))
                 .reshape(-1, 3))
    return np.concatenate(out)


# ---------------------------------------------------------------------------
# The objective and the compiled chunk of steps.
# ---------------------------------------------------------------------------


def make_loss_fn(graphdef, loss_spec, vgg_options=None):
  """``loss_fn(params, inputs, guidance, shared) -> (mean total, mean terms)``.

  ``inputs`` ``[B, S, S, C]``; ``guidance`` ``[S, S, R]`` or None; ``shared =
  (vgg_params, targets, weights)`` with the style (and guided) targets of
  :class:`~nst_jax.objective.Targets`; each crop's content target is its own
  VGG features. ``vgg_options`` (``remat``, ``activation_dtype``): for the
  VGG forward of the network's output, as in the optimisation's loss (the
  crops' own features, targets, stay float32).
  """
  vgg_options = vgg_options or {}
  content_layers = loss_spec.content_layer_weights

  def loss_fn(params, inputs, guidance, shared):
    vgg_params, targets, weights = shared
    g = None if guidance is None else jnp.broadcast_to(
        guidance, inputs.shape[:-1] + guidance.shape[-1:])
    out = color.as_rgb(network.apply(graphdef, params, inputs, g))
    feats = lax.stop_gradient(vgg.vgg_features(
        vgg_params, color.as_rgb(inputs), tuple(content_layers), targets.pooling))

    def per_image(image, f):
      t = dataclasses.replace(targets, content=losses.content_targets(
          f, content_layers, loss_spec.normalization))
      return objective.loss_terms(vgg_params, image, t, weights, **vgg_options)

    terms = {k: jnp.mean(v) for k, v in jax.vmap(per_image)(out, feats).items()}
    return terms['total'], terms

  return loss_fn


def make_chunk_fn(loss_fn, optimizer):
  """Jitted ``run(state, batches [K, B, S, S, C], consts, total) -> (state, (terms, active))``.

  K Adam steps in one ``lax.scan``; steps at or past ``total`` are no-ops.
  """

  def step(state: TrainState, inputs, consts, total):
    def active(state):
      (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params, inputs, *consts)
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      return TrainState(optax.apply_updates(state.params, updates), opt_state,
                        state.step + 1), terms

    def skip(state):
      return state, {k: jnp.float32(jnp.nan) for k in TERMS}

    on = state.step < total
    state, terms = lax.cond(on, active, skip, state)
    return state, (terms, on)

  def run(state, batches, consts, total):
    return lax.scan(lambda s, x: step(s, x, consts, total), state, batches)

  return jax.jit(run, donate_argnums=0)


# ---------------------------------------------------------------------------
# Targets, prepared once.
# ---------------------------------------------------------------------------


def prepare_styles(spec, crops: Crops) -> list[np.ndarray]:
  """The style images after colour control, as the loss sees them (RGB)."""
  styles = [image_io.read_image(s, f'style image {i + 1}', spec.max_input_pixels)
            for i, s in enumerate(spec.styles)]
  if spec.color_control != 'none':
    styles = color.control_styles(styles, crops.pixels(), spec.color_control,
                                  spec.histogram_mode)
  side = plan_lib.style_side(spec.fast.train_size, spec.style_scale)
  return [np.asarray(s) for s in inputs.resize_styles(styles, side)]


def training_targets(spec, styles, params):
  """``(Targets without content, guidance [S, S, R] or None)`` for training."""
  g, mp = spec.guidance, spec.max_input_pixels
  masks = mask = None
  if g is not None:
    mask = mask_io.load_guidance(g.content, (spec.fast.train_size,) * 2, mp)
    masks = inputs.style_guidance_masks(g, styles, mp)
  targets, skipped = inputs.image_targets(
      params, inputs.style_statistics(params, styles, masks, spec.loss, g), spec.loss, g,
      content_mask=mask)
  inputs.warn_skipped(skipped)
  return targets, None if mask is None else jnp.asarray(mask)


# ---------------------------------------------------------------------------
# Samples and the model files.
# ---------------------------------------------------------------------------


def sample_grid(photos: np.ndarray, outputs: np.ndarray, pad: int = 4) -> np.ndarray:
  """Two rows, photos above outputs: ``[2S + 3pad, n(S + pad) + pad, 3]`` on white."""
  n, h, w, _ = photos.shape
  grid = np.ones((2 * h + 3 * pad, n * (w + pad) + pad, 3), np.float32)
  for i in range(n):
    x = pad + i * (w + pad)
    grid[pad:pad + h, x:x + w] = photos[i]
    grid[2 * pad + h:2 * pad + 2 * h, x:x + w] = outputs[i]
  return grid


class Samples(Hook):
  """Every ``every`` steps and at the end: ``samples/step_NNNNNN.png`` and the model files."""

  def __init__(self, workdir: str, spec, graphdef, inputs_rgb: np.ndarray, guidance):
    self.workdir, self.spec, self.every = workdir, spec, spec.save_every
    self.rgb = inputs_rgb
    self.inputs = color.to_channels(inputs_rgb, color.channels(spec.color_control))
    g = None if guidance is None else jnp.broadcast_to(
        guidance, self.inputs.shape[:-1] + guidance.shape[-1:])
    self._apply = jax.jit(lambda p: network.apply(graphdef, p, self.inputs, g))

  def write(self, state):
    if not workdir_lib.writer():
      return
    step = int(state.step)
    out = np.asarray(self._apply(state.params), np.float32)
    if out.shape[-1] == 1:
      out = np.stack([color.combine_luminance(y, x) for y, x in zip(out, self.rgb)])
    image_io.save_image(os.path.join(self.workdir, SAMPLES, f'step_{step:06d}.png'),
                        sample_grid(self.rgb, out))
    model_file.write(self.workdir, state.params, model_file.meta(self.spec, step))

  def chunk(self, stage, before, state, metrics, terms):
    if self.every and int(state.step) // self.every > before // self.every:
      self.write(state)

  def stage_end(self, stage, state):
    self.write(state)


# ---------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------


def run(spec, config, workdir: str, params=None, quiet: bool = False) -> str:
  """Trains the network described by ``spec`` into ``workdir``; returns the model dir.

  Resumes from ``workdir/checkpoints`` (same config) unless ``resume=False``.
  """
  from nst_jax.weights import load_vgg19  # pylint: disable=g-import-not-at-top
  fast = spec.fast
  k, size, b = spec.log_every, fast.train_size, fast.batch_size
  paths = image_io.list_images(fast.train_images)
  fingerprint = checkpoint.fingerprint(config, [['fast_train', paths, size, b]],
                                       TRAINING_FIELDS)
  with workdir_lib.Session(workdir, config, [((size, size), fast.train_steps, b)],
                           fingerprint=fingerprint, checkpoint_every=spec.checkpoint_every,
                           resume=spec.resume, quiet=quiet) as session:
    crops = Crops(paths, size, spec.seed, spec.max_input_pixels)
    if params is None:
      params = load_vgg19(spec.weights or None, network=spec.network)
    targets, guidance = training_targets(spec, prepare_styles(spec, crops), params)
    meta = model_file.meta(spec, 0)
    graphdef, net_params = network.create(meta['channels'], meta['guidance_channels'],
                                          fast.width, fast.res_blocks, seed=spec.seed)
    optimizer = optax.adam(spec.learning_rate)
    state = _fresh(TrainState(net_params, optimizer.init(net_params),
                              jnp.zeros((), jnp.int32)))
    restored = session.checkpointer.restore(0, state)
    state = state if restored is None else restored
    consts = (guidance, (params, targets, inputs.loss_weights(spec.loss)))
    run_chunk = make_chunk_fn(make_loss_fn(graphdef, spec.loss, spec.vgg_options), optimizer)
    total = jnp.int32(fast.train_steps)

    def batches(start):
      return color.to_channels(np.stack([crops.batch(s, b) for s in range(start, start + k)]),
                               meta['channels'])

    content = _center_square(image_io.read_image(spec.content, 'content image',
                                                spec.max_input_pixels), size)
    hooks = session.hooks(Samples(workdir, spec, graphdef,
                                  np.concatenate([content[None], crops.samples(3)]), guidance),
                          summaries.hook(workdir, spec, config, session.stages))
    t = time.perf_counter()
    first = batches(int(state.step))
    compiled = run_chunk.lower(state, first, consts, total).compile()
    for h in hooks:
      h.stage_start(0, time.perf_counter() - t, int(state.step))
    while int(state.step) < fast.train_steps:
      before = int(state.step)
      data = first if first is not None else batches(before)
      first = None
      state, (terms, active) = compiled(state, data, consts, total)
      active = np.asarray(active)
      last = int(np.flatnonzero(active)[-1])
      chunk_terms = {n: float(v[last]) for n, v in terms.items()}
      if not np.isfinite(chunk_terms['total']):
        raise NSTError(f'training diverged (loss {chunk_terms["total"]}) at step '
                       f'{int(state.step)}; lower config.learning_rate')
      metrics = optim.StepMetrics(np.asarray(terms['total'])[:, None],
                                  np.ones((k, 1), np.int32), active)
      for h in hooks:
        h.chunk(0, before, state, metrics, chunk_terms)
    for h in hooks:
      h.stage_end(0, state)
  return workdir


def _fresh(tree):
  """Fresh buffers for every leaf (the chunk function donates its state)."""
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def _center_square(image: np.ndarray, size: int) -> np.ndarray:
  """The image scaled so its short side is ``size``, then its central square."""
  h, w = image.shape[:2]
  s = size / min(h, w)
  hw = (max(size, round(h * s)), max(size, round(w * s)))
  image = np.asarray(image_io.resize(image, hw))
  y, x = (hw[0] - size) // 2, (hw[1] - size) // 2
  return image[y:y + size, x:x + size]
