"""Tiny config for tests: a few steps of a tiny ResNet at 32 px."""

import ml_collections

from configs import mimic


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """``variant`` is a method variant of ``configs/mimic.py`` (default ``mimic``); this config
  is on the synthetic data, so a ``synthetic`` part (as ``mimic_jax.sweep`` adds) is accepted
  and changes nothing; a ``reflacx`` part puts it on a tiny synthetic REFLACX tree."""
  parts = [p for p in (variant or 'mimic').split(',') if p]
  method = ','.join(p for p in parts if p not in ('synthetic', 'reflacx'))
  c = mimic.get_config(f'{method or "mimic"},synthetic')
  c.data.data_dir = 'data/test/tfds'
  c.data.manual_dir = 'data/test/physionet'
  c.data.synthetic.num_images = 40
  c.data.synthetic.scale = 0.36
  c.data.synthetic.multi_reader_share = 1.0  # every test image has a reader-ceiling row
  c.model.width = 8
  c.batch_size = 8
  c.num_train_steps = 4
  c.checkpoint_every_steps = 2
  c.log_every_steps = 1
  c.mimic.disc_hidden = 8
  c.mimic.post.pool = 8
  c.evaluation.probe_steps = 100
  c.data.threads = 1
  c.data.prefetch = 2
  if 'reflacx' in parts:  # a tiny synthetic REFLACX tree instead
    mimic.synthetic_reflacx_data(c)
    c.data.data_dir = 'data/test_reflacx/tfds'
    c.data.manual_dir = 'data/test_reflacx/physionet'
    c.data.synthetic_reflacx.phase_images = (3, 3, 24)
    c.data.synthetic_reflacx.scale = 0.36
  return c
