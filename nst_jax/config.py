"""The run configuration: defaults, validation and normalisation.

Every field can be overridden from the shell as ``--config.FIELD=VALUE``
(tuples as ``--config.sizes=256,512``; several styles as
``--config.styles=a.jpg,b.jpg``) or from Python as ``stylize(...,
FIELD=VALUE)``. :func:`validate` turns a ConfigDict into a checked
:class:`RunSpec`; every problem is one :class:`NSTError` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import os

import ml_collections

from nst_jax import color
from nst_jax import flow
from nst_jax import layer_masks
from nst_jax import image_io
from nst_jax import mask_io
from nst_jax import networks
from nst_jax import objective
from nst_jax import vgg
from nst_jax import video_io
from nst_jax.errors import NSTError
from nst_jax.losses import NORMALIZATIONS, STYLE_STATISTICS

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets')
OPTIMIZERS = ('lbfgs', 'adam')
MODES = ('transfer', 'scale_mix')
JOBS = ('optimize', 'fast_train', 'fast_apply')
# Colour controls a fast network can be trained with (luminance_swap is an
# optimisation-only post-process).
FAST_COLOR_CONTROLS = ('none', 'luminance', 'histogram')
FRAME_INITS = ('warped', 'previous', 'content')
TEMPORAL_WEIGHT = 1e3                  # lambda_t default (measured: WORKSPACE.md "Video")
FRAME_STEPS = 50                       # later frames' steps (measured: WORKSPACE.md "Video")
PASS_STEPS = 25                        # multi-pass: steps of each pass after the first
PASS_BLEND = 1.0                       # multi-pass: delta of the start's blend (the paper's code)
DEMO_MODEL = 'fast_demo'               # bundled model dir in nst_jax/assets
# Tuple fields whose values are names or paths: on the command line they are
# split on commas by nst_jax.main (so absolute paths and spaces work; a
# comma inside a path does not).
STRING_LIST_FIELDS = ('styles', 'style_guidance', 'content_layers', 'style_layers',
                      'scale_layers')


def asset(name: str) -> str:
  """Path of a bundled demo image (see nst_jax/assets/PROVENANCE.md)."""
  return os.path.join(ASSETS, name)


def get_default_config() -> ml_collections.ConfigDict:
  """Gatys et al. 2016 defaults, coarse-to-fine 256 -> 512 px, L-BFGS."""
  c = ml_collections.ConfigDict()
  # Inputs.
  c.content = asset('chelsea.png')     # content image path, or a folder (batch)
  c.styles = (asset('starry_night.jpg'),)  # one or more style image paths
  c.style_blend_weights = ()           # per style; () = equal; normalised to sum 1
  c.weights = ''                       # converted VGG19 .npz; '' = cache / fetch
  c.network = 'original'               # 'original' (Caffe VGG19) | 'normalized'
  #                                      (Gatys: mean activation 1; nst_jax/networks.py)
  c.max_input_pixels = image_io.DEFAULT_MAX_PIXELS  # decompression-bomb guard
  # Coarse-to-fine schedule: long side in pixels and steps, per stage.
  c.sizes = (256, 512)                 # or 'auto' / 'auto,1024': sqrt(2) steps from
  #                                      128 px up to the final long side (512 if omitted)
  c.steps = (150, 50)                  # one value = same for every stage; with
  #                                      sizes=auto two values = first stage, each later one
  c.style_scale = 1.0                  # style long side = content long side * this
  # Model and losses (see nst_jax/losses.py for the formulas).
  c.pooling = 'max'                    # 'max' | 'avg'
  c.content_layers = objective.PAPER_CONTENT_LAYERS
  c.content_layer_weights = ()         # () = equal; normalised to sum 1
  c.style_layers = objective.PAPER_STYLE_LAYERS
  c.style_layer_weights = ()           # () = equal; normalised to sum 1
  c.content_weight = 1.0               # alpha
  c.style_weight = 1e2                 # beta
  c.tv_weight = 0.0                    # gamma
  c.normalization = 'relative'         # 'relative' | 'gatys'
  c.style_statistic = 'gram'           # 'gram' (Gatys) | 'w2': 2-Wasserstein distance
  #                                      between the features' Gaussians (mean, cov)
  # Optimisation.
  c.optimizer = 'lbfgs'                # 'lbfgs' (zoom line search) | 'adam'
  c.learning_rate = 0.02               # Adam only; L-BFGS uses its line search
  c.average_decay = 0.0                # Adam only: EMA of the iterates (bias-corrected),
  #                                      what a stage hands on and writes; 0 = off
  c.lbfgs_memory = 10                  # L-BFGS history length
  c.tile = 'auto'                      # 'auto' | '0' (off) | tile side in px: exact tiled
  #                                      evaluation when a stage does not fit in memory
  c.memory_limit_gb = 0.0              # memory the plan may use per device; 0 = the
  #                                      accelerator's, or 40% of available RAM on CPU
  c.remat = 'none'                     # 'none' | 'block': recompute VGG blocks in backward
  c.activation_dtype = 'float32'       # 'float32' | 'bfloat16' activations
  c.init = 'content'                   # 'content' | 'noise' | 'style' | image path
  c.seed = 0
  # Spatial control (Gatys et al. 2017, sec. 4); see nst_jax/layer_masks.py.
  c.content_guidance = ''              # '' = off | labels.png | a.png+b.png |
  #                                      halves_x | halves_y | disc[:r] | horizon[:h]
  c.style_guidance = ()                # per style, same forms; () or 'whole' =
  #                                      the whole style image for every region
  c.region_styles = ()                 # per region, its style's index; () = auto
  c.region_weights = ()                # lambda_r per region; () = equal
  c.guidance_mode = 'simple'           # 'simple' | 'inside' | 'all'
  c.guidance_extra = 0                 # extra erosion (<0) / dilation (>0), cells
  c.guided_statistic = 'gram'          # 'gram' (guided Grams) | 'mean' (feature means)
  c.global_style_weight = 0.0          # lambda_global: unguided Gram term, guided runs
  # Colour control (sec. 5); see nst_jax/color.py.
  c.color_control = 'none'             # 'none' | 'luminance' | 'luminance_swap' | 'histogram'
  c.histogram_mode = 'cholesky'        # 'cholesky' | 'eigen' | 'ot'
  # Scale control (sec. 6).
  c.mode = 'transfer'                  # 'transfer' | 'scale_mix' (write the mixed style)
  c.scale_fine_style = ''              # style A: its fine scale ...
  c.scale_coarse_style = ''            # ... on style B's coarse scale (both set = on)
  c.scale_layers = ('relu1_1', 'relu2_1')  # layers matched to A's Grams
  c.scale_size = 512                   # long side of the mixed style
  c.scale_steps = 200
  c.scale_color_match = True           # B colour-matched to A first
  c.style_layer_styles = ()            # naive scale mix: per style layer, style index
  # Reporting and outputs (relative to the workdir).
  c.log_every = 10                     # steps per compiled chunk / progress line
  c.save_every = 0                     # intermediates every N steps; 0 = off
  c.output = 'final.png'
  c.output_bits = 8                    # 8, or 16 for .png / .tif
  c.tensorboard = True                 # TensorBoard event files in the workdir (losses,
  #                                      images, config); see nst_jax/summaries.py
  # Posters: a sheet and a DPI derive the final size and the stages.
  c.poster = ''                        # 'A2', 'A0'...'A6', 'B1'...'B4', 'letter', ...
  c.print_size = ''                    # or '60x40cm' / '24x18in' / '600x400mm'
  c.dpi = 0.0                          # written into the file; needed by poster
  c.poster_start = 512                 # long side of the first poster stage
  # Devices: this many (0 = all visible); images of a batch go to different
  # devices, one image is split into bands of rows over the rest.
  c.devices = 1
  c.batch_size = 0                     # optimize, content folder: images per compiled
  #                                      batch (0 = all); fast_train: crops per
  #                                      training step (0 = 4)
  # Preemption safety (CLI runs with a workdir); see nst_jax/checkpoint.py.
  c.checkpoint_every = 0               # steps; 0 = at stage ends and on signals
  c.resume = True                      # continue from the workdir's checkpoint
  c.compilation_cache = True           # JAX persistent cache in the cache dir
  # Fast style transfer networks (Gatys et al. 2017, sec. 7; Johnson et al.
  # 2016); see nst_jax/fast. The fields a trained network depends on are
  # nst_jax.fast.train.TRAINING_FIELDS; training also reads log_every,
  # save_every, checkpoint_every and resume; content is the sample grid's
  # first image.
  c.job = 'optimize'                   # 'optimize' | 'fast_train' | 'fast_apply'
  c.train_images = ''                  # fast_train: a folder of content photos
  c.train_size = 256                   # fast_train: side of the random crops, px
  c.train_steps = 40000                # fast_train: Adam steps
  c.net_width = 32                     # channels of the network's first conv
  c.net_res_blocks = 5                 # residual blocks at 1/4 resolution
  c.model = ''                         # fast_apply: a trained workdir; '' = bundled demo
  # Video (Ruder et al. 2016; nst_jax/flow.py): content = a video file (.mp4 ...),
  # or a folder of frames with clip=True -> final.mp4 + frames/ in the workdir.
  c.clip = False                       # a content folder is one clip's frames (name
  #                                      order), not a batch of photos
  c.temporal_weight = TEMPORAL_WEIGHT  # lambda_t: temporal loss on the pixels the flow
  #                                      says are reliable; 0 = frames independent
  c.temporal_frames = (1,)             # earlier frames j in it: (1,) short-term,
  #                                      (1, 2, 4) long-term (closest-first weights)
  c.frame_init = 'warped'              # frames after the first: 'warped' (previous
  #                                      result along the flow) | 'previous' | 'content'
  c.frame_steps = FRAME_STEPS          # steps of each later frame (final size only)
  c.flow = 'dis_medium'                # optical flow: dis_medium | dis_fast |
  #                                      dis_ultrafast | farneback (OpenCV)
  c.frame_rate = 0.0                   # fps of a frame folder (0 = 25), or a file's override
  c.max_frames = 0                     # only the first N frames; 0 = all
  # Ruder et al.'s multi-pass algorithm (passes > 1): pass 1 stylises every
  # frame as a still (batch_size frames per batch, 0 = all at once, sharded
  # over the devices); each later pass starts each frame from its latest
  # result blended with its neighbours' (t-1, t+1) warped along the flow and
  # adds the temporal loss against them: even frames as a batch, then odd.
  c.passes = 1                         # 1 = the single-pass algorithm above
  c.pass_steps = PASS_STEPS            # steps of each pass after the first
  c.pass_blend = PASS_BLEND            # delta: start = (own + d*sum c*warped) / (1 + d*sum c)
  c.temporal_from_pass = 2             # the temporal loss in this pass and after
  c.pass_order = 'red_black'           # 'red_black' | 'jacobi' | 'sequential'
  return c


@dataclasses.dataclass(frozen=True)
class Stage:
  long_side: int
  steps: int


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """What a run optimises: layers, weights, normalisation (see losses.py)."""
  content_layer_weights: dict          # layer -> v_l (sum 1); {} = no content term
  style_layer_weights: dict            # layer -> w_l (sum 1)
  style_blend: tuple                   # per style, b_s (sum 1)
  layer_styles: dict                   # naive scale mix: layer -> style index
  content_weight: float                # alpha
  style_weight: float                  # beta
  tv_weight: float                     # gamma
  normalization: str
  pooling: str
  statistic: str                       # guided targets: 'gram' | 'mean' | 'w2'
  global_style_weight: float           # factor on the unguided Gram term
  style_statistic: str = 'gram'        # style targets: 'gram' | 'w2'
  temporal_weight: float = 0.0         # lambda_t (video frames after the first)

  def style_options(self) -> dict:
    """This loss's keyword arguments of :func:`nst_jax.objective.style_targets`
    (the one place a new style option is passed on from the config)."""
    return dict(style_blend=self.style_blend, normalization=self.normalization,
                pooling=self.pooling, layer_styles=self.layer_styles,
                global_weight=self.global_style_weight,
                style_statistic=self.style_statistic)


@dataclasses.dataclass(frozen=True)
class GuidanceSpec:
  """Spatial control: masks, region -> style, region weights, propagation."""
  content: str                         # guidance form or a folder of masks
  styles: tuple                        # per style, a guidance form ('whole')
  regions: int                         # R
  region_styles: tuple                 # per region, its style index
  region_weights: tuple                # lambda_r, summing to 1
  mode: str                            # 'simple' | 'inside' | 'all'
  extra: int


@dataclasses.dataclass(frozen=True)
class ScaleMixSpec:
  """Scale control: style A's fine scale on style B's coarse scale."""
  fine: object                         # A: path or array
  coarse: object                       # B
  layers: tuple
  size: int
  steps: int
  color_match: bool


@dataclasses.dataclass(frozen=True)
class FastSpec:
  """Fast networks: training data and schedule, architecture, the model to apply."""
  train_images: str                    # fast_train: folder of photos ('' for apply)
  train_size: int                      # crop side, px
  train_steps: int
  batch_size: int                      # crops per step (resolved: 0 -> 4)
  width: int
  res_blocks: int
  model: str                           # fast_apply: model dir (resolved)


@dataclasses.dataclass(frozen=True)
class VideoSpec:
  """A clip as content: its frames, the temporal loss and the later frames' runs."""
  path: str                            # the video file or the frame folder
  info: object                         # video_io.ClipInfo (frames, hw, rate, audio, paths)
  temporal_frames: tuple               # earlier frames j, increasing
  frame_init: str                      # 'warped' | 'previous' | 'content'
  frame_steps: int
  flow: str
  passes: int = 1                      # > 1: the multi-pass algorithm
  pass_steps: int = PASS_STEPS
  pass_blend: float = PASS_BLEND
  temporal_from_pass: int = 2
  pass_order: str = 'red_black'


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A validated, normalised configuration (built by :func:`validate` only)."""
  content: object                      # path, array, or a folder of images
  styles: tuple                        # paths or arrays
  loss: LossSpec
  guidance: GuidanceSpec | None
  scale_mix: ScaleMixSpec | None
  stages: tuple                        # Stage per coarse-to-fine stage
  optimizer: str
  learning_rate: float
  lbfgs_memory: int
  init: str
  seed: int
  style_scale: float
  color_control: str
  histogram_mode: str
  mode: str
  poster: tuple                        # (poster, print_size, start) or ()
  dpi: float
  output: str
  output_bits: int
  log_every: int
  save_every: int
  weights: str
  network: str
  max_input_pixels: int
  batch_size: int
  tile: object                         # 'auto' or an int (0 = off)
  memory_limit_gb: float
  devices: int
  remat: str
  activation_dtype: str
  checkpoint_every: int
  resume: bool
  compilation_cache: bool
  tensorboard: bool = True
  average_decay: float = 0.0           # Adam's iterate averaging (0 = off)
  job: str = 'optimize'                # 'optimize' | 'fast_train' | 'fast_apply'
  fast: FastSpec | None = None         # set for the fast_* jobs
  video: VideoSpec | None = None       # set when the content is a clip

  @property
  def batch(self) -> bool:
    """True when ``content`` is a folder of images (batch mode; not a clip)."""
    return (self.video is None and isinstance(self.content, (str, os.PathLike))
            and os.path.isdir(self.content))

  @property
  def vgg_options(self) -> dict:
    """``remat`` and ``activation_dtype`` for the loss's VGG forward
    (:func:`nst_jax.vgg_features`); targets are computed without them."""
    return dict(remat=self.remat, activation_dtype=self.activation_dtype)


def _split(values) -> tuple:
  """('a,b', 'c') -> ('a', 'b', 'c'); a lone string, number or array -> 1-tuple."""
  if isinstance(values, (str, os.PathLike, int, float)) or hasattr(values, 'shape'):
    values = (values,)
  out = []
  for v in values:
    if isinstance(v, str):
      out += [p.strip() for p in v.split(',') if p.strip()]
    else:
      out.append(v)
  return tuple(out)


def _number(field, value, *, positive=False) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError):
    raise NSTError(f'config.{field} must be a number, got {value!r}') from None
  if not math.isfinite(x):
    raise NSTError(f'config.{field} must be finite, got {value!r}')
  if x < 0 or (positive and x == 0):
    raise NSTError(f'config.{field} must be {"positive" if positive else "non-negative"}, '
                   f'got {value!r}')
  return x


def _int(field, value, minimum) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
    raise NSTError(f'config.{field} must be an integer, got {value!r}')
  if value < minimum:
    raise NSTError(f'config.{field} must be >= {minimum}, got {value!r}')
  return int(value)


def _flag(field, value) -> bool:
  if not isinstance(value, bool):
    raise NSTError(f'config.{field} must be True or False, got {value!r}')
  return bool(value)


def normalized_weights(field: str, weights, n: int) -> tuple[float, ...]:
  """Validates non-negative finite weights (default equal) and scales to sum 1."""
  weights = tuple(weights) if weights is not None else ()
  if not weights:
    return tuple(1.0 / n for _ in range(n))
  if len(weights) != n:
    raise NSTError(f'config.{field} has {len(weights)} values for {n} entries')
  ws = tuple(_number(field, w) for w in weights)
  total = sum(ws)
  if total <= 0:
    raise NSTError(f'config.{field} must not sum to zero')
  return tuple(w / total for w in ws)


def _layer_weights(kind, layers, weights):
  layers = vgg.check_layers(_split(layers), f'{kind} layer')
  if not layers:
    raise NSTError(f'config.{kind}_layers is empty')
  if len(set(layers)) != len(layers):
    raise NSTError(f'config.{kind}_layers repeats a layer: {layers}')
  ws = normalized_weights(f'{kind}_layer_weights', weights, len(layers))
  return dict(zip(layers, ws))


def validate(config: ml_collections.ConfigDict, *, content=None,
             styles=None) -> RunSpec:
  """Checks every field; returns the normalised :class:`RunSpec`.

  Everything that can be checked before the optimisation starts is checked
  here (mask region counts included), so a bad run stops in seconds.

  Args:
    config: the run's ConfigDict.
    content: overrides ``config.content`` (a path, a folder or an array).
    styles: overrides ``config.styles`` (paths or arrays).
  """
  c = config
  known = set(get_default_config().keys())
  unknown = sorted(set(c.keys()) - known)
  if unknown:
    raise NSTError(f'unknown config field(s): {", ".join(unknown)}')
  content = c.content if content is None else content
  if content is None or (isinstance(content, str) and not content):
    raise NSTError('config.content is empty: give a content image path or folder')
  clip = _flag('clip', c.clip)
  if isinstance(content, str) and os.path.isdir(content) and not clip:
    image_io.list_images(content)                      # raises if it holds none
  styles = _split(c.styles if styles is None else styles)
  if not styles:
    raise NSTError('config.styles is empty: give at least one style image path')
  sizes, steps = _schedule(c.sizes, c.steps)
  init = str(c.init)
  if not init:
    raise NSTError('config.init is empty; use content, noise, style or a path')
  output = str(c.output)
  clip_output = output.lower().endswith('.mp4') and (
      video_io.is_video(content) or bool(c.clip))     # a clip's video; frames as .png
  if not clip_output:
    image_io.check_output_path(output)
  guidance = _guidance(c, styles)
  job = _choice('job', c.job, JOBS)
  fast = _fast(c, job)
  video = _video(c, content, clip, job)
  loss = _loss(c, styles, guided=guidance is not None)
  if video is not None:
    loss = dataclasses.replace(loss, temporal_weight=_number('temporal_weight',
                                                             c.temporal_weight))
  return RunSpec(
      content=content, styles=styles, loss=loss, video=video,
      guidance=guidance, scale_mix=_scale_mix(c),
      stages=tuple(Stage(a, b) for a, b in zip(sizes, steps)),
      optimizer=_choice('optimizer', c.optimizer, OPTIMIZERS),
      learning_rate=_number('learning_rate', c.learning_rate, positive=True),
      average_decay=_average_decay(c),
      lbfgs_memory=_int('lbfgs_memory', c.lbfgs_memory, 1), init=init,
      seed=_int('seed', c.seed, 0),
      style_scale=_number('style_scale', c.style_scale, positive=True),
      color_control=_choice('color_control', c.color_control, color.COLOR_CONTROLS),
      histogram_mode=_choice('histogram_mode', c.histogram_mode, color.HISTOGRAM_MODES),
      mode=_choice('mode', c.mode, MODES),
      poster=_poster(c), dpi=_number('dpi', c.dpi),
      output=output, output_bits=_output_bits(c, output),
      log_every=_int('log_every', c.log_every, 1),
      save_every=_int('save_every', c.save_every, 0),
      weights=str(c.weights or ''),
      network=_choice('network', c.network, networks.NETWORKS),
      max_input_pixels=_int('max_input_pixels', c.max_input_pixels, 1),
      batch_size=_int('batch_size', c.batch_size, 0),
      tile=_tile(c.tile), memory_limit_gb=_number('memory_limit_gb', c.memory_limit_gb),
      devices=_int('devices', c.devices, 0),
      remat=_choice('remat', c.remat, vgg.REMATS),
      activation_dtype=_choice('activation_dtype', c.activation_dtype,
                               vgg.ACTIVATION_DTYPES),
      checkpoint_every=_int('checkpoint_every', c.checkpoint_every, 0),
      resume=bool(c.resume), compilation_cache=bool(c.compilation_cache),
      tensorboard=_flag('tensorboard', c.tensorboard), job=job, fast=fast)


AUTO_START = 128                       # sizes=auto: the first stage's long side
AUTO_FINAL = 512                       # ... and the last one's if not given
AUTO_RATIO = math.sqrt(2.0)


def geometric_sizes(final: int, start: int = AUTO_START,
                    ratio: float = AUTO_RATIO) -> tuple[int, ...]:
  """Long sides from ``start`` up to ``final`` in steps of ``ratio``
  (``sizes=auto``); a last step up of less than 1.15x is dropped.

  Example:
    >>> geometric_sizes(512)
    (128, 181, 256, 362, 512)
  """
  sizes, k = [], 0
  while round(start * ratio ** k) < final:
    sizes.append(round(start * ratio ** k))
    k += 1
  if sizes and final < sizes[-1] * 1.15:
    sizes.pop()
  return tuple(sizes) + (final,)


def _schedule(sizes_field, steps_field) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """``(sizes, steps)``: explicit lists, or ``auto[,FINAL]`` with its steps rule."""
  parts = _split(sizes_field)
  auto = bool(parts) and isinstance(parts[0], str) and parts[0].lower() == 'auto'
  if auto:
    if len(parts) > 2:
      raise NSTError(f'config.sizes=auto takes at most one final size (auto,1024), '
                     f'got {sizes_field!r}')
    final = _int('sizes', _as_int(parts[1]), 16) if len(parts) == 2 else AUTO_FINAL
    sizes = geometric_sizes(final, min(AUTO_START, final))
  else:
    sizes = tuple(_int('sizes', _as_int(s), 16) for s in parts)
  steps = tuple(_int('steps', _as_int(s), 0) for s in _split(steps_field))
  if not sizes:
    raise NSTError('config.sizes is empty')
  if len(steps) == 1:
    steps = steps * len(sizes)
  elif auto and len(steps) == 2:                # first stage, every later stage
    steps = steps[:1] + steps[1:] * (len(sizes) - 1)
  if len(steps) != len(sizes):
    raise NSTError(f'config.steps has {len(steps)} values for {len(sizes)} sizes'
                   + (f' {sizes} (sizes=auto takes one or two)' if auto else ''))
  if any(b < a for a, b in zip(sizes, sizes[1:])):
    raise NSTError(f'config.sizes must not decrease (coarse to fine): {sizes}')
  return sizes, steps


def _as_int(value):
  """``'512'`` -> 512 (a size written in a string list); anything else as it is."""
  if isinstance(value, str):
    try:
      return int(value.strip())
    except ValueError:
      return value
  return value


def _video(c, content, clip: bool, job: str) -> VideoSpec | None:
  """A clip as content (a video file, or a frame folder with clip=True), else None."""
  is_file = video_io.is_video(content)
  folder = isinstance(content, str) and os.path.isdir(content)
  if clip and not folder and not is_file:
    raise NSTError(f'config.clip=True needs a folder of frames or a video file as '
                   f'config.content, got {content!r}')
  frames_j = tuple(sorted({_int('temporal_frames', _as_int(j), 1)
                           for j in _split(c.temporal_frames)}))
  init = _choice('frame_init', c.frame_init, FRAME_INITS)
  steps = _int('frame_steps', c.frame_steps, 1)
  flow_method = _choice('flow', c.flow, flow.FLOW_METHODS)
  rate = _number('frame_rate', c.frame_rate)
  max_frames = _int('max_frames', c.max_frames, 0)
  _number('temporal_weight', c.temporal_weight)
  passes = _int('passes', c.passes, 1)
  pass_steps = _int('pass_steps', c.pass_steps, 1)
  blend = _number('pass_blend', c.pass_blend)
  temporal_from = _int('temporal_from_pass', c.temporal_from_pass, 2)
  if passes > 1 and frames_j != (1,):
    raise NSTError('config.passes > 1 compares each frame with its neighbour only; '
                   'use temporal_frames=1 (long-term terms are for passes=1)')
  if not frames_j:
    raise NSTError('config.temporal_frames is empty; use 1 (or 1,2,4)')
  if frames_j[-1] > video_io.MAX_FRAMES_BACK:
    raise NSTError(f'config.temporal_frames reaches {frames_j[-1]} frames back; at most '
                   f'{video_io.MAX_FRAMES_BACK}')
  if not (is_file or (clip and folder)):
    return None
  if job == 'fast_train':
    raise NSTError('config.content is a clip; fast_train trains on train_images '
                   '(a folder of photos): give it a still content image')
  if str(c.poster or '') or str(c.print_size or '') or c.mode == 'scale_mix':
    raise NSTError('a clip as config.content works with mode=transfer without poster / '
                   'print_size')
  if c.color_control == 'luminance_swap':
    raise NSTError("config.color_control='luminance_swap' recolours each result after "
                   'its optimisation, so a clip\'s temporal loss would compare other '
                   "colours; use 'luminance' (optimised in luminance) for a clip")
  max_pixels = _int('max_input_pixels', c.max_input_pixels, 1)
  info = video_io.probe(content, max_pixels, rate, max_frames)
  return VideoSpec(path=str(content), info=info, temporal_frames=frames_j,
                   frame_init=init, frame_steps=steps, flow=flow_method,
                   passes=passes, pass_steps=pass_steps, pass_blend=blend,
                   temporal_from_pass=temporal_from,
                   pass_order=_choice('pass_order', c.pass_order,
                                      ('jacobi', 'red_black', 'sequential')))


def _average_decay(c) -> float:
  decay = _number('average_decay', c.average_decay)
  if decay >= 1:
    raise NSTError(f'config.average_decay must be below 1 (an EMA), got {decay}')
  if decay and c.job != 'optimize':
    raise NSTError(f'config.average_decay is for the optimisation (job=optimize); a '
                   f'fast network (job={c.job}) trains without it: leave it 0')
  if decay and c.optimizer != 'adam':
    raise NSTError('config.average_decay averages Adam\'s iterates; set '
                   '--config.optimizer=adam or leave it 0')
  return decay


def _fast(c, job: str) -> FastSpec | None:
  """Validated fast-network fields (None for the optimisation)."""
  width = _int('net_width', c.net_width, 1)
  res_blocks = _int('net_res_blocks', c.net_res_blocks, 0)
  train_size = _int('train_size', c.train_size, 32)
  train_steps = _int('train_steps', c.train_steps, 1)
  if job == 'optimize':
    return None
  if str(c.scale_fine_style or '') or str(c.poster or '') or str(c.print_size or ''):
    raise NSTError(f'config.job={job}: scale mixing and posters are optimisation-only; '
                   'unset scale_fine_style/scale_coarse_style/poster/print_size')
  if c.devices != 1:
    raise NSTError(f'config.devices must be 1 for job={job} (one device)')
  train_images, model = '', ''
  if job == 'fast_train':
    train_images = str(c.train_images or '')
    if not train_images or not os.path.isdir(train_images):
      raise NSTError(f'config.train_images must be a folder of content photos, '
                     f'got {train_images!r}')
    try:
      image_io.list_images(train_images)
    except NSTError:
      raise NSTError(f'config.train_images: {train_images} holds no images '
                     f'({", ".join(image_io.IMAGE_EXTENSIONS)})') from None
    if c.color_control not in FAST_COLOR_CONTROLS:
      raise NSTError(f'config.color_control must be one of {FAST_COLOR_CONTROLS} for '
                     f'job=fast_train, got {c.color_control!r}')
  else:
    if c.color_control != 'none':
      raise NSTError(f'config.color_control={c.color_control!r}: a fast_apply run takes '
                     'the colour control the model was trained with; leave it none')
    model = str(c.model or '') or asset(DEMO_MODEL)
    if not os.path.isfile(os.path.join(model, 'model.json')):
      raise NSTError(f'config.model: {model} holds no trained model (model.json); '
                     'train one with job=fast_train (configs/fast_train.py)')
  batch = _int('batch_size', c.batch_size, 0) or 4
  return FastSpec(train_images=train_images, train_size=train_size,
                  train_steps=train_steps, batch_size=batch, width=width,
                  res_blocks=res_blocks, model=model)


def _loss(c, styles, guided: bool) -> LossSpec:
  weights = {k: _number(f'{k}_weight', c[f'{k}_weight'])
             for k in ('content', 'style', 'tv')}
  if weights['content'] == weights['style'] == weights['tv'] == 0:
    raise NSTError('config.content_weight, style_weight and tv_weight are all zero')
  style_layer_weights = _layer_weights('style', c.style_layers, c.style_layer_weights)
  layer_styles = {}
  if c.style_layer_styles:
    idx = tuple(_int('style_layer_styles', i, 0) for i in _split(c.style_layer_styles))
    if len(idx) != len(style_layer_weights):
      raise NSTError(f'config.style_layer_styles has {len(idx)} values for '
                     f'{len(style_layer_weights)} style layers')
    if max(idx) >= len(styles):
      raise NSTError(f'config.style_layer_styles names style {max(idx)} but there '
                     f'are {len(styles)} styles (0-based)')
    layer_styles = dict(zip(style_layer_weights, idx))
  content_layer_weights = _layer_weights('content', c.content_layers,
                                         c.content_layer_weights)
  style_statistic = _choice('style_statistic', c.style_statistic, STYLE_STATISTICS)
  return LossSpec(
      content_layer_weights=content_layer_weights if weights['content'] > 0 else {},
      style_layer_weights=style_layer_weights,
      style_blend=normalized_weights('style_blend_weights', c.style_blend_weights,
                                     len(styles)),
      layer_styles=layer_styles,
      content_weight=weights['content'], style_weight=weights['style'],
      tv_weight=weights['tv'],
      normalization=_choice('normalization', c.normalization, NORMALIZATIONS),
      pooling=_choice('pooling', c.pooling, vgg.POOLINGS),
      statistic=_guided_statistic(c, style_statistic, guided),
      style_statistic=style_statistic,
      # In guided runs the plain Gram term is lambda_global; otherwise it is the style loss.
      global_style_weight=(_number('global_style_weight', c.global_style_weight)
                           if guided else 1.0))


def _guided_statistic(c, style_statistic: str, guided_run: bool) -> str:
  """What guided targets compare: W2 runs compare each region's Gaussian."""
  guided = _choice('guided_statistic', c.guided_statistic, ('gram', 'mean'))
  if style_statistic == 'w2' and guided_run:
    if guided == 'mean':
      raise NSTError("config.guided_statistic='mean' compares feature means; "
                     "style_statistic='w2' compares each region's mean and covariance: "
                     "use guided_statistic='gram' with it")
    return 'w2'
  return 'w2' if style_statistic == 'w2' else guided


