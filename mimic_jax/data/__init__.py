"""Data glue between the ``mimic_cxr_egd`` TFDS builds and the training step.

- ``prepare.py``: builds (or stages) the configured dataset before a run.
- ``staging.py``: a ``gs://`` data dir read from a local copy.
- ``pipeline.py``: ArrayRecord -> grain -> per-process batches, indexed by step.
"""
