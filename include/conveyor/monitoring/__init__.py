"""Monitoring: feature drift (``drift``), live quality from the prediction log (``live``) and one
monitoring pass with alerts, logged to MLflow (``monitor``). Heavy libraries load inside functions."""
