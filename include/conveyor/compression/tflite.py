"""TFLite (LiteRT) variants of a Conveyor Keras MLP.

Only the float core is converted: every layer between the ``features`` layer (the preprocessed
vector) and the model's output, whatever the task's head (sigmoid, softmax, linear) and whatever
follows the last Dense layer (a rescaling that de-standardises a regression target, say). String
lookups and the NaN imputation stay out of the ``.tflite`` file (they would need TF Select ops);
``pyfunc_tflite.py`` reproduces them in numpy from ``preprocessing.json`` and builds the task's
output frame from the core's scores.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

from conveyor.config import ModelSpec
from conveyor.errors import PermanentError
from conveyor.training.base import (
    GOLDEN_ROWS_FILE,
    REFERENCE_FILE,
    pinned_requirements,
    write_golden_rows,
)
from conveyor.training.keras_mlp import FEATURES_LAYER, KERAS_FILE, PREPROCESSING_FILE, import_keras

PYFUNC_CODE = Path(__file__).with_name("pyfunc_tflite.py")
TFLITE_FILE = "model.tflite"


class CompressionError(PermanentError, RuntimeError):
    """A compressed variant could not be built from the trained model."""


def float_core(keras_model: Any) -> Any:
    """The sub-model from the preprocessed vector (layer ``features``) to the model's output.

    It takes every layer on the way, so a head after the last Dense layer (softmax, a rescaling
    of a regression target) is part of the core.

    Raises:
        CompressionError: no ``features`` layer, more than one output, or an output that depends on
            the raw inputs other than through ``features`` (the core would be disconnected).
    """
    keras, _ = import_keras()
    try:
        features = keras_model.get_layer(FEATURES_LAYER).output
    except ValueError as exc:
        raise CompressionError(
            f"Keras model {keras_model.name!r} has no layer {FEATURES_LAYER!r}; only models built by "
            "conveyor.training.keras_mlp can be converted to TFLite."
        ) from exc
    outputs = keras_model.outputs
    if len(outputs) != 1:
        raise CompressionError(
            f"Keras model {keras_model.name!r} has {len(outputs)} outputs; a TFLite variant needs one "
            "(the task's scores)."
        )
    try:
        return keras.Model(features, outputs[0], name=f"{keras_model.name}_core")
    except ValueError as exc:  # "Graph disconnected": the output reads a raw input directly
        raise CompressionError(
            f"Keras model {keras_model.name!r}: its output does not depend on the raw inputs only "
            f"through layer {FEATURES_LAYER!r}, so its float core cannot be cut out: {exc}"
        ) from exc


def convert_to_tflite(keras_model: Any, path: str | Path, *, quantize: bool) -> Path:
    """Convert the float core of ``keras_model`` to ``path``.

    Args:
        keras_model: a model built by ``conveyor.training.keras_mlp``.
        path: where to write the ``.tflite`` file.
        quantize: dynamic-range quantization (``Optimize.DEFAULT``: int8 weights, float
            activations). TFLite leaves weight tensors under 1,024 elements in float.
    """
    _, tf = import_keras()
    converter = tf.lite.TFLiteConverter.from_keras_model(float_core(keras_model))
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # The converter prints its SavedModel export to stdout; keep task logs to what matters.
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffer = converter.convert()
    out = Path(path)
    out.write_bytes(flatbuffer)
    return out


def build_tflite_variant(
    spec: ModelSpec,
    original_dir: str | Path,
    eval_df: Any,
    out_dir: str | Path,
    *,
    quantize: bool = True,
) -> tuple[dict[str, Path], list[str], list[Path]]:
    """Build the files of a TFLite variant from a downloaded Keras model directory.

    Args:
        spec: the model's spec.
        original_dir: the Keras pyfunc model directory (``artifacts/model.keras``,
            ``preprocessing.json``, ``reference.parquet``).
        eval_df: evaluation rows; the first ``spec.deploy.golden_rows`` become the variant's golden rows.
        out_dir: an empty folder for the variant's files.
        quantize: apply dynamic-range quantization.

    Returns:
        The pyfunc artifacts (name → file), its pinned requirements, and the files that make up
        its serving size.
    """
    keras, _ = import_keras()
    from mlflow.pyfunc import PythonModelContext

    from conveyor import tasks
    from conveyor.compression.pyfunc_tflite import TFLiteModel

    source = Path(original_dir) / "artifacts"
    needed = [source / KERAS_FILE, source / PREPROCESSING_FILE, source / REFERENCE_FILE]
    absent = [p.name for p in needed if not p.exists()]
    if absent:
        raise CompressionError(
            f"model directory {original_dir} lacks {absent}; TFLite variants need a model logged by "
            "conveyor.training.keras_mlp."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras_model = keras.saving.load_model(source / KERAS_FILE, compile=False)
    tflite_path = convert_to_tflite(keras_model, out / TFLITE_FILE, quantize=quantize)
    preprocessing_path = Path(shutil.copy(source / PREPROCESSING_FILE, out / PREPROCESSING_FILE))
    reference_path = Path(shutil.copy(source / REFERENCE_FILE, out / REFERENCE_FILE))
    width = json.loads(preprocessing_path.read_text())["width"]
    if int(float_core(keras_model).input_shape[-1]) != int(width):
        raise CompressionError(f"preprocessing.json width {width} does not match the Keras model's features")

    artifacts = {"tflite_model": tflite_path, "preprocessing": preprocessing_path}
    served = TFLiteModel()
    served.load_context(
        PythonModelContext(
            artifacts={k: str(v) for k, v in artifacts.items()}, model_config=tasks.model_config(spec)
        )
    )
    golden = write_golden_rows(spec, lambda rows: served.predict(None, rows), eval_df, out / GOLDEN_ROWS_FILE)
    artifacts |= {"golden_rows": golden, "reference": reference_path}
    requirements = pinned_requirements("ai-edge-litert")
    return artifacts, requirements, [tflite_path, preprocessing_path]
