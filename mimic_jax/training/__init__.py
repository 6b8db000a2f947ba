"""Training: the train state (``state.py``), the jit-compiled step of a method's phase
(``steps.py``), checkpoints (``checkpoints.py``), logs (``metric_writer.py``) and the loop that
ties them to the data and the device mesh (``loop.py``)."""
