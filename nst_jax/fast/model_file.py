"""The model file format of a fast network: ``model.json`` + ``model.npz``.

``model.json`` says how to rebuild the network (``format``, ``channels``,
``guidance_channels``, ``width``, ``res_blocks``) and where it came from
(colour control, guidance, styles, steps); ``model.npz`` holds every
parameter as a float32 array named by its path in the network
(``'down/0/conv/kernel'``), loaded with ``allow_pickle=False``. Training
(:mod:`nst_jax.fast.train`) writes it, applying (:mod:`nst_jax.fast.apply`)
reads it; neither needs the other.

Example:
  >>> write('model_dir', params, meta(spec, step=2000))
  >>> meta, graphdef, params = read('model_dir')
"""

from __future__ import annotations

import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import color
from nst_jax.errors import NSTError
from nst_jax.fast import network
from nst_jax.files import atomic_write

MODEL_JSON = 'model.json'
MODEL_NPZ = 'model.npz'
FORMAT = 'nst_jax.fast/1'
ARCHITECTURE = ('channels', 'guidance_channels', 'width', 'res_blocks')


def meta(spec, step: int) -> dict:
  """``model.json`` of a network trained by ``spec`` for ``step`` steps."""
  g = spec.guidance
  return {
      'format': FORMAT,
      'channels': color.channels(spec.color_control),
      'guidance_channels': g.regions if g else 0,
      'width': spec.fast.width, 'res_blocks': spec.fast.res_blocks,
      'color_control': spec.color_control,
      'guidance': g.content if g else '',
      'region_styles': list(g.region_styles) if g else [],
      'styles': [os.path.basename(str(s)) for s in spec.styles],
      'train_size': spec.fast.train_size, 'style_scale': spec.style_scale,
      'step': int(step),
      'train_steps': spec.fast.train_steps, 'batch_size': spec.fast.batch_size,
  }


def param_names(params):
  """``(names, leaves, treedef)`` of a network's parameters as a pure dict;
  names like ``'down/0/conv/kernel'``."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params))
  names = ['/'.join(str(getattr(k, 'key', k)) for k in path) for path, _ in leaves]
  return names, [v for _, v in leaves], treedef


def write(directory: str, params, model_meta: dict) -> None:
  """``model.npz`` (parameters) and ``model.json`` (``model_meta``), atomically."""
  names, values, _ = param_names(params)
  arrays = {n: np.asarray(v, np.float32) for n, v in zip(names, values)}
  atomic_write(os.path.join(directory, MODEL_NPZ), lambda f: np.savez(f, **arrays))
  atomic_write(os.path.join(directory, MODEL_JSON),
               lambda f: f.write(json.dumps(model_meta, indent=2) + '\n'), 'w')


def read(directory: str):
  """``(meta, graphdef, params)`` of the model in ``directory``.

  Raises:
    NSTError: no ``model.json`` / ``model.npz``, another format, or
      parameters whose names or shapes do not fit the architecture.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top
  meta_path = os.path.join(directory, MODEL_JSON)
  npz_path = os.path.join(directory, MODEL_NPZ)
  if not os.path.isfile(meta_path) or not os.path.isfile(npz_path):
    raise NSTError(f'{directory} holds no trained model ({MODEL_JSON} and {MODEL_NPZ}); '
                   'train one with job=fast_train (configs/fast_train.py)')
  try:
    with open(meta_path, encoding='utf-8') as f:
      model_meta = json.load(f)
    arch = {k: int(model_meta[k]) for k in ARCHITECTURE}
  except (ValueError, KeyError, TypeError) as e:
    raise NSTError(f'{meta_path}: not a model description ({e})') from None
  if model_meta.get('format') != FORMAT:
    raise NSTError(f'{meta_path}: format {model_meta.get("format")!r}, expected {FORMAT!r}')
  graphdef, params = network.create(**arch, abstract=True)
  names, shapes, treedef = param_names(params)
  try:
    with np.load(npz_path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise NSTError(f'{npz_path}: unreadable ({e})') from None
  for name, want in zip(names, shapes):
    if name not in arrays or arrays[name].shape != want.shape:
      got = arrays[name].shape if name in arrays else 'missing'
      raise NSTError(f'{npz_path}: parameter {name} is {got}, the architecture in '
                     f'{MODEL_JSON} needs {want.shape}')
  nnx.replace_by_pure_dict(params, jax.tree_util.tree_unflatten(
      treedef, [jnp.asarray(arrays[n], jnp.float32) for n in names]))
  return model_meta, graphdef, params
