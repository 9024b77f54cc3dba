r"""A clip, temporally consistent (Ruder et al. 2016): frame 1 as a still, each
later frame from the previous result warped by the optical flow, with the
temporal loss on the pixels the flow is sure of.

  nst-jax --config=configs/video.py --workdir=video_out
  nst-jax --config=configs/video.py --config.content=clip.mp4 --workdir=video_out

Writes video_out/final.mp4 (the source's frame rate, its audio copied) and
video_out/frames/NNNNN.png. The bundled clip is the first 24 frames of Big
Buck Bunny (Blender Foundation, CC-BY; nst_jax/assets/PROVENANCE.md).
About 5 min on a 2-core CPU (an estimate from the measured 28.8 s for the
first frame and 12.8 s per later frame at 256x144; WORKSPACE.md "Video").
Expect a Starry Night bunny whose strokes stay put as the camera moves:
temporal error 25x lower than stylising each frame alone (measured on 10
frames), at the same style distance.
"""

from nst_jax import config as config_lib


def get_config():
  c = config_lib.get_default_config()
  c.content = config_lib.asset('bigbuckbunny.mp4')
  c.sizes = (128, 256)
  c.steps = (100, 50)
  c.frame_steps = config_lib.FRAME_STEPS
  c.temporal_weight = config_lib.TEMPORAL_WEIGHT
  c.temporal_frames = (1,)
  c.frame_init = 'warped'
  return c