def _guidance(c, styles) -> GuidanceSpec | None:
  """Validated spatial control (None when content_guidance is off)."""
  mode = _choice('guidance_mode', c.guidance_mode, layer_masks.MODES)
  extra = c.guidance_extra
  if isinstance(extra, bool) or not isinstance(extra, int):
    raise NSTError(f'config.guidance_extra must be an integer, got {extra!r}')
  content = str(c.content_guidance or '')
  if not content:
    return None
  style_guidance = tuple(str(s) for s in _split(c.style_guidance)) or (
      ('whole',) * len(styles))
  if len(style_guidance) != len(styles):
    raise NSTError(f'config.style_guidance has {len(style_guidance)} entries for '
                   f'{len(styles)} styles')
  max_pixels = _int('max_input_pixels', c.max_input_pixels, 1)
  if os.path.isdir(content):
    counts = {mask_io.count_regions(p, max_pixels) for p in image_io.list_images(content)}
    if len(counts) > 1:
      raise NSTError(f'config.content_guidance: the masks in {content} have different '
                     f'numbers of regions {sorted(counts)}')
    regions = counts.pop()
  else:
    regions = mask_io.count_regions(content, max_pixels)
  for i, g in enumerate(style_guidance):
    n = mask_io.count_regions(g, max_pixels)
    if n not in (1, regions):
      raise NSTError(f'config.style_guidance: style {i + 1}\'s guidance {g!r} has {n} '
                     f'regions, the content\'s has {regions}')
  region_styles = tuple(_int('region_styles', i, 0) for i in _split(c.region_styles))
  if not region_styles:
    if len(styles) == 1:
      region_styles = (0,) * regions
    elif len(styles) == regions:
      region_styles = tuple(range(regions))
    else:
      raise NSTError(f'{len(styles)} styles for {regions} regions: set '
                     'config.region_styles (style index per region)')
  if len(region_styles) != regions:
    raise NSTError(f'config.region_styles has {len(region_styles)} values for '
                   f'{regions} regions')
  if max(region_styles) >= len(styles):
    raise NSTError(f'config.region_styles names style {max(region_styles)} but '
                   f'there are {len(styles)} styles (0-based)')
  return GuidanceSpec(
      content=content, styles=style_guidance, regions=regions,
      region_styles=region_styles,
      region_weights=normalized_weights('region_weights', _split(c.region_weights),
                                        regions),
      mode=mode, extra=extra)


