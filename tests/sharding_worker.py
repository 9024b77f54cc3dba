"""Run by test_sharding.py in a subprocess with 8 simulated CPU devices."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import nst_jax  # noqa: E402
from nst_jax import config as cl, image_io, objective, optim, sharding  # noqa: E402


def main():
  params = nst_jax.load_vgg19()
  spec = cl.validate(cl.get_default_config())
  content = image_io.resize(image_io.load_image(cl.asset('chelsea.png')), (64, 96))
  style = image_io.resize(image_io.load_image(cl.asset('starry_night.jpg')), (76, 96))
  targets = objective.make_targets(
      params, content, [style], content_layer_weights=spec.content_layer_weights,
      style_layer_weights=spec.style_layer_weights, style_blend=(1.0,))
  weights = objective.LossWeights(jnp.float32(1), jnp.float32(100), jnp.float32(0))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(64, 96, 3)).astype(np.float32))
  vg = jax.jit(jax.value_and_grad(lambda p, c: objective.total_loss(p, *c)))
  v1, g1 = vg(x, (params, targets, weights))
  mesh = sharding.make_mesh(0)
  xs = sharding.shard_state(x, mesh, x.shape)
  cs = sharding.replicate((params, targets, weights), mesh)
  v8, g8 = vg(xs, cs)
  hlo = vg.lower(xs, cs).compile().as_text()
  opt = optim.make_optimizer('lbfgs')
  run = optim.make_chunk_fn(lambda p, c: objective.total_loss(p, *c), opt, 2)
  state = sharding.shard_state(optim.init_state(opt, x), mesh, x.shape)
  state, _ = run(state, cs, jnp.int32(2))
  kw = dict(sizes=(96,), steps=(5,), params=params, quiet=True)
  single = nst_jax.stylize(cl.asset('chelsea.png'), cl.asset('starry_night.jpg'), devices=1, **kw)
  multi = nst_jax.stylize(cl.asset('chelsea.png'), cl.asset('starry_night.jpg'), devices=0, **kw)
  print(json.dumps({
      'devices': jax.device_count(),
      'loss_rel': float(abs(v8 - v1) / abs(v1)),
      'grad_rel': float(jnp.linalg.norm(g8 - g1) / jnp.linalg.norm(g1)),
      'grad_sharding': str(g8.sharding.spec),
      'state_sharding': str(state.pixels.sharding.spec),
      'halo_exchange': 'collective-permute' in hlo,
      'all_reduce': 'all-reduce' in hlo,
      'run_max_diff': float(np.abs(single - multi).max()),
      'run_shape': list(multi.shape),
  }))


if __name__ == '__main__':
  main()
