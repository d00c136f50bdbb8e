"""Conveyor: continuous integration and delivery for machine-learning models.

The domain package. It has no Airflow import: every step runs the same in an Airflow task,
a Kubernetes pod, the model server or the ``conveyor`` CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"