def _scale_mix(c) -> ScaleMixSpec | None:
  fine, coarse = str(c.scale_fine_style or ''), str(c.scale_coarse_style or '')
  if bool(fine) != bool(coarse):
    raise NSTError('config.scale_fine_style and scale_coarse_style must be set together')
  if c.mode == 'scale_mix' and not fine:
    raise NSTError('config.mode=scale_mix needs scale_fine_style and scale_coarse_style')
  if c.mode == 'scale_mix' and c.style_statistic != 'gram':
    raise NSTError(f'config.style_statistic={c.style_statistic!r} would do nothing with '
                   'mode=scale_mix: the mix matches Grams (Gatys et al. 2017, sec. 6); '
                   'use mode=transfer with the scale_* styles to transfer the mix with it')
  layers = tuple(vgg.check_layers(_split(c.scale_layers), 'scale layer'))
  size = _int('scale_size', c.scale_size, 16)
  steps = _int('scale_steps', c.scale_steps, 0)
  if not fine:
    return None
  if not layers:
    raise NSTError('config.scale_layers is empty')
  return ScaleMixSpec(fine=fine, coarse=coarse, layers=layers, size=size, steps=steps,
                      color_match=bool(c.scale_color_match))


def _output_bits(c, output) -> int:
  bits = c.output_bits
  if bits not in (8, 16):
    raise NSTError(f'config.output_bits must be 8 or 16, got {bits!r}')
  if bits == 16 and not output.lower().endswith(('.png', '.tif', '.tiff')):
    raise NSTError('config.output_bits=16 needs a .png or .tif output')
  return int(bits)


def _poster(c) -> tuple:
  """(poster, print_size, start) if a physical size is asked for, else ()."""
  poster, print_size = str(c.poster or ''), str(c.print_size or '')
  if not poster and not print_size:
    return ()
  if poster and print_size:
    raise NSTError('set config.poster or config.print_size, not both')
  from nst_jax import poster as poster_lib  # pylint: disable=g-import-not-at-top
  poster_lib.sheet_inches(poster, print_size)          # validates
  if not _number('dpi', c.dpi, positive=True):
    raise NSTError('config.dpi must be positive for a poster')
  return (poster, print_size, _int('poster_start', c.poster_start, 16))


def _tile(value):
  """'auto', or a non-negative tile side (0 = no tiling)."""
  text = str(value).strip().lower()
  if text == 'auto':
    return 'auto'
  try:
    tile = int(text)
  except ValueError:
    tile = -1
  if tile < 0 or (0 < tile < 16):
    raise NSTError(f"config.tile must be 'auto', 0 (off) or a tile side >= 16 px, "
                   f'got {value!r}')
  return tile


def _choice(field, value, options):
  if value not in options:
    raise NSTError(f'config.{field} must be one of {options}, got {value!r}')
  return value
