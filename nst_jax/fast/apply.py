"""Applying a trained fast network: :func:`load` a model dir, :func:`stylize` images.

A model dir is a ``job=fast_train`` workdir (or the bundled demo): its
``model.json`` says how to rebuild the network (channels, guidance channels,
width, residual blocks, colour control), ``model.npz`` holds the parameters.
:func:`stylize` runs the network once, jit-compiled per input shape, at the
input's own size:

* a spatially guided model takes R mask channels: any form the optimisation
  accepts (``halves_x``, ``disc:0.3``, ``horizon:0.6``, a label map, ...) or
  an ``[H, W, R]`` array — not only the mask it was trained with;
* a luminance model gets the content's luminance Y and its output Y is
  recombined with the content's I, Q (:func:`nst_jax.color.combine_luminance`),
  so the result's chroma is exactly the content's.

Example:
  >>> model = nst_jax.fast.load('model_dir')
  >>> out = nst_jax.fast.stylize(model, 'photo.jpg')            # [H, W, 3] in [0, 1]
  >>> out = nst_jax.fast.stylize(model2, photo, guidance='disc:0.35')
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import color
from nst_jax import image_io
from nst_jax import mask_io
from nst_jax import plan as plan_lib
from nst_jax import video_io
from nst_jax import workdir as workdir_lib
from nst_jax.config import DEMO_MODEL, asset
from nst_jax.errors import NSTError
from nst_jax.fast import model_file
from nst_jax.fast import network

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class FastModel:
  """A loaded network: ``meta`` (model.json), ``graphdef`` and ``params``."""
  meta: dict
  graphdef: object
  params: object
  path: str = ''

  @property
  def regions(self) -> int:
    """R, the guidance channels it takes (0: no spatial control)."""
    return int(self.meta['guidance_channels'])

  @property
  def channels(self) -> int:
    """3 (RGB) or 1 (luminance network)."""
    return int(self.meta['channels'])

  @property
  def forward(self):
    """The jitted network ``(params, image [1,H,W,C], guidance) -> [1,H,W,C]``."""
    fn = self.__dict__.get('_forward')
    if fn is None:
      graphdef = self.graphdef
      fn = jax.jit(lambda p, x, g: network.apply(graphdef, p, x, g))
      object.__setattr__(self, '_forward', fn)
    return fn


def load(path: str | None = None) -> FastModel:
  """Loads a model dir written by ``job=fast_train`` (None / '' = the bundled demo).

  Raises:
    NSTError: no ``model.json`` / ``model.npz``, another format, or
      parameters whose names or shapes do not fit the architecture.
  """
  path = str(path or asset(DEMO_MODEL))
  return FastModel(*model_file.read(path), path)


def guidance_for(model: FastModel, guidance, hw) -> np.ndarray | None:
  """The ``[H, W, R]`` guidance for one image: a form, an array, or None (the
  form the model was trained with)."""
  if not model.regions:
    if guidance is not None and not (isinstance(guidance, str) and not guidance):
      raise NSTError(f'{model.path or "this model"} was trained without spatial '
                     'guidance; leave content_guidance unset')
    return None
  if guidance is None or (isinstance(guidance, str) and not guidance):
    guidance = model.meta.get('guidance') or ''
  if isinstance(guidance, (str, os.PathLike)):
    g = mask_io.load_guidance(str(guidance), hw)
  else:
    g = np.asarray(guidance, np.float32)
    if g.ndim == 2:
      g = g[..., None]
  if g.shape != (*hw, model.regions):
    raise NSTError(f'guidance has shape {g.shape}; this model takes {model.regions} '
                   f'regions at the image size {tuple(hw)}')
  return g


def stylize(model: FastModel | str, image, guidance=None) -> np.ndarray:
  """The network's stylisation of ``image``, float32 ``[H, W, 3]`` in [0, 1].

  Args:
    model: from :func:`load`, or a model dir.
    image: a path or an array ``[H, W, 3]`` (uint8, or float in [0, 1]).
    guidance: spatially guided models only: a guidance form (``'disc:0.3'``,
      ``'horizon:0.6'``, ``'labels.png'``, ...) or an ``[H, W, R]`` array;
      None = the mask it was trained with.
  """
  if not isinstance(model, FastModel):
    model = load(model)
  rgb = image_io.read_image(image, 'content image')
  x = color.to_channels(rgb, model.channels)
  g = guidance_for(model, guidance, rgb.shape[:2])
  out = model.forward(model.params, jnp.asarray(x)[None],
                      None if g is None else jnp.asarray(g)[None])
  out = np.asarray(out[0], np.float32)
  if model.channels == 1:
    out = color.combine_luminance(out, rgb)
  return out


def run(spec, config, workdir: str, quiet: bool = False):
  """CLI ``job=fast_apply``: ``final.png`` (or ``batch/<name>.png`` per image of a
  folder) in ``workdir``, each at its input's size. Returns the image(s)."""
  workdir_lib.check_writable(workdir)
  workdir_lib.write_config(workdir, config)
  model = load(spec.fast.model)
  form = spec.guidance.content if spec.guidance else None
  if spec.video is not None:
    return _run_clip(spec, model, workdir, form, quiet)
  if spec.batch:
    paths = image_io.list_images(spec.content)
    jobs = [(p, os.path.join(workdir, workdir_lib.BATCH_DIR,
                             n + os.path.splitext(spec.output)[1]))
            for p, n in zip(paths, plan_lib.output_names(paths))]
  else:
    jobs = [(spec.content, os.path.join(workdir, spec.output))]
  results = []
  for source, out_path in jobs:
    t = time.perf_counter()
    image = image_io.read_image(source, 'content image', spec.max_input_pixels)
    g = mask_io.for_image(form, source if isinstance(source, str) else None) \
        if form else None
    out = stylize(model, image, g)
    if workdir_lib.writer():
      image_io.save_image(out_path, out, bits=spec.output_bits, dpi=spec.dpi or None)
    if not quiet:
      log.info('%s -> %s (%dx%d, %.2fs incl. compile)', source if isinstance(source, str)
               else '<array>', out_path, out.shape[1], out.shape[0],
               time.perf_counter() - t)
    results.append(out)
  return results if spec.batch else results[0]


def _run_clip(spec, model: FastModel, workdir: str, form, quiet: bool):
  """A clip through the network frame by frame: ``frames/NNNNN.<ext>``, then
  ``final.mp4`` (source rate and audio), like the optimisation's clip."""
  v = spec.video
  ext = workdir_lib.frame_ext(spec.output)
  t = time.perf_counter()
  for k in range(v.info.frames):
    frame = (image_io.load_image(v.info.paths[k], spec.max_input_pixels) if v.info.paths
             else video_io.read_frame(v.path, k))
    name = f'{k + 1:05d}'
    # Masks by frame file name (a folder clip) or frame number (a video), as
    # the optimisation looks them up.
    g = mask_io.for_image(form, v.info.paths[k] if v.info.paths else name) if form else None
    out = stylize(model, frame, g)
    if workdir_lib.writer():
      image_io.save_image(os.path.join(workdir, workdir_lib.FRAMES_DIR, name + ext), out,
                          bits=spec.output_bits)
  video_io.close_readers()
  if workdir_lib.writer():
    workdir_lib.write_clip(workdir, spec)
  if not quiet:
    log.info('%s -> %s (%d frames, %.2fs incl. compile)', v.path,
             workdir_lib.video_path(workdir, spec.output), v.info.frames,
             time.perf_counter() - t)
  return None
