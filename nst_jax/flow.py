"""Optical flow for video (Ruder et al. 2016), on the host: flow, warp, reliability.

Conventions: a flow ``f`` from frame A to frame B is ``[H, W, 2]`` float32
``(dx, dy)`` in pixels: the pixel ``(x, y)`` of A is seen at ``(x + dx, y + dy)``
in B (OpenCV's). To bring the stylised frame t−j to frame t, sample it along
the flow *from t to t−j* ("backward"): ω(p) = x_{t−j}(p + f_{t→t−j}(p))
(:func:`warp`, bilinear).

Reliability c (Ruder, Dosovitskiy, Brox 2016, sec. 3.1), with the backward
flow ŵ = f_{t→t−j} and the forward flow w = f_{t−j→t} warped along it,
w̃(p) = w(p + ŵ(p)):

* disocclusion: ``|w̃ + ŵ|² > 0.01 (|w̃|² + |ŵ|²) + 0.5`` (forward and back do
  not cancel),
* motion boundary: ``|∇û|² + |∇v̂|² > 0.01 |ŵ|² + 0.002``,
* and pixels whose backward flow leaves the frame;

c = 0 there, 1 elsewhere; then c · (G_σ ∗ c), σ = ``SMOOTH_SIGMA`` px: the
weight fades in over a pixel or two at the edge of an unreliable region
instead of stepping, and stays exactly 0 on the pixels the tests flagged. Long-term weights (closest first): c_long,j = max(c_j − Σ_{k<j}
c_k, 0) over the earlier frames j in increasing distance
(:func:`long_term_weights`).

The flow itself is OpenCV's DIS (Kroeger et al. 2016) from
``opencv-python-headless``, on the grey frames (:func:`optical_flow`;
``FLOW_METHODS``); the choice is measured in WORKSPACE.md ("Video").

Example:
  >>> back = optical_flow(frame_t, frame_prev)         # t -> t-1
  >>> fwd = optical_flow(frame_prev, frame_t)          # t-1 -> t
  >>> omega, inside = warp(stylised_prev, back)
  >>> c = reliability(fwd, back)                       # [H, W] in [0, 1]
"""

from __future__ import annotations

import numpy as np

from nst_jax.errors import NSTError

SMOOTH_SIGMA = 1.0            # px: Gaussian on the 0/1 reliability
# name -> OpenCV DIS preset (ultrafast, fast, medium), or Farnebäck.
FLOW_METHODS = ('dis_medium', 'dis_fast', 'dis_ultrafast', 'farneback')


def _cv2():
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise NSTError("video needs OpenCV's optical flow: pip install 'nst-jax[video]' "
                   '(opencv-python-headless)') from None
  return cv2


def _grey8(image: np.ndarray) -> np.ndarray:
  """[H, W, 3] float in [0, 1] -> [H, W] uint8 luma (BT.601, as OpenCV's)."""
  image = np.asarray(image, np.float32)
  y = image[..., :3] @ np.float32([0.299, 0.587, 0.114]) if image.shape[-1] >= 3 \
      else image[..., 0]
  return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


