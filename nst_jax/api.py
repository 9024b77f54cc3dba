"""The entry points: :func:`stylize` for other Python/JAX code, :func:`run` for the CLI.

Both validate the config (:mod:`nst_jax.config`), make the plan
(:mod:`nst_jax.plan`) and hand it to the engine (:mod:`nst_jax.engine`) with
their hooks; :func:`run` also writes the workdir (:mod:`nst_jax.workdir`) and
checkpoints so that a killed run resumes.
"""

from __future__ import annotations

import logging
import os

import ml_collections
import numpy as np

from nst_jax import checkpoint
from nst_jax import config as config_lib
from nst_jax import engine
from nst_jax import plan as plan_lib
from nst_jax import summaries
from nst_jax import video_io
from nst_jax import workdir as workdir_lib
from nst_jax.errors import NSTError
from nst_jax.weights import load_vgg19

log = logging.getLogger(__name__)


def make_config(config=None, **overrides) -> ml_collections.ConfigDict:
  """Default config (or a copy of ``config``) with ``overrides`` applied."""
  c = (config_lib.get_default_config() if config is None
       else config.copy_and_resolve_references())
  for k, v in overrides.items():
    if k not in c:
      raise NSTError(f'unknown config field {k!r}')
    if isinstance(c[k], str) and isinstance(v, int) and not isinstance(v, bool):
      v = str(v)                          # e.g. tile=256 for the field tile='auto'
    if isinstance(c[k], tuple) and isinstance(v, (str, int, float)):
      v = config_lib._split(v)   # pylint: disable=protected-access  (sizes='auto', steps=100)
    c[k] = tuple(v) if isinstance(v, list) else v
  return c


def _execute(spec, config, workdir, params, quiet, checkpoints: bool):
  """Plans, runs and (with a workdir) writes; returns the run's output images."""
  plan = plan_lib.make_plan(spec)
  log.info('%s', plan_lib.describe(plan))
  fingerprint = checkpoint.fingerprint(config, plan.signature()) if checkpoints else None
  with workdir_lib.Session(workdir, config, plan_lib.reported_stages(plan),
                           fingerprint=fingerprint, checkpoint_every=spec.checkpoint_every,
                           resume=spec.resume, quiet=quiet) as session:
    files = []
    if workdir is not None:
      files.append(workdir_lib.Outputs(workdir, spec, len(plan.phases)))
      if spec.save_every:
        files.append(workdir_lib.Intermediates(workdir, plan, spec.save_every))
      files.append(summaries.hook(workdir, spec, config, session.stages, plan))
    if params is None:
      params = load_vgg19(spec.weights or None, network=spec.network)
    outputs = engine.execute(plan, params, hooks=session.hooks(*files),
                             resume=session.checkpointer,
                             keep_outputs=spec.video is None or not checkpoints)
  if spec.mode == 'scale_mix':
    return outputs[0][0]
  if spec.video is not None and any(o is None for p, o in zip(plan.phases, outputs)
                                    if p.kind == 'frame'):
    return None                                 # a CLI clip: written, not kept
  results = sorted(((c.index, image) for phase, out in zip(plan.phases, outputs)
                    if phase.kind in ('transfer', 'frame') for c, image in zip(phase.contents, out)),
                   key=lambda t: t[0])
  images = [image for _, image in results]      # in the folder's (sorted) order
  if spec.video is not None:                    # a clip: its frames
    return images
  return images if spec.batch else images[0]


def run(config: ml_collections.ConfigDict, workdir: str, *,
        params=None, quiet: bool = False):
  """Runs a configured job, writing into ``workdir``; resumes a killed one.

  ``config.job``: ``optimize`` (files: see :mod:`nst_jax.workdir`),
  ``fast_train`` (trains a network into ``workdir``, see
  :mod:`nst_jax.fast.train`) or ``fast_apply`` (see :mod:`nst_jax.fast.apply`).
  Returns the image (float32 ``[H, W, 3]`` in [0, 1]) or, for a content
  folder, the list of images in file order; ``fast_train`` returns the model
  dir; a clip returns None (its frames and ``final.mp4`` are in the workdir).
  """
  spec = config_lib.validate(config)
  if spec.compilation_cache:
    engine.enable_compilation_cache()
  with workdir_lib.locked(workdir):         # one run at a time in a workdir
    if spec.job == 'fast_train':
      from nst_jax.fast import train  # pylint: disable=g-import-not-at-top
      return train.run(spec, config, workdir, params=params, quiet=quiet)
    if spec.job == 'fast_apply':
      from nst_jax.fast import apply  # pylint: disable=g-import-not-at-top
      return apply.run(spec, config, workdir, quiet=quiet)
    return _execute(spec, config, workdir, params, quiet, checkpoints=True)


def result_path(config: ml_collections.ConfigDict, workdir: str) -> str:
  """What a CLI run reports it wrote: the trained model dir, or the output image."""
  if config.get('job') == 'fast_train':
    return workdir
  content = config.content
  if video_io.is_video(content) or (config.get('clip') and isinstance(content, str)):
    return workdir_lib.video_path(workdir, config.output)
  if isinstance(content, str) and os.path.isdir(content):
    return os.path.join(workdir, workdir_lib.BATCH_DIR)
  return os.path.join(workdir, config.output)


def stylize(content, styles, config: ml_collections.ConfigDict | None = None, *,
            params=None, workdir: str | None = None, quiet: bool = True,
            **overrides):
  """Neural style transfer (Gatys et al.) for other Python / JAX code.

  Args:
    content: image path, array ``[H, W, 3]`` (uint8, or float in [0, 1]), or
      a folder of images (then a list of results is returned), or a clip (a
      video file, or a frame folder with ``clip=True``: the list of its
      stylised frames, Ruder et al.'s temporal loss between them).
    styles: one style (path or array) or a list of them.
    config: a ConfigDict (default: :func:`nst_jax.get_default_config`).
    params: VGG19 params from :func:`load_vgg19` (loaded once if omitted, as
      ``weights`` and ``network`` say; given, they are used as they are).
    workdir: if given, also write the CLI's files there (no checkpoints),
      holding its lock meanwhile (:func:`nst_jax.workdir.locked`).
    quiet: no progress line.
    **overrides: config fields, e.g. ``sizes=(128,), steps=(50,)``.

  Returns:
    The stylised image, float32 ``[H, W, 3]`` in [0, 1], at the last stage's size.

  Raises:
    NSTError: also for ``job='fast_train'`` / ``'fast_apply'``: this is the
      optimisation; a trained network is applied by :func:`nst_jax.fast.stylize`,
      any job runs with :func:`run`.

  Example:
    >>> img = nst_jax.stylize('cat.jpg', 'starry.jpg', sizes=(256,), steps=(100,))
  """
  if isinstance(styles, (str, os.PathLike)) or hasattr(styles, 'shape'):
    styles = [styles]
  c = make_config(config, **overrides)
  if c.job in ('fast_train', 'fast_apply'):
    raise NSTError(f'config.job={c.job}: nst_jax.stylize runs the optimisation only; apply '
                   'a trained network with nst_jax.fast.stylize(nst_jax.fast.load(model), '
                   'image), or run any job with nst_jax.run(config, workdir)')
  spec = config_lib.validate(c, content=content, styles=tuple(styles))
  c.content = content if isinstance(content, str) else '<array>'
  c.styles = tuple(s if isinstance(s, str) else '<array>' for s in styles)
  with workdir_lib.locked(workdir):         # one run at a time in a workdir
    out = _execute(spec, c, workdir, params, quiet, checkpoints=False)
  return out if isinstance(out, list) else np.asarray(out, np.float32)
