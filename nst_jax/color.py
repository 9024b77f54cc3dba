"""Colour control (Gatys et al. 2017, sec. 5): luminance-only transfer and
colour histogram matching.

Luminance/chroma space: **YIQ** (NTSC 1953 matrix), as in the paper. Y is in
[0, 1] for RGB in [0, 1]; I and Q are the chroma.

* :func:`match_luminance`: the style's luminance mapped to the content's mean
  and standard deviation (the paper's pre-processing of the style).
* :func:`combine_luminance`: an optimised luminance with the content's I, Q;
  Y is limited per pixel to the range where the RGB stays in [0, 1], so the
  result has *exactly* the content's chroma and needs no clipping.
* :func:`channels`, :func:`to_channels`, :func:`as_rgb`: a luminance run
  optimises (or a luminance network outputs) Y alone, shown to VGG as grey RGB.
* :func:`control_styles`: the style images as a colour control shows them to
  the loss, for the optimisation (against each content image) and for training
  a fast network (against the training photos' pixels).
* :func:`match_histogram`: x' = A (x − μ_s) + μ_c on the style's pixels so its
  mean and covariance become the content's. A by ``'cholesky'`` (L_c L_s⁻¹),
  ``'eigen'`` (Σ_c^½ Σ_s^−½, symmetric square roots) or ``'ot'`` (the optimal
  transport map Σ_s^−½ (Σ_s^½ Σ_c Σ_s^½)^½ Σ_s^−½). All three give the exact
  target covariance; they differ in how they rotate colours.
"""

from __future__ import annotations

import numpy as np

from nst_jax.errors import NSTError

RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                       [0.595716, -0.274453, -0.321263],
                       [0.211456, -0.522591, 0.311135]], np.float64)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)
HISTOGRAM_MODES = ('cholesky', 'eigen', 'ot')
COLOR_CONTROLS = ('none', 'luminance', 'luminance_swap', 'histogram')


def rgb_to_yiq(image) -> np.ndarray:
  return np.asarray(image, np.float64) @ RGB_TO_YIQ.T


def yiq_to_rgb(yiq) -> np.ndarray:
  return np.asarray(yiq, np.float64) @ YIQ_TO_RGB.T


def luminance(image) -> np.ndarray:
  """Y of an RGB image, ``[H, W, 1]`` float32."""
  return rgb_to_yiq(image)[..., :1].astype(np.float32)


def channels(control: str) -> int:
  """Channels of the image a colour control optimises: 1 (``luminance``: Y) or 3."""
  return 1 if control == 'luminance' else 3


def to_channels(rgb, n: int):
  """``rgb`` (``[..., 3]``) as an ``n``-channel image: itself, or its luminance Y."""
  return rgb if n == 3 else luminance(rgb)


def as_rgb(image):
  """A one-channel (luminance) image as grey RGB, what VGG is shown; RGB as it is.

  numpy in, numpy out; a JAX array (also inside jit) in, JAX out.
  """
  return image.repeat(3, axis=-1) if image.shape[-1] == 1 else image


def match_luminance(style_y, content_y) -> np.ndarray:
  """Style luminance shifted/scaled to the content's mean and std, clipped to [0, 1]."""
  s = np.asarray(style_y, np.float64)
  c = np.asarray(content_y, np.float64)
  scale = c.std() / s.std() if s.std() > 0 else 1.0
  return np.clip((s - s.mean()) * scale + c.mean(), 0.0, 1.0).astype(np.float32)


def combine_luminance(y, content) -> np.ndarray:
  """RGB from luminance ``y`` ([H, W, 1] or [H, W]) and the content's chroma."""
  yiq = rgb_to_yiq(content)
  y = np.asarray(y, np.float64).reshape(yiq.shape[:2])
  chroma_rgb = yiq[..., 1:] @ YIQ_TO_RGB[:, 1:].T       # RGB of (0, I, Q)
  # Y adds equally to R, G, B (first column of YIQ_TO_RGB is all ones), so
  # the RGB stays in [0, 1] for y in [max(-chroma), min(1 - chroma)].
  lo = np.max(-chroma_rgb, axis=-1)
  hi = np.min(1.0 - chroma_rgb, axis=-1)
  y = np.clip(y, lo, np.maximum(lo, hi))
  rgb = y[..., None] * YIQ_TO_RGB[:, 0] + chroma_rgb
  return np.clip(rgb, 0.0, 1.0).astype(np.float32)   # clip only float dust


def swap_luminance(stylized, content) -> np.ndarray:
  """The post-hoc variant: the stylised image's luminance, the content's chroma."""
  return combine_luminance(luminance(stylized), content)


def _sqrtm(m):
  w, v = np.linalg.eigh(m)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _inv_sqrtm(m, eps):
  w, v = np.linalg.eigh(m)
  return (v / np.sqrt(np.clip(w, eps, None))) @ v.T


def histogram_transform(source, target, mode: str = 'cholesky', eps: float = 1e-5):
  """(A, μ_s, μ_t) such that A (x − μ_s) + μ_t has the target's mean and covariance."""
  if mode not in HISTOGRAM_MODES:
    raise NSTError(f'unknown histogram mode {mode!r}; use one of {HISTOGRAM_MODES}')
  xs = np.asarray(source, np.float64).reshape(-1, 3)
  xt = np.asarray(target, np.float64).reshape(-1, 3)
  mu_s, mu_t = xs.mean(0), xt.mean(0)
  eye = np.eye(3) * eps
  cov_s = np.cov(xs, rowvar=False, bias=True) + eye
  cov_t = np.cov(xt, rowvar=False, bias=True) + eye
  if mode == 'cholesky':
    a = np.linalg.cholesky(cov_t) @ np.linalg.inv(np.linalg.cholesky(cov_s))
  elif mode == 'eigen':
    a = _sqrtm(cov_t) @ _inv_sqrtm(cov_s, eps)
  else:
    s_half = _sqrtm(cov_s)
    s_inv_half = _inv_sqrtm(cov_s, eps)
    a = s_inv_half @ _sqrtm(s_half @ cov_t @ s_half) @ s_inv_half
  return a, mu_s, mu_t


def control_styles(styles, reference, control: str, mode: str = 'cholesky') -> list:
  """The style images as colour control ``control`` shows them to the loss.

  ``reference``: what the styles are matched to, a content image or the
  training photos' pixels ``[N, 3]``. ``histogram``: each style in the
  reference's colours (mean and covariance, ``mode``), clipped to [0, 1];
  ``luminance``: its luminance matched to the reference's, as grey RGB;
  otherwise the styles as they are.

  Example:
    >>> styles = control_styles([starry], content, 'luminance')   # grey RGB
  """
  if control == 'histogram':
    return [np.clip(match_histogram(s, reference, mode), 0, 1) for s in styles]
  if control == 'luminance':
    y = luminance(reference)
    return [as_rgb(match_luminance(luminance(s), y)) for s in styles]
  return list(styles)


def match_histogram(source, target, mode: str = 'cholesky') -> np.ndarray:
  """``source``'s colours mapped to ``target``'s mean and covariance (unclipped).

  Example:
    >>> style2 = match_histogram(style, content, 'ot')   # style in content's colours
  """
  a, mu_s, mu_t = histogram_transform(source, target, mode)
  x = np.asarray(source, np.float64)
  return ((x - mu_s) @ a.T + mu_t).astype(np.float32)
