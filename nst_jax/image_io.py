"""Reading, resizing and writing images, with one-line errors for bad input.

Images inside the library are float32 RGB arrays in [0, 1], ``[H, W, 3]``.
:func:`load_image` accepts any mode Pillow decodes (grey, grey+alpha, RGBA,
palette, CMYK, 16-bit and 32-bit integer, float), respects the EXIF orientation
and keeps Pillow's decompression-bomb guard on. Alpha is composited over white.
:func:`save_image` writes to a temp file beside the target, then renames, so a
crash never leaves a half-written image (a failed write raises
:class:`nst_jax.files.WriteError`, an ``OSError`` naming the file).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nst_jax.errors import NSTError
from nst_jax.files import atomic_write

# Pillow errors above 2x this; we turn its warning (above 1x) into an error too.
DEFAULT_MAX_PIXELS = 178_956_970
SAVE_FORMATS = {'.png': 'PNG', '.jpg': 'JPEG', '.jpeg': 'JPEG', '.tif': 'TIFF',
                '.tiff': 'TIFF'}
# What a content folder may hold (batch mode); other files are ignored.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp', '.webp')


def _to_float_rgb(img: Image.Image) -> np.ndarray:
  """Any Pillow image -> float32 RGB [H, W, 3] in [0, 1]."""
  mode = img.mode
  if mode in ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F'):
    a = np.asarray(img).astype(np.float32)
    if mode == 'F':
      scale = 1.0 if a.size == 0 or np.nanmax(a) <= 1.0 else 255.0
    else:
      scale = 65535.0 if mode.startswith('I;16') or np.max(a) > 255 else 255.0
    a = np.clip(np.nan_to_num(a / scale), 0.0, 1.0)
    return np.repeat(a[..., None], 3, axis=-1)
  if mode == 'P':
    img = img.convert('RGBA')
  elif mode == 'PA':
    img = img.convert('RGBA')
  if img.mode in ('RGBA', 'LA', 'La', 'RGBa'):
    img = img.convert('RGBA')
    background = Image.new('RGBA', img.size, (255, 255, 255, 255))
    img = Image.alpha_composite(background, img)
  img = img.convert('RGB')  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX -> RGB
  return np.asarray(img, dtype=np.float32) / 255.0


def load_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """Loads an image file as float32 RGB in [0, 1], EXIF orientation applied.

  Raises:
    NSTError: missing, unreadable, truncated, not an image, or larger than
      ``max_pixels`` (decompression-bomb guard).
  """
  if not isinstance(path, (str, os.PathLike)) or not str(path):
    raise NSTError(f'image path must be a non-empty string, got {path!r}')
  if not os.path.exists(path):
    raise NSTError(f'image not found: {path}')
  if os.path.isdir(path):
    raise NSTError(f'image path is a directory: {path}')
  with _opened(path, max_pixels, 'unreadable or truncated image') as img:
    img.load()
    img = ImageOps.exif_transpose(img)
    w, h = img.size
    if w < 1 or h < 1:
      raise NSTError(f'{path}: image has no pixels')
    return _to_float_rgb(img)


@contextlib.contextmanager
def _opened(path: str, max_pixels: int, unreadable: str):
  """``Image.open(path)`` with Pillow's decompression-bomb guard at
  ``max_pixels`` (its warning above 1x an error too) and one-line errors;
  the one way :func:`load_image` and :func:`image_size` open a file."""
  old_limit = Image.MAX_IMAGE_PIXELS
  try:
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      with Image.open(path) as img:
        yield img
  except NSTError:
    raise
  except (Image.DecompressionBombError, Image.DecompressionBombWarning):
    raise _too_big(path, max_pixels) from None
  except UnidentifiedImageError:
    raise NSTError(f'{path}: not an image Pillow can read') from None
  except PermissionError:
    raise NSTError(f'{path}: permission denied') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise NSTError(f'{path}: {unreadable} ({e})') from None
  finally:
    Image.MAX_IMAGE_PIXELS = old_limit


def _too_big(path: str, max_pixels: int) -> NSTError:
  return NSTError(f'{path}: image exceeds {max_pixels} pixels (decompression-bomb '
                  'guard); set --config.max_input_pixels higher if intended')


def as_image_array(image, what: str = 'image') -> np.ndarray:
  """A user's array (uint8 0-255 or float 0-1, [H, W, 3|4|1] or [H, W]) -> float RGB."""
  a = np.asarray(image)
  if a.ndim == 2:
    a = a[..., None]
  if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or min(a.shape[:2]) < 1:
    raise NSTError(f'{what} must be [H, W, 3] (or grey/RGBA), got shape {a.shape}')
  if a.dtype == np.uint8:
    a = a.astype(np.float32) / 255.0
  elif a.dtype == np.uint16:
    a = a.astype(np.float32) / 65535.0
  else:
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
      raise NSTError(f'{what} contains NaN or infinite values')
    if a.min() < -1e-3 or a.max() > 1 + 1e-3:
      raise NSTError(f'{what}: float images must lie in [0, 1] '
                     f'(got {a.min():.3g}..{a.max():.3g})')
  if a.shape[-1] == 1:
    a = np.repeat(a, 3, axis=-1)
  elif a.shape[-1] == 4:
    alpha = a[..., 3:]
    a = a[..., :3] * alpha + (1.0 - alpha)
  return np.clip(a, 0.0, 1.0)


