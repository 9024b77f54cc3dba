"""Image loading for every kind of awkward input, and atomic saving."""

import os

import numpy as np
import pytest
from PIL import Image

import nst_jax
from nst_jax import image_io


def _save(tmp_path, name, img, **kw):
  path = str(tmp_path / name)
  img.save(path, **kw)
  return path


def test_rgb_roundtrip(tmp_path, rng):
  a = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
  path = _save(tmp_path, 'a.png', Image.fromarray(a))
  np.testing.assert_allclose(image_io.load_image(path), a / 255.0, atol=1e-6)


def test_grey_becomes_three_equal_channels(tmp_path):
  path = _save(tmp_path, 'g.png', Image.fromarray(np.full((3, 4), 128, np.uint8)))
  x = image_io.load_image(path)
  assert x.shape == (3, 4, 3)
  np.testing.assert_allclose(x, 128 / 255.0)


def test_rgba_is_composited_over_white(tmp_path):
  a = np.zeros((2, 2, 4), np.uint8)
  a[..., 0] = 255          # red
  a[0, 0, 3] = 255         # opaque red
  a[0, 1, 3] = 0           # fully transparent -> white
  a[1, :, 3] = 128         # half -> pink
  x = image_io.load_image(_save(tmp_path, 'a.png', Image.fromarray(a, 'RGBA')))
  np.testing.assert_allclose(x[0, 0], [1, 0, 0], atol=1e-6)
  np.testing.assert_allclose(x[0, 1], [1, 1, 1], atol=1e-6)
  np.testing.assert_allclose(x[1, 0], [1, 127 / 255, 127 / 255], atol=2 / 255)


def test_palette_image(tmp_path):
  img = Image.fromarray(np.array([[0, 1]], np.uint8), 'P')
  img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
  x = image_io.load_image(_save(tmp_path, 'p.png', img))
  np.testing.assert_allclose(x[0], [[1, 0, 0], [0, 0, 1]], atol=1e-6)


def test_16bit_grey_keeps_its_range(tmp_path):
  a = np.array([[0, 65535, 32768]], np.uint16)
  x = image_io.load_image(_save(tmp_path, 'g16.png', Image.fromarray(a)))
  np.testing.assert_allclose(x[0, :, 0], [0, 1, 32768 / 65535], atol=1e-5)


def test_cmyk_jpeg(tmp_path):
  img = Image.new('CMYK', (4, 4), (0, 255, 255, 0))   # red in CMYK
  x = image_io.load_image(_save(tmp_path, 'c.jpg', img, quality=100))
  assert x.shape == (4, 4, 3)
  assert x[..., 0].mean() > 0.9 and x[..., 1].mean() < 0.1


def test_exif_orientation_is_applied(tmp_path):
  a = np.zeros((2, 3, 3), np.uint8)
  a[0, 0] = 255                       # white top-left in the stored pixels
  img = Image.fromarray(a)
  exif = img.getexif()
  exif[0x0112] = 6                    # "rotate 90 CW to display"
  path = _save(tmp_path, 'r.png', img, exif=exif.tobytes())
  x = image_io.load_image(path)
  assert x.shape == (3, 2, 3)         # width and height swapped
  assert x[0, 1].mean() > 0.9         # top-left went to top-right


@pytest.mark.parametrize('make, match', [
    (lambda p: None, 'not found'),
    (lambda p: os.makedirs(p), 'directory'),
    (lambda p: open(p, 'w').write('hello, not an image'), 'not an image'),
    (lambda p: open(p, 'wb').write(b''), 'not an image'),
])
def test_bad_files_raise_one_line_errors(tmp_path, make, match):
  path = str(tmp_path / 'x.png')
  make(path)
  with pytest.raises(nst_jax.NSTError, match=match) as e:
    image_io.load_image(path)
  assert '\n' not in str(e.value)


def test_truncated_png(tmp_path, rng):
  path = _save(tmp_path, 't.png',
               Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 2])
  with pytest.raises(nst_jax.NSTError, match='truncated|unreadable'):
    image_io.load_image(path)


def test_decompression_bomb_guard(tmp_path):
  path = _save(tmp_path, 'big.png', Image.new('RGB', (100, 100)))
  with pytest.raises(nst_jax.NSTError, match='decompression-bomb'):
    image_io.load_image(path, max_pixels=1000)
  assert image_io.load_image(path, max_pixels=20000).shape == (100, 100, 3)


def test_arrays_are_accepted_and_checked():
  u8 = np.full((2, 2, 3), 255, np.uint8)
  np.testing.assert_allclose(image_io.read_image(u8), 1.0)
  with pytest.raises(nst_jax.NSTError, match=r'\[0, 1\]'):
    image_io.read_image(np.full((2, 2, 3), 7.0))
  with pytest.raises(nst_jax.NSTError, match='NaN'):
    image_io.read_image(np.full((2, 2, 3), np.nan))
  with pytest.raises(nst_jax.NSTError, match='shape'):
    image_io.read_image(np.zeros((2, 2, 2)))


def test_save_is_atomic(tmp_path, monkeypatch):
  path = str(tmp_path / 'out.png')
  image_io.save_image(path, np.zeros((4, 4, 3)))
  before = open(path, 'rb').read()

  def boom(*a, **k):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(Image.Image, 'save', boom)
  with pytest.raises(nst_jax.files.WriteError,
                     match=f'cannot write {path}: no space left on device'):
    image_io.save_image(path, np.ones((4, 4, 3)))
  assert open(path, 'rb').read() == before              # old file intact
  assert os.listdir(tmp_path) == ['out.png']            # no temp file left


def test_save_rejects_unknown_extension(tmp_path):
  with pytest.raises(nst_jax.NSTError, match='extension'):
    image_io.save_image(str(tmp_path / 'out.bmp2'), np.zeros((2, 2, 3)))


def test_fit_long_side():
  assert image_io.fit_long_side((300, 451), 256) == (170, 256)
  assert image_io.fit_long_side((451, 300), 256) == (256, 170)
  assert image_io.fit_long_side((1, 1000), 10) == (1, 10)
