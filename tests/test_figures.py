"""The figures people publish: explain's overlays, the report's gallery, the training curves
and the comparison chart; sizes, colour bars, titles and the gallery's stated rule."""

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from mimic_jax.evaluation import figures


def test_the_explanation_figure_keeps_the_aspect_and_states_its_scale():
  """A portrait 300 x 200 image: the panels are drawn at its aspect ratio, one colour scale
  (0 to the largest value of any sub-model's map) with a colour bar that states the sign mode,
  and the title and sub-model titles as given."""
  maps = np.stack([np.full((8, 8), 1.0), np.full((8, 8), 3.0)])
  fig = figures.explanation_figure(
    np.zeros((8, 8)),
    (300, 200),
    maps,
    title='x.jpg: predicted CHF (p=0.70); explained: CHF (p=0.70)',
    explainer='gradient_shap',
    member_titles=['sub-model 1 (p=0.60)', 'sub-model 2 (p=0.80)'],
  )
  image_axes = [ax for ax in fig.axes if ax.get_images()]
  assert [ax.get_title() for ax in image_axes] == [
    'original',
    'ensemble',
    'sub-model 1 (p=0.60)',
    'sub-model 2 (p=0.80)',
  ]
  for ax in image_axes:
    assert ax.get_images()[0].get_extent() == [0, 200, 300, 0] and ax.get_aspect() == 1.0
  heat = image_axes[1].get_images()[1]
  assert heat.get_clim() == (0.0, 3.0)
  np.testing.assert_allclose(heat.get_array(), 2.0)  # the ensemble: the mean of 1 and 3
  (bar,) = [ax for ax in fig.axes if not ax.get_images()]
  assert '|GradientSHAP|' in bar.get_xlabel() and 'one scale' in bar.get_xlabel()
  assert fig._suptitle.get_text().startswith('x.jpg: predicted CHF (p=0.70)')


def test_the_gallery_rule_is_a_seeded_sample_plus_the_worst_and_best():
  kld = np.array([0.5, 2.0, np.nan, 0.1, 1.0, 3.0, 0.7])
  labels = np.array([0, 0, 0, 0, 1, 1, 1])
  rows = figures.gallery_rows(kld, labels, seed=0, sample=1)
  (k0, chosen0), (k1, chosen1) = rows
  assert (k0, k1) == (0, 1)
  picked = [i for i, _ in chosen0]
  assert chosen0[0][1] == 'random' and picked[0] in (0, 1, 2, 3)
  reasons = dict((i, why) for i, why in chosen0[1:])
  assert reasons.get(1, 'worst KLD') == 'worst KLD' and reasons.get(3, 'best KLD') == 'best KLD'
  assert {1, 3} <= set(picked)  # the worst (2.0) and best (0.1) finite KLDs of class 0
  assert rows == figures.gallery_rows(kld, labels, seed=0, sample=1)  # seeded


def test_the_gallery_titles_every_panel_and_has_colour_bars(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  n, s = 6, 16
  data = {
    'image': rng.random((n, s, s, 1)),
    'gaze': rng.random((n, s, s)),
    'fixation_map': rng.random((n, s, s)) < 0.1,
    'label': np.array([0, 0, 0, 1, 1, 1]),
    'scores': np.log(rng.dirichlet(np.ones(3), n)),
    'maps': {'grad_cam': rng.random((2, n, s, s))},
  }
  per_image = {'grad_cam': {'kld': list(rng.random(n)), 'nss': list(rng.random(n))}}
  captured = []
  real_save = figures._save

  def keep(fig, path, dpi, vector=False):
    captured.append(fig)
    real_save(fig, path, dpi, vector)
    fig.canvas.draw()

  monkeypatch.setattr(figures, '_save', keep)
  paths = figures.gallery(data, ['Normal', 'CHF', 'pneumonia'], tmp_path, per_image)
  assert [p.name for p in paths] == ['gallery_Normal.png', 'gallery_CHF.png']
  assert (tmp_path / 'gallery_Normal.svg').exists()
  fig = captured[0]
  titles = [ax.get_title() for ax in fig.axes if ax.get_images()]
  i = [t for t in titles if t.startswith('grad_cam')][0]
  assert 'KLD' in i and 'NSS' in i
  assert any('pred.' in t and '(p=' in t for t in titles)
  bars = [ax for ax in fig.axes if not ax.get_images() and ax.get_visible()]
  assert len(bars) == 2 and 'Grad-CAM' in bars[1].get_xlabel()
  assert 'worst and best by grad_cam KLD' in fig._suptitle.get_text()
  assert Image.open(paths[0]).size[0] >= 900
  plt.close('all')


def test_training_curves_show_the_discriminator_only_when_logged(tmp_path):
  rows = [{'step': s, 'train/loss': 1.0 / s, 'train/disc_ce': 1.1} for s in range(1, 5)]
  figures.training_curves(rows, tmp_path / 'with.png')
  figures.training_curves([{'step': 1, 'train/loss': 1.0}], tmp_path / 'without.png')
  with_disc, without = (Image.open(tmp_path / f).size[0] for f in ('with.png', 'without.png'))
  assert with_disc > 1.8 * without  # two panels (loss, discriminator) against one
  assert (tmp_path / 'with.svg').exists()


def test_the_comparison_chart_says_what_its_bars_are(tmp_path, monkeypatch):
  row = lambda m: {
    k: {'mean': m, 'ci95': [m - 0.1, m + 0.1]} for k in ('information_gain', 'kld', 'nss')
  }
  rows = {'reference: prior': row(0.0), 'baseline': row(0.5)}
  captured = []
  monkeypatch.setattr(figures, '_save', lambda fig, path, dpi, vector=False: captured.append(fig))
  figures.comparison_chart(list(rows), rows, tmp_path / 'c.png', 'grad_cam maps: over 56 images')
  (fig,) = captured
  assert fig._suptitle.get_text() == 'grad_cam maps: over 56 images'
  ig = fig.axes[0]
  assert ig.get_title() == 'IG over the prior (bits) (higher is better)'
  assert [t.get_text() for t in ig.get_xticklabels()] == ['reference: prior', 'baseline']
  plt.close('all')