def read_image(image, what: str = 'image',
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """A path or an array -> float32 RGB [H, W, 3] in [0, 1]."""
  if isinstance(image, (str, os.PathLike)):
    return load_image(image, max_pixels)
  return as_image_array(image, what)


def fit_long_side(shape: tuple[int, int], long_side: int) -> tuple[int, int]:
  """(h, w) scaled so that max(h, w) == long_side, aspect kept, each >= 1."""
  h, w = shape
  s = long_side / max(h, w)
  return max(1, round(h * s)), max(1, round(w * s))


def resize(image: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Antialiased cubic resize of ``[H, W, C]`` to ``hw``; identity if equal."""
  if tuple(image.shape[:2]) == tuple(hw):
    return jnp.asarray(image)
  out = jax.image.resize(jnp.asarray(image, jnp.float32),
                         tuple(hw) + image.shape[2:], 'cubic', antialias=True)
  return jnp.clip(out, 0.0, 1.0)


def check_output_path(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  if ext not in SAVE_FORMATS:
    raise NSTError(f'{path}: output extension must be one of '
                   f'{sorted(SAVE_FORMATS)}')
  return SAVE_FORMATS[ext]


def list_images(folder: str) -> list[str]:
  """Sorted image paths in ``folder`` (by extension; hidden files skipped)."""
  try:
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith('.'))
  except OSError as e:
    raise NSTError(f'cannot list {folder} ({e.strerror or e})') from None
  if not names:
    raise NSTError(f'content folder {folder} holds no images '
                   f'({", ".join(IMAGE_EXTENSIONS)})')
  return [os.path.join(folder, n) for n in names]


def image_size(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
  """(h, w) of an image file from its header, after EXIF orientation.

  Cheap (no decoding), so a folder of photos can be planned before any is
  loaded; a file Pillow cannot identify is an :class:`NSTError`.
  """
  if not os.path.isfile(path):
    raise NSTError(f'image not found: {path}')
  with _opened(path, max_pixels, 'unreadable image') as img:
    w, h = img.size
    orientation = img.getexif().get(0x0112, 1)
  if w * h > max_pixels:          # Pillow's guard above, in case a plugin skips it
    raise _too_big(path, max_pixels)
  return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def to_uint8(image) -> np.ndarray:
  return np.asarray(np.round(np.clip(np.asarray(image, np.float32), 0, 1) * 255),
                    np.uint8)


def to_uint16(image) -> np.ndarray:
  return np.round(np.clip(np.asarray(image, np.float64), 0, 1) * 65535).astype(np.uint16)


def write_png16(f, image, dpi: float | None = None) -> None:
  """16-bit RGB PNG with the DPI in its pHYs chunk (pypng; Pillow cannot)."""
  import png  # pylint: disable=g-import-not-at-top
  a = to_uint16(image)
  h, w, _ = a.shape
  ppm = {} if not dpi else dict(x_pixels_per_unit=int(round(dpi / 0.0254)),
                                y_pixels_per_unit=int(round(dpi / 0.0254)),
                                unit_is_meter=True)
  png.Writer(w, h, greyscale=False, bitdepth=16, compression=6, **ppm).write_array(
      f, a.reshape(-1))


def write_tiff16(f, image, dpi: float | None = None) -> None:
  """16-bit RGB TIFF with resolution tags (tifffile; BigTIFF past 4 GB)."""
  import tifffile  # pylint: disable=g-import-not-at-top
  a = to_uint16(image)
  buffer = io.BytesIO()         # tifffile wants a named file or a BytesIO
  tifffile.imwrite(buffer, a, photometric='rgb', resolution=(dpi or 72.0, dpi or 72.0),
                   resolutionunit='INCH', bigtiff=a.nbytes > 2**32 - 2**25)
  f.write(buffer.getbuffer())


def save_image(path: str, image, bits: int = 8, dpi: float | None = None) -> None:
  """Writes ``image`` (float RGB in [0, 1]) atomically; format from extension.

  Args:
    bits: 8, or 16 for PNG/TIFF (16 bits per channel).
    dpi: resolution recorded in the file (PNG pHYs, JPEG/TIFF tags).
  """
  fmt = check_output_path(path)
  if bits not in (8, 16):
    raise NSTError(f'output bits must be 8 or 16, got {bits!r}')
  if bits == 16:
    if fmt not in ('PNG', 'TIFF'):
      raise NSTError(f'{path}: 16-bit output needs .png or .tif')
    writer = write_png16 if fmt == 'PNG' else write_tiff16
    write = lambda f: writer(f, image, dpi)
  else:
    pil = Image.fromarray(to_uint8(image), 'RGB')
    kwargs = {'quality': 95} if fmt == 'JPEG' else {}
    if dpi:
      kwargs['dpi'] = (float(dpi), float(dpi))
    write = lambda f: pil.save(f, format=fmt, **kwargs)
  atomic_write(path, write)       # a failed write: files.WriteError naming the path
