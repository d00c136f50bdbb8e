"""The model server (``conveyor.serving.app``) and its import-light client (``conveyor.serving.client``).

Nothing is imported here on purpose: the client side must not pay for FastAPI, MLflow or pandas.
"""
