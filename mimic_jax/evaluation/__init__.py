"""Evaluation and reporting: validation during training (``validation.py``), the test-split
evaluation against radiologist gaze (``evaluate.py``), its metrics (``saliency_metrics.py``,
``classification_metrics.py``, ``consistency.py``, ``bootstrap.py``), the Markdown report
(``report.py``) and figures (``figures.py``)."""
