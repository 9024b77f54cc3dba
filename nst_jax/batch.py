"""Batch mode: a folder of content images, one style, one compiled call.

Images whose stage sizes agree are stacked and optimised together: the whole
optimiser step is ``vmap``-ed, so every image keeps its own L-BFGS history
and line search (exactly as if run alone), and the batch axis is sharded
over all devices (data parallel). Outputs are named after the inputs.

  nst-jax --config=configs/default.py --config.content=photos/ --workdir=out
  # -> out/batch/<input stem>.png for every image in photos/

Spatial/colour/scale controls and posters are for single images; batch mode
refuses them with a one-line error.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nst_jax import image_io, objective, optim
from nst_jax.errors import NSTError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp', '.webp')
BATCH_DIR = 'batch'


def list_images(folder: str) -> list[str]:
  names = sorted(n for n in os.listdir(folder)
                 if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith('.'))
  if not names:
    raise NSTError(f'content folder {folder} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
  return [os.path.join(folder, n) for n in names]


def check_spec(spec):
  for field, off in (('content_guidance', ''), ('color_control', 'none'),
                     ('scale_mix', ()), ('poster', ())):
    if getattr(spec, field) != off:
      raise NSTError(f'batch mode (content folder) does not support {field}')


def _stack(trees):
  return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def stylize_batch(spec, params, contents, styles, reporter) -> list[np.ndarray]:
  """Stylises every image of ``contents`` (float arrays) with ``styles``.

  Returns the results in input order.
  """
  check_spec(spec)
  groups: dict = {}
  for i, c in enumerate(contents):
    key = tuple(image_io.fit_long_side(c.shape[:2], s.long_side) for s in spec.stages)
    groups.setdefault(key, []).append(i)
  results = [None] * len(contents)
  for idx in groups.values():
    for i, img in zip(idx, _run_group(spec, params, [contents[i] for i in idx], styles,
                                      reporter)):
      results[i] = img
  return results


def _run_group(spec, params, contents, styles_full, reporter):
  weights = objective.LossWeights(*(jnp.float32(w) for w in (
      spec.content_weight, spec.style_weight, spec.tv_weight)))
  opts = dict(remat=spec.remat, activation_dtype=spec.activation_dtype)
  loss_fn = lambda p, c: objective.total_loss(p, *c, spec.pooling, **opts)
  optimizer = optim.make_optimizer(spec.optimizer, spec.learning_rate, spec.lbfgs_memory)
  axes = (None, objective.Targets(content=0, style=None, guided=None), None)
  run = optim.make_chunk_fn(loss_fn, optimizer, spec.log_every, batch_axes=axes)
  terms_fn = jax.jit(jax.vmap(lambda p, c: objective.loss_terms(
      c[0], objective.pixels_to_image(p), *c[1:], spec.pooling), in_axes=(0, axes)))
  n = len(contents)
  devices = jax.devices()
  ndev = math.gcd(n, len(devices))            # shard the batch when it divides
  mesh = Mesh(np.asarray(devices[:ndev]), ('b',)) if ndev > 1 else None
  key = jax.random.PRNGKey(spec.seed)
  images = None
  for k, stage in enumerate(spec.stages):
    hw = image_io.fit_long_side(contents[0].shape[:2], stage.long_side)
    content = [image_io.resize(c, hw) for c in contents]
    style_side = max(16, round(stage.long_side * spec.style_scale))
    styles = [image_io.resize(s, image_io.fit_long_side(s.shape[:2], style_side))
              for s in styles_full]
    per_image = [objective.make_targets(
        params, c, styles, content_layer_weights=spec.content_layer_weights,
        style_layer_weights=spec.style_layer_weights, style_blend=spec.style_blend,
        normalization=spec.normalization, pooling=spec.pooling) for c in content]
    targets = objective.Targets(content=_stack([t.content for t in per_image]),
                                style=per_image[0].style, guided={})
    if images is None:
      if spec.init == 'noise':
        start = jax.random.uniform(jax.random.fold_in(key, k), (n,) + hw + (3,))
      elif spec.init == 'content':
        start = jnp.stack(content)
      else:
        raise NSTError(f"batch mode supports init 'content' or 'noise', not {spec.init!r}")
    else:
      start = jnp.stack([image_io.resize(im, hw) for im in images])
    state = jax.vmap(lambda x: optim.init_state(optimizer, x))(start)
    state = jax.tree.map(lambda x: jnp.array(x, copy=True), state)
    consts = (params, targets, weights)
    if mesh is not None:
      state = jax.device_put(state, NamedSharding(mesh, P('b')))
      consts = (jax.device_put(params, NamedSharding(mesh, P())),
                objective.Targets(jax.device_put(targets.content, NamedSharding(mesh, P('b'))),
                                  jax.device_put(targets.style, NamedSharding(mesh, P())), {}),
                weights)
    t = time.perf_counter()
    compiled = run.lower(state, consts, jnp.int32(stage.steps)).compile()
    reporter.start_stage(hw, stage.steps, time.perf_counter() - t)
    while int(state.step[0]) < stage.steps:
      state, m = compiled(state, consts, jnp.int32(stage.steps))
      active = np.asarray(m.active)[:, 0]
      terms = {name: float(jnp.mean(v)) for name, v in terms_fn(state.pixels, consts).items()}
      reporter.chunk(np.asarray(m.loss).mean(axis=1)[active],
                     np.asarray(m.evaluations).max(axis=1)[active], terms)
    reporter.end_stage()
    images = list(np.asarray(jax.vmap(objective.pixels_to_image)(state.pixels)))
  return images
