"""Example ``trainer.kind: python`` modules, one per framework (see ``docs/TRAINERS.md``).

They live under ``include/`` because that folder is what Conveyor puts on ``sys.path`` for trainer
entrypoints and what the Airflow image ships to every worker::

    trainer:
      kind: python
      entrypoint: conveyor_examples.sklearn_gbm:train   # or conveyor_examples.keras_custom:train
"""
