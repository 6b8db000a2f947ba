"""mimic-jax: chest X-ray classifiers whose explanations are used during training.

The package follows the data flow:

- ``data/``: the TFDS build of the dataset -> batches (``mimic_cxr_egd`` lives in
  ``data_builders/``).
- ``models/``: the networks; ``explainers/``: their differentiable explanations.
- ``methods/``: the training methods (``single``, ``ensemble``, ``mimic``, ``gaze``): losses and
  phases.
- ``training/``: the train state, the jit-compiled step, checkpoints, logs, the loop.
- ``evaluation/``: validation, the test-split evaluation against gaze, reports.
- ``runtime/``: processes, the device mesh, preemption; ``tuning/``: backend-specific tuning,
  the one place that knows which backend runs.

Commands: ``main.py`` (train, evaluate), ``python -m mimic_jax.compare`` and
``python -m mimic_jax.convert_weights``.
"""
