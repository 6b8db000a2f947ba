"""Where a run executes: the multi-process start (``distributed.py``), the device mesh
(``mesh.py``) and preemption by SIGTERM (``preemption.py``)."""
