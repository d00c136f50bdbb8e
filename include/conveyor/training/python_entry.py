"""``trainer.kind: python``: the user's own fit function, named by ``trainer.entrypoint``.

The entrypoint ``package.module:function`` is imported from an installed package or from the
project's ``include/`` folder (which this module puts at the end of ``sys.path``, so it never
shadows an installed package). ``include/`` is what the Airflow image copies to every worker, so a
module placed there is importable wherever the train task runs; the shipped examples live in
``include/conveyor_examples``. The function follows :mod:`conveyor.training.interface`; what it
returns goes through the same checks and logging as a built-in trainer's model
(:func:`conveyor.training.fitting.fit_and_log`).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.training.base import EntrypointError, TrainResult
from conveyor.training.fitting import describe_exception, fit_and_log
from conveyor.training.interface import FitFunction

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec

TRAINER = "python"
#: The project's ``include/`` folder (``include/conveyor/training/`` is two levels below it).
INCLUDE_DIR = Path(__file__).resolve().parents[2]


def ensure_include_on_path() -> None:
    """Append ``include/`` to ``sys.path`` (once) so user modules placed there import."""
    include = str(INCLUDE_DIR)
    if INCLUDE_DIR.is_dir() and include not in sys.path:
        sys.path.append(include)


def load_entrypoint(entrypoint: str) -> FitFunction:
    """Import ``package.module:function`` and return the function.

    Raises:
        EntrypointError: malformed, the module (or a module it imports) is missing or fails to
            import, or it has no such callable.
    """
    module_name, sep, attribute = entrypoint.partition(":")
    if not sep or not module_name or not attribute:
        raise EntrypointError(f"trainer entrypoint {entrypoint!r} is not 'package.module:function'")
    ensure_include_on_path()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            raise EntrypointError(
                f"trainer entrypoint {entrypoint!r}: no module {exc.name!r}; put it under {INCLUDE_DIR} "
                "(the include/ folder shipped to every Airflow worker) or install the package that "
                "provides it"
            ) from exc
        raise EntrypointError(
            f"trainer entrypoint {entrypoint!r}: importing {module_name!r} failed: "
            f"{describe_exception(exc)}; install what it imports"
        ) from exc
    except Exception as exc:
        raise EntrypointError(
            f"trainer entrypoint {entrypoint!r}: importing {module_name!r} raised {describe_exception(exc)}"
        ) from exc
    function = getattr(module, attribute, None)
    if function is None:
        raise EntrypointError(
            f"trainer entrypoint {entrypoint!r}: module {module_name!r} ({module.__file__}) has no "
            f"function {attribute!r}"
        )
    if not callable(function):
        raise EntrypointError(
            f"trainer entrypoint {entrypoint!r}: {module_name}.{attribute} is a "
            f"{type(function).__name__}, not a function"
        )
    return function


def train_python(spec: ModelSpec, train_df: pd.DataFrame, eval_df: pd.DataFrame, run_id: str) -> TrainResult:
    """Fit with the spec's ``trainer.entrypoint`` and log the model into run ``run_id``.

    Raises:
        EntrypointError: the entrypoint does not import, or raised (its last frame in the message).
        UnsupportedModelError: it returned neither a fitted Keras model nor a scikit-learn estimator,
            or one of another task (a classifier for a regression spec, a regressor for a
            classification spec, a classifier fitted on labels that are not the encoded classes).
        PredictionContractError: the model's predictions break the task's output contract (e.g. a
            Keras head of the wrong width, scores that are not probabilities).
    """
    entrypoint = spec.trainer.entrypoint
    if entrypoint is None:  # the spec validator requires it; a hand-built spec may still lack it
        raise EntrypointError(f"model {spec.name!r}: trainer.kind 'python' needs trainer.entrypoint")
    fit = load_entrypoint(entrypoint)
    return fit_and_log(spec, fit, train_df, eval_df, run_id, trainer=TRAINER, entrypoint=entrypoint)
