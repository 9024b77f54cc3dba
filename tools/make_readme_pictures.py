r"""Regenerate the README's pictures from the real configs (shrunk for a CPU).

  python tools/make_readme_pictures.py [--size 256] [--steps 120] [--only spatial]

Runs each control's config at one stage of ``--size`` px and writes a
contact sheet per control into docs/images/ (JPEG). ~1 minute per config on a
2-core CPU.
"""

import argparse
import importlib
import os
import tempfile

import numpy as np
from PIL import Image

from _common import ROOT
from contact_sheet import contact_sheet, mask_picture


def _run(name, size, steps, params, **overrides):
  import nst_jax
  config = importlib.import_module(f'configs.{name}').get_config()
  config.sizes, config.steps = (size,), (steps,)
  for k, v in overrides.items():
    config[k] = v
  work = tempfile.mkdtemp(prefix=f'nst_{name}_')
  image = nst_jax.run(config, work, params=params, quiet=True)
  del nst_jax
  return config, image, work


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--size', type=int, default=256)
  p.add_argument('--steps', type=int, default=120)
  p.add_argument('--only', nargs='*')
  args = p.parse_args()
  import nst_jax
  from nst_jax import image_io, mask_io
  params = nst_jax.load_vgg19()
  out_dir = os.path.join(ROOT, 'docs', 'images')
  os.makedirs(out_dir, exist_ok=True)
  load = image_io.load_image

  def sheet(name, items, cols=4):
    img = contact_sheet(items, cols=cols, height=170)
    path = os.path.join(out_dir, f'{name}.jpg')
    img.save(path, quality=88)
    print(path, flush=True)

  jobs = args.only or ['spatial', 'two_style_regions', 'luminance', 'histogram', 'scale_mix',
                       'w2']
  for name in jobs:
    config, image, work = _run(name, args.size, args.steps, params)
    content = load(config.content)
    styles = [load(s) for s in config.styles]
    if name == 'spatial':
      sheet(name, [('content', content),
                   ('content guidance (horizon:0.5)', mask_picture(
                       mask_io.load_guidance(config.content_guidance, content.shape[:2]))),
                   ('style', styles[0]),
                   ('style guidance (horizon:0.65)', mask_picture(
                       mask_io.load_guidance(config.style_guidance[0], styles[0].shape[:2]))),
                   ('result: guided Grams', image)], cols=5)
    elif name == 'two_style_regions':
      sheet(name, [('content', content), ('regions (halves_x)', mask_picture(
          mask_io.load_guidance('halves_x', content.shape[:2]))),
                   ('style, left', styles[0]), ('style, right', styles[1]),
                   ('result', image)], cols=5)
    elif name == 'luminance':
      _, swap, _ = _run(name, args.size, args.steps, params, color_control='luminance_swap')
      _, plain, _ = _run(name, args.size, args.steps, params, color_control='none')
      sheet(name, [('content', content), ('style', styles[0]), ('plain transfer', plain),
                    ('luminance-only (YIQ)', image), ('post-hoc swap', swap)], cols=5)
    elif name == 'histogram':
      from nst_jax import color
      matched = np.clip(color.match_histogram(styles[0], content, 'cholesky'), 0, 1)
      _, ot, _ = _run(name, args.size, args.steps, params, histogram_mode='ot')
      sheet(name, [('content', content), ('style', styles[0]),
                   ('style, histogram-matched', matched),
                   ('result (cholesky)', image), ('result (ot)', ot)], cols=5)
    elif name == 'w2':                      # style statistics and networks
      _, gram, _ = _run('default', args.size, args.steps, params)
      _, normalized, _ = _run('default', args.size, args.steps, params, network='normalized')
      sheet('statistics', [('content', content), ('style', styles[0]),
                           ('Gram (default)', gram), ('W2 (configs/w2.py)', image),
                           ('Gram, normalised VGG19', normalized)], cols=5)
    elif name == 'scale_mix':
      mixed = load(os.path.join(work, 'mixed_style.png'))
      sheet(name, [('fine scale: A', load(config.scale_fine_style)),
                   ('coarse scale: B', load(config.scale_coarse_style)),
                   ('new style (A fine on B coarse)', mixed),
                   ('content', content), ('result', image)], cols=5)


if __name__ == '__main__':
  main()
