r"""Train a fast style-transfer network (Gatys et al. 2017, sec. 7; Johnson et al. 2016).

Run (from the repository root; MODEL is the workdir the model is written to):

  nst-jax --config=configs/fast_train.py --workdir=MODEL \
    --config.train_images=DIR --config.styles=painting.jpg

The network learns one style (or one style per region) from random crops of
the photos in DIR with the optimisation's own loss (VGG19 relu4_2 content,
relu1_1 ... relu5_1 Grams, TV); Adam, ``log_every`` steps per compiled call,
a sample grid (``MODEL/samples/``) and the model files every ``save_every``
steps, an orbax checkpoint every ``checkpoint_every`` steps and on SIGTERM;
rerunning the command resumes (also after kill -9). Then:

  nst-jax --config=configs/fast_apply.py --config.model=MODEL \
    --config.content=photo.jpg --workdir=OUT

This config is the CPU demo's setting: width 16 (a quarter of the FLOPs of
Johnson's 32), 128-px crops (the style at 2x that, 256 px), batch 4, 1500
steps. The bundled demo model was
made with tools/make_fast_demo.py, which runs this config on the shared
images (see README "Fast networks" for its time and pictures). The paper's
setting on a GPU (a COCO-sized folder, 256-px crops, width 32, 40k steps):

  nst-jax --config=configs/fast_train.py --workdir=MODEL \
    --config.train_images=coco/train2014 --config.styles=painting.jpg \
    --config.train_size=256 --config.net_width=32 --config.train_steps=40000

Controls: ``--config.content_guidance=halves_x
--config.styles=a.jpg,b.jpg`` trains a spatially guided network (one style
per region on that fixed mask; at apply time it takes any mask);
``--config.color_control=luminance`` a luminance network, ``histogram``
matches the style's colours to the photos' first.
"""

from nst_jax.config import get_default_config


def get_config():
  config = get_default_config()
  config.job = 'fast_train'
  config.train_size = 128
  config.batch_size = 4
  config.train_steps = 1500
  config.net_width = 16
  config.learning_rate = 1e-3
  config.style_weight = 10.0           # beta (30 and 100 made texture without content)
  config.style_scale = 2.0             # style at 256 px for 128-px crops
  config.log_every = 10
  config.save_every = 250
  config.checkpoint_every = 100
  return config
