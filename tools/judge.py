r"""Judged distances of a style-transfer output, independent of any method's loss.

  python tools/judge.py OUT.png --content C.png --style S.jpg          # -> JSON
  python tools/judge.py a.png b.png --content C.png --style S.jpg --per-layer

The yardstick is OUR JAX VGG19 with the original Caffe weights
(:func:`nst_jax.load_vgg19`, max pooling), whatever network or loss produced
the image. With F_l the output's features at layer l ([M_l positions, N_l
channels]), at the output's own size:

* **content distance** ‖F − P‖_F / ‖P‖_F at relu4_2, P the content image's
  features, the content resized (antialiased cubic) to the output's h × w;
* **style distance, Gram**: mean over relu1_1, relu2_1, relu3_1, relu4_1,
  relu5_1 of ‖G − A‖_F / ‖A‖_F, G = FᵀF / M (:func:`nst_jax.gram`), A the
  style image's, the style resized to the output's long side (aspect kept);
* **style distance, W2**: mean over the same layers of
  W2(N(μ, Σ), N(μ_s, Σ_s)) / √tr Σ_s — the 2-Wasserstein distance between
  the Gaussians of the output's and the style's features (means μ, covariances
  Σ), relative to √tr Σ_s, which is the style Gaussian's W2 distance to a
  point mass at its own mean (so 0 = the same distribution; a constant image
  with the style's mean is 1). W2² is :func:`nst_jax.losses.w2_distance`
  against :func:`nst_jax.losses.w2_target`: both covariances shifted by
  ε I, ε = ``W2_EPS`` · tr Σ_s / N (1e-5), tr(·^½) by ``eigh`` here (exact
  in float32, no gradient needed; the optimiser uses Newton–Schulz); a W2²
  that rounding makes slightly negative counts as 0. ``style_w2_exact`` is
  the same mean computed in float64 numpy without the ε shift, as a check
  on the shift (it matters where a layer has fewer positions than channels:
  at 96 px relu4_1 / relu5_1 read ~1-2 % lower shifted).

Both style distances are norms, not squares, so they read the same way as the
content distance (a relative error). The images are read as 8-bit files, as
every method writes them.

Pure functions for other tools: :func:`judge` (arrays), :func:`judge_files`
(paths, one params load).
"""

from __future__ import annotations

import argparse
import json
import sys

import _common  # pylint: disable=unused-import  (first: the repository on sys.path)

CONTENT_LAYER = 'relu4_2'
STYLE_LAYERS = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')
W2_SQRT_METHOD = 'eigh'


def _norm(x):
  import jax.numpy as jnp
  return jnp.sqrt(jnp.sum(jnp.square(x)))


def content_distance(f, p) -> float:
  """‖F − P‖_F / ‖P‖_F of two ``[h, w, C]`` feature maps."""
  return float(_norm(f - p) / _norm(p))


def gram_distance(f, s) -> float:
  """‖G − A‖_F / ‖A‖_F, G = gram(F), A = gram(S) of ``[h, w, C]`` maps."""
  from nst_jax import losses
  g, a = losses.gram(f), losses.gram(s)
  return float(_norm(g - a) / _norm(a))


def _moments(f):
  import jax.numpy as jnp
  from nst_jax import losses
  return jnp.mean(f.reshape(-1, f.shape[-1]).astype(jnp.float32), axis=0), losses.gram(f)


def w2_relative(f, s) -> float:
  """W2(N(μ, Σ), N(μ_s, Σ_s)) / √tr Σ_s of ``[h, w, C]`` maps ``f`` (output)
  and ``s`` (style), with nst_jax's ε shift (see the module docstring)."""
  import jax.numpy as jnp
  from nst_jax import losses
  target = losses.w2_target(*_moments(s))
  d2 = losses.w2_distance(*_moments(f), target, method=W2_SQRT_METHOD)
  cov_trace = target.cov_trace - target.eps * f.shape[-1]       # tr Σ_s, unshifted
  return float(jnp.sqrt(jnp.maximum(d2, 0.0) / cov_trace))


