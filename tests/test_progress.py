"""The loss log's replay on resume and the loss plot's curves."""

import numpy as np
from PIL import Image

from nst_jax import optim, progress


def _metrics(losses):
  losses = np.asarray(losses, np.float32)[:, None]
  return optim.StepMetrics(losses, np.ones_like(losses, np.int32),
                           np.ones(len(losses), bool))


def test_plot_has_a_curve_per_term_and_marks_stages(tmp_path):
  stages = [((10, 10), 4, 1), ((20, 20), 2, 1)]
  r = progress.Reporter(stages, str(tmp_path / 'log.jsonl'), quiet=True)
  terms = {'content': 1.0, 'style': 5.0, 'tv': 0.1, 'total': 6.1}
  r.stage_start(0, 0.1, 0)
  r.chunk(0, 0, None, _metrics([9, 8]), terms)
  r.chunk(0, 2, None, _metrics([7, 6.5]), terms)
  r.stage_start(1, 0.1, 0)
  r.chunk(1, 0, None, _metrics([6, 5]), terms)
  r.close()
  labels = progress.plot_losses(str(tmp_path / 'p.png'), r)
  assert labels == ['total (every step)', 'content', 'style', 'tv',
                    'stage 1: 10x10', 'stage 2: 20x20']
  assert Image.open(tmp_path / 'p.png').size == (900, 450)
  # Replayed from the log, a resumed run's reporter draws the same history.
  import json
  records = [json.loads(l) for l in open(tmp_path / 'log.jsonl')]
  again = progress.Reporter(stages, None, quiet=True, previous=records)
  again.stage_skipped(0)
  again.stage_start(1, 0.1, resumed_at=2)
  assert again.history == r.history
  assert again.terms_history == r.terms_history
