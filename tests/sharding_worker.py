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


def folder_of_two():
  """Two photos of one size (a batch of 2)."""
  folder = os.path.join(os.environ['WORK'], 'photos')
  os.makedirs(folder, exist_ok=True)
  cat = image_io.load_image(cl.asset('chelsea.png'))
  image_io.save_image(os.path.join(folder, 'a.png'), cat)
  image_io.save_image(os.path.join(folder, 'b.png'), cat[:, ::-1])
  return folder


def main():
  params = nst_jax.load_vgg19()
  content = image_io.resize(image_io.load_image(cl.asset('chelsea.png')), (64, 96))
  style = image_io.resize(image_io.load_image(cl.asset('starry_night.jpg')), (76, 96))
  targets = objective.make_targets(params, content, [style])
  weights = objective.LossWeights(1.0, 100.0, 0.0)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 64, 96, 3)).astype(np.float32))
  vg = jax.jit(jax.value_and_grad(lambda p, c: objective.total_loss(p[0], *c)))
  v1, g1 = vg(x, (params, targets, weights))
  mesh = sharding.make_mesh(0, batch=1)
  xs = sharding.place(x, mesh, x.shape[1:])
  cs = sharding.replicate((params, targets, weights), mesh)
  v8, g8 = vg(xs, cs)
  hlo = vg.lower(xs, cs).compile().as_text()
  opt = optim.make_optimizer('lbfgs')
  run = optim.make_chunk_fn(lambda p, s, t: objective.total_loss(p, s[0], t, s[1]), opt, 2,
                            mesh)
  state = sharding.place(optim.init_state(opt, x), mesh, x.shape[1:])
  state, _ = run(state, (sharding.replicate((params, weights), mesh),
                         sharding.place(jax.tree.map(lambda a: a[None], targets), mesh)),
                 jnp.int32(2))
  # (a fixed memory limit: the plan of 8 CPU devices must not depend on the
  # RAM that other tests, run in parallel, hold at the time)
  kw = dict(sizes=(96,), steps=(5,), params=params, quiet=True, memory_limit_gb=12)
  single = nst_jax.stylize(cl.asset('chelsea.png'), cl.asset('starry_night.jpg'), devices=1, **kw)
  multi = nst_jax.stylize(cl.asset('chelsea.png'), cl.asset('starry_night.jpg'), devices=0, **kw)
  # Too short for bands (relu5_1 maps of 2 rows: sharding.MIN_BAND_FEATURE_ROWS):
  # the plan keeps such a stage off the bands (per stage: a later, taller one
  # has them), so this one-stage run is one device's, the same bits.
  from nst_jax import api, plan as plan_lib
  def stage_meshes(**over):
    over.setdefault('steps', (1,) * len(over['sizes']))
    p = plan_lib.make_plan(cl.validate(api.make_config(devices=0, **over)))
    return [[list(plan_lib.stage_mesh(ph, st)) for st in ph.stages] for ph in p.phases]
  planned = {'tall': stage_meshes(sizes=(96,)), 'two_stages': stage_meshes(sizes=(48, 96)),
             'short_batch': stage_meshes(sizes=(48,), content=folder_of_two())}
  short_kw = dict(kw, sizes=(48,), steps=(3,))
  short_single = nst_jax.stylize(cl.asset('chelsea.png'), cl.asset('starry_night.jpg'),
                                 devices=1, **short_kw)
  short_multi = nst_jax.stylize(cl.asset('chelsea.png'), cl.asset('starry_night.jpg'),
                                devices=0, **short_kw)
  meshes = [list(sharding.mesh_shape(0, b)) for b in (1, 2, 4, 8, 16, 12)]
  # Tiled over 8 devices: the tiles divided among the 'h' devices.
  small = dict(kw, content_layers=('relu2_2',), style_layers=('relu1_1', 'relu2_1'),
               log_every=5)
  tiled_single = nst_jax.stylize(cl.asset('chelsea.png'), cl.asset('starry_night.jpg'),
                                 devices=1, tile=0, **small)
  tiled_multi = nst_jax.stylize(cl.asset('chelsea.png'), cl.asset('starry_night.jpg'),
                                devices=0, tile=16, **small)
  from nst_jax import engine, tiling
  t2 = objective.make_targets(params, content, [style], content_layers=('relu2_2',),
                              style_layers=('relu1_1', 'relu2_1'))
  loss8, _ = engine._loss_fns(16, mesh, ())       # vgg_options as (name, value) pairs
  vg8 = jax.jit(jax.value_and_grad(lambda p: loss8(p, sharding.replicate((params, weights), mesh),
                                                   sharding.replicate(t2, mesh))))
  vt, gt = vg8(sharding.place(x[0], mesh, x.shape[1:], batched=False))
  vu, gu = jax.value_and_grad(lambda p: objective.total_loss(p, params, t2, weights))(x[0])
  # A multi-pass clip of 8 frames: pass 1 one batch (mesh b=8 x h=1: a frame
  # per device), pass 2 its even and odd frames (4 each: b=1 x h=8, bands),
  # the temporal term on.
  clip = os.path.join(os.environ['WORK'], 'clip')
  os.makedirs(clip, exist_ok=True)
  cat = image_io.load_image(cl.asset('chelsea.png'))
  wide = image_io.resize(cat, (64, 96 + 14))
  for k in range(8):
    image_io.save_image(os.path.join(clip, f'{k}.png'), wide[:, 2 * k:2 * k + 96])
  clip_kw = dict(kw, steps=(3,), clip=True, passes=2, pass_steps=2)
  clip_single = nst_jax.stylize(clip, cl.asset('starry_night.jpg'), devices=1, **clip_kw)
  clip_multi = nst_jax.stylize(clip, cl.asset('starry_night.jpg'), devices=0, **clip_kw)
  np.savez(os.path.join(os.environ['WORK'], 'outputs.npz'),   # for tools/isa_spread.py
           run_single=single, run_multi=multi, tiled_run_single=tiled_single,
           tiled_run_multi=tiled_multi, clip_single=np.stack(clip_single),
           clip_multi=np.stack(clip_multi))
  print(json.dumps({
      'devices': jax.device_count(),
      'state_is_batched': list(state.pixels.shape),
      'loss_rel': float(abs(v8 - v1) / abs(v1)),
      'grad_rel': float(jnp.linalg.norm(g8 - g1) / jnp.linalg.norm(g1)),
      'grad_sharding': str(g8.sharding.spec),
      'state_sharding': str(state.pixels.sharding.spec),
      'halo_exchange': 'collective-permute' in hlo,
      'all_reduce': 'all-reduce' in hlo,
      'run_max_diff': float(np.abs(single - multi).max()),
      'run_mean_diff': float(np.abs(single - multi).mean()),
      'run_shape': list(multi.shape),
      'planned_meshes': planned,
      'short_shape': list(short_multi.shape),
      'short_equal': bool(np.array_equal(short_single, short_multi)),
      'meshes': meshes,
      'tiled_tiles': tiling.make_tiling((64, 96), 16, t2.layers).count,
      'tiled_loss_rel': float(abs(vt - vu) / abs(vu)),
      'tiled_grad_rel': float(jnp.linalg.norm(gt - gu) / jnp.linalg.norm(gu)),
      'tiled_run_max_diff': float(np.abs(tiled_single - tiled_multi).max()),
      'tiled_run_mean_diff': float(np.abs(tiled_single - tiled_multi).mean()),
      'clip_frames': len(clip_multi),
      'clip_max_diff': max(float(np.abs(a - b).max()) for a, b in zip(clip_single, clip_multi)),
      'clip_mean_diff': max(float(np.abs(a - b).mean())
                            for a, b in zip(clip_single, clip_multi)),
  }))


if __name__ == '__main__':
  main()
