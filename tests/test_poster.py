"""Posters: sizes from paper and DPI, derived schedules, 16-bit files with DPI."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import nst_jax
from nst_jax import image_io, poster


def test_paper_sizes_and_fit():
  short, long = poster.sheet_inches('A2')
  assert (short, long) == pytest.approx((420 / 25.4, 594 / 25.4))
  # The cat (300x451) on A2 at 300 dpi: limited by the long side, 7016 px.
  h, w = poster.poster_pixels((300, 451), 300, 'A2')
  assert w == int(451 * (594 / 25.4 * 300 / 451)) and h <= 420 / 25.4 * 300
  assert poster.poster_pixels((100, 100), 100, print_size='10x20cm') == (393, 393)
  for bad in ('A9', ''):
    with pytest.raises(nst_jax.NSTError):
      poster.sheet_inches(bad, '' if bad else '10 by 20')


def test_schedule_doubles_and_thins_steps():
  assert poster.schedule(4961) == [(512, 300), (1024, 150), (2048, 75), (4096, 50), (4961, 50)]
  # no 1024 -> 1100 step; the top stage of several gets 2/3 of its halving
  # schedule's steps (poster.TOP_STAGE_SHARE), at least 50
  assert poster.schedule(1100) == [(512, 300), (1100, 100)]
  assert poster.schedule(1753) == [(512, 300), (1024, 150), (1753, 50)]
  assert poster.schedule(2480) == [(512, 300), (1024, 150), (2048, 75), (2480, 50)]
  assert poster.schedule(300) == [(300, 300)]


def _read_png16(path):
  data = open(path, 'rb').read()
  assert data[:8] == b'\x89PNG\r\n\x1a\n'
  pos, chunks = 8, {}
  while pos < len(data):
    (n,) = struct.unpack('>I', data[pos:pos + 4])
    kind = data[pos + 4:pos + 8]
    chunks.setdefault(kind, b'')
    chunks[kind] += data[pos + 8:pos + 8 + n]
    assert struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(
        kind + data[pos + 8:pos + 8 + n]) & 0xffffffff
    pos += 12 + n
  w, h, depth, ctype = struct.unpack('>IIBB', chunks[b'IHDR'][:10])
  raw = np.frombuffer(zlib.decompress(chunks[b'IDAT']), np.uint8).reshape(h, 1 + w * 6)
  assert depth == 16 and ctype == 2 and np.all(raw[:, 0] == 0)
  return raw[:, 1:].copy().view('>u2').reshape(h, w, 3), chunks


def test_png16_roundtrip_and_dpi(tmp_path, rng):
  img = rng.uniform(size=(7, 9, 3)).astype(np.float32)
  path = str(tmp_path / 'a.png')
  image_io.save_image(path, img, bits=16, dpi=300)
  pixels, chunks = _read_png16(path)
  np.testing.assert_array_equal(pixels, np.round(img.astype(np.float64) * 65535))
  assert Image.open(path).info['dpi'] == pytest.approx((300, 300), abs=0.01)


def test_tiff16_roundtrip_and_dpi(tmp_path, rng):
  img = rng.uniform(size=(5, 6, 3)).astype(np.float32)
  path = str(tmp_path / 'a.tif')
  image_io.save_image(path, img, bits=16, dpi=150)
  data = open(path, 'rb').read()
  assert data[:4] == b'II*\x00'
  # Our own reading of the first IFD: 16 bits x 3, uncompressed, one strip.
  (ifd,) = struct.unpack('<I', data[4:8])
  (count,) = struct.unpack('<H', data[ifd:ifd + 2])
  tags = {}
  for i in range(count):
    tag, typ, n, value = struct.unpack('<HHII', data[ifd + 2 + 12 * i:ifd + 14 + 12 * i])
    tags[tag] = value & 0xffff if typ == 3 and n == 1 else value
  assert tags[259] == 1 and tags[277] == 3                  # no compression, RGB
  bits = struct.unpack('<HHH', data[tags[258]:tags[258] + 6])
  assert bits == (16, 16, 16)
  expected = np.round(img.astype(np.float64) * 65535).astype('<u2')
  assert data[tags[273]:tags[273] + tags[279]] == expected.tobytes()
  with Image.open(path) as im:
    assert im.size == (6, 5)
    assert tuple(float(x) for x in im.info['dpi']) == pytest.approx((150, 150))


def test_8bit_dpi_and_16bit_needs_png_or_tiff(tmp_path):
  path = str(tmp_path / 'a.jpg')
  image_io.save_image(path, np.zeros((4, 4, 3)), dpi=200)
  assert Image.open(path).info['dpi'] == pytest.approx((200, 200))
  with pytest.raises(nst_jax.NSTError, match='16-bit'):
    image_io.save_image(path, np.zeros((4, 4, 3)), bits=16)


def test_poster_run_end_to_end(vgg_params, assets, tmp_path):
  c = nst_jax.get_default_config()
  c.print_size, c.dpi, c.poster_start = '3x2in', 24, 32
  c.steps, c.output, c.output_bits = (6, 3), 'poster.png', 16
  nst_jax.run(c, str(tmp_path), params=vgg_params, quiet=True)
  pixels, chunks = _read_png16(str(tmp_path / 'poster.png'))
  assert pixels.shape == (48, 72, 3)                     # 3x2 in at 24 dpi, cat aspect
  ppm = struct.unpack('>I', chunks[b'pHYs'][:4])[0]
  assert ppm == round(24 / 0.0254)
  log = (tmp_path / 'losses.jsonl').read_text()
  assert log.count('"stage_start"') == 2                 # 32 px, then 72 px