def optical_flow(a: np.ndarray, b: np.ndarray, method: str = 'dis_medium') -> np.ndarray:
  """The flow from image ``a`` to image ``b`` (``[H, W, 3]`` in [0, 1]), ``[H, W, 2]``."""
  if a.shape[:2] != b.shape[:2]:
    raise NSTError(f'optical flow between frames of different sizes {a.shape[:2]} '
                   f'and {b.shape[:2]}')
  cv2 = _cv2()
  ga, gb = _grey8(a), _grey8(b)
  if method == 'farneback':
    f = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 5, 15, 5, 7, 1.5, 0)
  elif method.startswith('dis_'):
    preset = {'dis_medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
              'dis_fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
              'dis_ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST}.get(method)
    if preset is None:
      raise NSTError(f'unknown flow method {method!r}; use one of {FLOW_METHODS}')
    f = cv2.DISOpticalFlow_create(preset).calc(ga, gb, None)
  else:
    raise NSTError(f'unknown flow method {method!r}; use one of {FLOW_METHODS}')
  f = np.asarray(f, np.float32)
  if f.shape != (*a.shape[:2], 2) or not np.isfinite(f).all():
    raise NSTError(f'optical flow ({method}) failed on frames of size {a.shape[:2]}')
  return f


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``image`` sampled at ``p + flow(p)`` (bilinear), and where that lies inside.

  Returns ``(warped [H, W, C] float32, inside [H, W] bool)``; outside samples
  take the nearest edge pixel (callers replace them: :func:`inside` is False).
  Exact for a flow that is an integer shift, and for images linear in x and y
  whatever the flow (bilinear interpolation's own error is the only error).
  """
  image = np.asarray(image, np.float32)
  flow = np.asarray(flow, np.float32)
  h, w = flow.shape[:2]
  if image.shape[:2] != (h, w):
    raise ValueError(f'image {image.shape[:2]} and flow {flow.shape[:2]} differ in size')
  x = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]
  y = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
  tol = 1e-3                  # a shift that lands on the edge counts as inside
  inside = (x >= -tol) & (x <= w - 1 + tol) & (y >= -tol) & (y <= h - 1 + tol)
  x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
  x0, y0 = np.floor(x).astype(np.int32), np.floor(y).astype(np.int32)
  x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
  bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
  return (top * (1 - fy) + bottom * fy).astype(np.float32), inside


def _smooth(c: np.ndarray, sigma: float) -> np.ndarray:
  if sigma <= 0:
    return c
  radius = max(1, int(np.ceil(3 * sigma)))
  k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  k = (k / k.sum()).astype(np.float32)
  pad = np.pad(c, radius, mode='edge')
  rows = sum(k[i] * pad[i:i + c.shape[0], :] for i in range(k.size))
  return sum(k[i] * rows[:, i:i + c.shape[1]] for i in range(k.size)).astype(np.float32)


def reliability(forward: np.ndarray, backward: np.ndarray, *,
                smooth_sigma: float = SMOOTH_SIGMA) -> np.ndarray:
  """c ∈ [0, 1] ``[H, W]`` of frame t from the flows t−j → t (``forward``) and
  t → t−j (``backward``): 0 at disocclusions, motion boundaries and pixels
  whose backward flow leaves the frame (the paper's tests; module docstring).
  """
  forward = np.asarray(forward, np.float32)
  backward = np.asarray(backward, np.float32)
  fwd_at, inside = warp(forward, backward)                  # w~ = w(p + w^(p))
  sq = lambda v: np.sum(v * v, axis=-1)
  disoccluded = sq(fwd_at + backward) > 0.01 * (sq(fwd_at) + sq(backward)) + 0.5
  du_y, du_x = np.gradient(backward[..., 0])
  dv_y, dv_x = np.gradient(backward[..., 1])
  boundary = du_x ** 2 + du_y ** 2 + dv_x ** 2 + dv_y ** 2 > 0.01 * sq(backward) + 0.002
  c = (~(disoccluded | boundary) & inside).astype(np.float32)
  return c * _smooth(c, smooth_sigma)


def long_term_weights(weights: list[np.ndarray]) -> list[np.ndarray]:
  """Closest first: ``weights`` ordered by increasing frame distance; each
  keeps only what the closer frames do not already cover, max(c_j − Σ_{k<j}
  c_k, 0) (Ruder et al. eq. 8)."""
  out, covered = [], None
  for c in weights:
    c = np.asarray(c, np.float32)
    out.append(c if covered is None else np.maximum(c - covered, 0.0))
    covered = c if covered is None else covered + c
  return out


def temporal_error(frames: list[np.ndarray], flows_back: list[np.ndarray],
                   weights: list[np.ndarray]) -> float:
  """Mean over frames t ≥ 1 of Σ c·|x_t − warp(x_{t−1})| / Σ c (per channel mean):
  how much a clip changes where the content's flow says it should not.

  ``flows_back[t-1]``: the flow t → t−1 of the content; ``weights[t-1]`` its c.
  """
  errs = []
  for t in range(1, len(frames)):
    omega, _ = warp(frames[t - 1], flows_back[t - 1])
    c = weights[t - 1]
    diff = np.abs(np.asarray(frames[t], np.float32) - omega).mean(axis=-1)
    errs.append(float((c * diff).sum() / max(c.sum(), 1e-6)))
  return float(np.mean(errs)) if errs else 0.0
