"""VGG19 variants: the original Caffe weights and Gatys et al.'s normalised net.

Gatys et al. (2016, sec. 2) use VGG19 "normalized by scaling the weights
such that the mean activation of each convolutional filter over images and
positions is equal to one". Layer by layer, with μ_l,i the mean of ReLU
output i of conv layer l over a set of photos (in the original net):

    W_l[..., k, i] ← W_l[..., k, i] · μ_{l−1,k} / μ_l,i,    b_l,i ← b_l,i / μ_l,i

(μ_{0,k} = 1: the image is not rescaled). Since ReLU is positively
homogeneous and max/average pooling commute with a positive per-channel
scale, every ReLU output of the normalised net is exactly the original's
divided by μ_l,i (tested), so its mean over the photos is 1. What changes is
the weighting: within a layer every channel counts on one scale (a Gram
entry becomes G_ij / (μ_i μ_j)), and with ``normalization='gatys'`` every
layer's activations are on one scale too, so the paper's equal layer
weights weigh the layers about equally (``'relative'`` already divides each
layer's term by its target's size).

Their file is not downloadable here, so the means are computed by
``tools/vgg_normalization.py`` from a documented set of public-domain photos
and shipped as ``assets/vgg19_normalization.npz`` (16 vectors, 26 KB); that
tool also reports how much the factors move when the photos change.

Example:
  >>> params = nst_jax.load_vgg19(network='normalized')
  >>> means = load_means()                       # {'conv1_1': [64], ...}
"""

from __future__ import annotations

import os

import numpy as np

from nst_jax import vgg
from nst_jax.errors import NSTError

NETWORKS = ('original', 'normalized')
MEAN_FLOOR = 0.01      # of the layer's median filter mean (see factors)
MEANS_FILE = os.path.join(os.path.dirname(__file__), 'assets', 'vgg19_normalization.npz')


def conv_names() -> list[str]:
  """The conv layers in network order (``conv1_1`` ... ``conv5_4``)."""
  return list(vgg.conv_shapes())


def relu_of(conv: str) -> str:
  return 'relu' + conv[len('conv'):]


def factors(means: dict) -> dict:
  """The μ each filter is divided by: its mean, floored at ``MEAN_FLOOR`` of
  its layer's median. A filter the photos almost never switch on (conv2_1
  has one at 2.5e-7 of a median 105) would otherwise be scaled up ~10⁸x and,
  firing on a stylised image, swamp every Gram it enters; the floor touches
  that one filter of the shipped set (see WORKSPACE.md)."""
  out = {}
  for name in conv_names():
    mu = np.asarray(means[name], np.float32)
    out[name] = np.maximum(mu, MEAN_FLOOR * float(np.median(mu))).astype(np.float32)
  return out


def normalize(params: dict, means: dict) -> dict:
  """The normalised net from the original ``params`` and ``{conv: μ [C]}``
  (numpy or jax arrays): relu outputs divided by :func:`factors`."""
  out, previous = {}, None
  scales = factors(means)
  for name in conv_names():
    w, b = params[name]['w'], params[name]['b']
    mu = scales[name]
    scale_in = 1.0 if previous is None else previous[:, None]
    out[name] = {'w': w * (scale_in / mu[None, :]), 'b': b / mu}
    previous = mu
  return out


def channel_means(params: dict, images, pooling: str = 'max') -> dict:
  """``{conv: mean ReLU output per channel}``, each image weighted equally
  (images: ``[H, W, 3]`` in [0, 1], any sizes)."""
  import jax  # pylint: disable=g-import-not-at-top  (only this function runs VGG)
  layers = tuple(relu_of(c) for c in conv_names())
  feats = jax.jit(vgg.vgg_features, static_argnames=('layers', 'pooling'))
  total = {c: 0.0 for c in conv_names()}
  for image in images:
    f = feats(params, np.asarray(image, np.float32), layers, pooling)
    for c in conv_names():
      total[c] = total[c] + np.asarray(f[relu_of(c)], np.float64).mean(axis=(0, 1))
  return {c: (v / len(images)).astype(np.float32) for c, v in total.items()}


def load_means(path: str = MEANS_FILE) -> dict:
  """The shipped ``{conv: μ [C]}`` (from :func:`channel_means`)."""
  try:
    with np.load(path, allow_pickle=False) as z:
      means = {c: z[c] for c in z.files if c in vgg.conv_shapes()}
  except (OSError, ValueError) as e:
    raise NSTError(f'{path}: unreadable VGG19 normalisation factors ({e})') from None
  for name, shape in vgg.conv_shapes().items():
    if name not in means or means[name].shape != (shape[-1],):
      raise NSTError(f'{path}: normalisation factors lack {name} (or have the wrong shape)')
  return means


def check_network(network: str) -> str:
  if network not in NETWORKS:
    raise NSTError(f'unknown network {network!r}; use one of {NETWORKS}')
  return network