def w2_relative_exact(f, s) -> float:
  """:func:`w2_relative` in float64 numpy, no ε shift (a check)."""
  import numpy as np
  f = np.asarray(f, np.float64).reshape(-1, f.shape[-1])
  s = np.asarray(s, np.float64).reshape(-1, s.shape[-1])
  mu, mu_s = f.mean(0), s.mean(0)
  cov, cov_s = np.cov(f.T, bias=True), np.cov(s.T, bias=True)
  w, v = np.linalg.eigh(cov_s)
  root = (v * np.sqrt(np.maximum(w, 0.0))) @ v.T
  m = root @ cov @ root
  lam = np.linalg.eigvalsh(0.5 * (m + m.T))
  d2 = (np.sum((mu - mu_s) ** 2) + np.trace(cov) + np.trace(cov_s)
        - 2.0 * np.sum(np.sqrt(np.maximum(lam, 0.0))))
  return float(np.sqrt(max(d2, 0.0) / np.trace(cov_s)))


def _features(params, image, layers):
  from nst_jax import objective
  return objective.features(params, image, tuple(layers))


def judge(params, output, content, style, *, per_layer: bool = False) -> dict:
  """Judged distances of ``output`` (``[H, W, 3]`` float in [0, 1]).

  ``content`` and ``style``: ``[h, w, 3]`` float images at any size; they are
  resized here (content to the output's H × W, style to its long side).
  Returns ``{'size': [H, W], 'content': c, 'style_gram': g, 'style_w2': w,
  'style_w2_exact': w64}``
  and, with ``per_layer``, ``'gram_per_layer'`` / ``'w2_per_layer'``.
  """
  import jax.numpy as jnp
  from nst_jax import image_io
  output = jnp.asarray(output, jnp.float32)
  hw = tuple(output.shape[:2])
  content = image_io.resize(jnp.asarray(content, jnp.float32), hw)
  style = jnp.asarray(style, jnp.float32)
  style = image_io.resize(style, image_io.fit_long_side(style.shape[:2], max(hw)))
  layers = (CONTENT_LAYER, *STYLE_LAYERS)
  fo = _features(params, output, layers)
  fc = _features(params, content, (CONTENT_LAYER,))
  fs = _features(params, style, STYLE_LAYERS)
  grams = {l: gram_distance(fo[l], fs[l]) for l in STYLE_LAYERS}
  w2s = {l: w2_relative(fo[l], fs[l]) for l in STYLE_LAYERS}
  exact = [w2_relative_exact(fo[l], fs[l]) for l in STYLE_LAYERS]
  out = {'size': list(hw),
         'content': content_distance(fo[CONTENT_LAYER], fc[CONTENT_LAYER]),
         'style_gram': sum(grams.values()) / len(grams),
         'style_w2': sum(w2s.values()) / len(w2s),
         'style_w2_exact': sum(exact) / len(exact)}
  if per_layer:
    out['gram_per_layer'], out['w2_per_layer'] = grams, w2s
  return out


def judge_files(outputs, content: str, style: str, *, params=None,
                per_layer: bool = False) -> list[dict]:
  """:func:`judge` of image files (``outputs``: paths), one params load."""
  import nst_jax
  from nst_jax import image_io
  params = nst_jax.load_vgg19() if params is None else params
  c, s = image_io.load_image(content), image_io.load_image(style)
  results = []
  for path in outputs:
    r = judge(params, image_io.load_image(path), c, s, per_layer=per_layer)
    results.append({'output': path, **r})
  return results


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('outputs', nargs='+', help='output images to judge')
  p.add_argument('--content', required=True)
  p.add_argument('--style', required=True)
  p.add_argument('--per-layer', action='store_true', help='also the per-layer distances')
  args = p.parse_args(argv)
  results = judge_files(args.outputs, args.content, args.style, per_layer=args.per_layer)
  print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
