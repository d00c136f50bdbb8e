"""Turn request bodies into the DataFrame a model's signature expects, or say precisely why not.

Three wire formats arrive here: the MLflow scoring protocol (``dataframe_split``,
``dataframe_records``, ``inputs``), Open Inference Protocol v2 tensors (one per column) and plain
records (golden rows). All of them become columns of Python values, and one checker validates those
against the signature so every format reports problems the same way: which column, which row, what
was expected. Nothing here lets a value reach the model unchecked, so a bad request is a 4xx and
never a stack trace.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from conveyor.serving.errors import InvalidInput
from conveyor.serving.schemas import REQUEST_ID_PATTERN

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec

DEFAULT_MAX_ROWS = 10_000
# Enough problems to fix a request in one go without echoing a whole bad batch back.
_MAX_PROBLEMS = 50

# MLflow signature type -> the Open Inference Protocol datatypes a client may send for it.
# Integers are accepted where floats are expected (lossless for feature values); not the reverse.
_INTS = ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")
OIP_DATATYPES: dict[str, tuple[str, ...]] = {
    "double": ("FP64", "FP32", "FP16", *_INTS),
    "float": ("FP32", "FP64", "FP16", *_INTS),
    "long": _INTS,
    "integer": ("INT32", *_INTS),
    "string": ("BYTES",),
    "binary": ("BYTES",),
    "datetime": ("BYTES",),
    "boolean": ("BOOL",),
}
_SCORING_FORMATS = ("dataframe_split", "dataframe_records", "inputs")
# The largest magnitude each numeric column type holds (an int beyond them cannot even become a float).
_FLOAT_LIMITS = {"double": 1.7976931348623157e308, "float": 3.4028234663852886e38}
_INT_LIMITS = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}
# How deep an OIP tensor's data may nest (shape [n] or [n, 1] needs two levels).
_MAX_DEPTH = 32
# Names a client sent are echoed at most this long (a 100 KB column name is not sent back).
_MAX_ECHO = 80
# Stands for a key a record lacks, already reported once as "row i lacks column c".
_ABSENT = object()
# A request id comes back as a response header: printable ASCII only (no line breaks, no Unicode).
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
# How much of a request id is kept.
_MAX_REQUEST_ID = 128
# A JSON escape of a UTF-16 surrogate (half of a pair such as an emoji's, or a lone one).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class ColumnSchema:
    """One input column: its name, MLflow type name and whether null values are accepted."""

    name: str
    kind: str
    nullable: bool = False
    required: bool = True

    @property
    def oip_datatype(self) -> str:
        return OIP_DATATYPES.get(self.kind, ("BYTES",))[0]


@dataclass(frozen=True)
class Batch:
    """A validated request: the model's input frame, the optional id per row and the row count."""

    frame: pd.DataFrame
    ids: list[Any] | None
    n_rows: int
    request_id: str | None = None
    requested_outputs: tuple[str, ...] | None = None


def input_columns(model: Any, spec: ModelSpec) -> list[ColumnSchema]:
    """The columns a loaded pyfunc model takes, from its signature (the spec when it has none).

    Nulls are accepted only where the spec allows missing values (``max_null_fraction > 0``).
    """
    nullable = {f.name for f in spec.numeric_features if f.max_null_fraction > 0} | {
        f.name for f in spec.categorical_features if f.max_null_fraction > 0
    }
    schema = None
    try:
        schema = model.metadata.get_input_schema()
    except Exception:  # a model without metadata: fall back to the spec
        schema = None
    if schema is not None and getattr(schema, "has_input_names", lambda: False)():
        columns = []
        for col in schema.inputs:
            col_type = getattr(col, "type", None)
            kind = getattr(col_type, "name", None) or "any"
            columns.append(
                ColumnSchema(
                    name=col.name,
                    kind=str(kind),
                    nullable=col.name in nullable,
                    required=bool(getattr(col, "required", True)),
                )
            )
        return columns
    return [ColumnSchema(f.name, "double", f.name in nullable) for f in spec.numeric_features] + [
        ColumnSchema(f.name, "string", f.name in nullable) for f in spec.categorical_features
    ]


def parse_json(raw: bytes) -> Any:
    """Decode a request body, turning a syntax error into a 400 that says where it is."""
    if not raw.strip():
        raise InvalidInput("empty request body: send a JSON object", status=400)
    try:
        body = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"request body is not UTF-8 text: {exc.reason}", status=400) from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            [{"line": exc.lineno, "column_number": exc.colno, "message": exc.msg}],
            status=400,
        ) from None
    except RecursionError:
        raise InvalidInput(
            "JSON nested too deeply: a request is an object of rows or columns", status=400
        ) from None
    except ValueError as exc:  # e.g. an integer literal of more than 4,300 digits
        raise InvalidInput(f"unreadable JSON value: {_clip(str(exc), 120)}", status=400) from None
    if _SURROGATE_ESCAPE.search(raw):  # only such an escape can make a lone surrogate
        _check_unicode(body)
    return body


def _check_unicode(body: Any) -> None:
    """Refuse (400) a string or key holding a lone UTF-16 surrogate (``"\\ud800"`` without its pair),
    naming where it is: JSON lets one through as an escape, but it is no Unicode text, so no answer
    or log could hold it. Iterative, so no nesting the parser took can exhaust the stack."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(body, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not _is_unicode(key):
                    _lone_surrogate("key", (*path, key))
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif isinstance(value, str) and not _is_unicode(value):
            _lone_surrogate("value", path)


def _is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lone_surrogate(what: str, path: tuple[str | int, ...]) -> NoReturn:
    parts = [
        f"[{p}]" if isinstance(p, int) else "." + _clip(p.encode("utf-8", "backslashreplace").decode())
        for p in path
    ]
    where = _clip("".join(parts).lstrip(".") or "the body", 200)
    raise InvalidInput(
        f"the {what} at {where} holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its "
        "pair): not Unicode text",
        [{"location": where, "message": "lone surrogate"}],
        status=400,
    )


def batch_from_scoring_body(
    body: Any, columns: list[ColumnSchema], spec: ModelSpec, max_rows: int = DEFAULT_MAX_ROWS
) -> Batch:
    """Validate an MLflow scoring-protocol body (``dataframe_split``/``dataframe_records``/``inputs``)."""
    if not isinstance(body, dict):
        raise InvalidInput(
            f"expected a JSON object with one of {list(_SCORING_FORMATS)}, got {_json_type(body)}", status=400
        )
    formats = [k for k in _SCORING_FORMATS if k in body]
    unknown = sorted(set(body) - {*_SCORING_FORMATS, "params"})
    if unknown:
        raise InvalidInput(
            f"unknown top-level field(s) {', '.join(echo(k) for k in unknown[:10])}; the body takes exactly "
            f"one of {list(_SCORING_FORMATS)}",
            [{"field": _clip(k), "message": "unknown field"} for k in unknown[:_MAX_PROBLEMS]],
            status=400,
        )
    if len(formats) != 1:
        raise InvalidInput(
            f"the body must hold exactly one of {list(_SCORING_FORMATS)}; found {formats or 'none'}",
            status=400,
        )
    fmt = formats[0]
    payload = body[fmt]
    if fmt == "dataframe_split":
        return _batch_from_split(payload, columns, spec, max_rows)
    if fmt == "dataframe_records":
        return batch_from_records(payload, columns, spec, max_rows, field="dataframe_records")
    if isinstance(payload, list):
        return batch_from_records(payload, columns, spec, max_rows, field="inputs")
    if isinstance(payload, dict):
        data = {k: v if isinstance(v, list) else [v] for k, v in payload.items()}
        return _columnar_batch(data, columns, spec, max_rows)
    raise InvalidInput(
        f'"inputs" must be an object of column -> values or a list of records, got {_json_type(payload)}',
        status=400,
    )


def batch_from_records(
    records: Any,
    columns: list[ColumnSchema],
    spec: ModelSpec,
    max_rows: int = DEFAULT_MAX_ROWS,
    *,
    field: str = "records",
) -> Batch:
    """Validate a list of ``{column: value}`` rows (``dataframe_records``, golden rows)."""
    if not isinstance(records, list):
        raise InvalidInput(f'"{field}" must be a list of row objects, got {_json_type(records)}', status=400)
    _check_size(len(records), max_rows)
    problems: list[dict[str, Any]] = []
    for i, row in enumerate(records):
        if not isinstance(row, dict):
            problems.append(
                {"column": None, "row": i, "message": f"row is {_json_type(row)}, expected an object"}
            )
    if problems:
        raise InvalidInput(f'"{field}" must hold objects: row {problems[0]["row"]} is not one', problems, 400)
    present = set().union(*(row.keys() for row in records))
    for col in columns:
        if col.name not in present:
            continue  # reported once as a missing column below
        for i, row in enumerate(records):
            if col.name not in row and col.required:
                problems.append(
                    {"column": col.name, "row": i, "message": f"row {i} lacks column {col.name!r}"}
                )
                if len(problems) >= _MAX_PROBLEMS:
                    break
    required = {c.name for c in columns if c.required}
    data = {
        name: [row.get(name, _ABSENT if name in required else None) for row in records] for name in present
    }
    return _columnar_batch(data, columns, spec, max_rows, row_problems=problems)


def batch_from_oip(
    body: Any, columns: list[ColumnSchema], spec: ModelSpec, max_rows: int = DEFAULT_MAX_ROWS
) -> Batch:
    """Validate an Open Inference Protocol v2 inference request: one 1-D tensor per column."""
    if not isinstance(body, dict):
        raise InvalidInput(f'expected a JSON object with "inputs", got {_json_type(body)}', status=400)
    request_id = _request_id(body.get("id"))
    tensors = body.get("inputs")
    if not isinstance(tensors, list):
        raise InvalidInput(
            '"inputs" must be a list of tensors {"name", "shape", "datatype", "data"}, one per column',
            status=400,
        )
    by_name = {c.name: c for c in columns}
    data: dict[str, list[Any]] = {}
    problems: list[dict[str, Any]] = []
    n_rows: int | None = None
    for i, tensor in enumerate(tensors):
        if not isinstance(tensor, dict):
            raise InvalidInput(f"inputs[{i}] is {_json_type(tensor)}, expected a tensor object", status=400)
        missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
        if missing:
            raise InvalidInput(f"inputs[{i}] lacks {missing}", [{"tensor": i, "missing": missing}], 400)
        name, shape, datatype, values = tensor["name"], tensor["shape"], tensor["datatype"], tensor["data"]
        if not isinstance(name, str):
            raise InvalidInput(f"inputs[{i}].name must be a string", status=400)
        shown = echo(name)
        if name in data:
            raise InvalidInput(f"tensor {shown} appears twice in inputs", [{"column": _clip(name)}], 400)
        if not (isinstance(shape, list) and shape and all(_is_int(d) and d >= 0 for d in shape)):
            raise InvalidInput(f"tensor {shown}: shape must be a list of non-negative integers", status=400)
        flat = _flatten(values)
        if flat is None:
            raise InvalidInput(
                f"tensor {shown}: data must be a list of values, nested at most {_MAX_DEPTH} deep", status=400
            )
        size = math.prod(shape)
        if size != len(flat):
            raise InvalidInput(
                f"tensor {shown}: shape {_clip(str(shape))} holds {size} values but data has {len(flat)}",
                [{"column": _clip(name), "message": "shape and data disagree"}],
                400,
            )
        if any(d != 1 for d in shape[1:]):
            raise InvalidInput(
                f"tensor {shown}: shape {_clip(str(shape))} is not one value per row; send [n] or [n, 1]",
                [{"column": _clip(name), "message": "one column per tensor"}],
                400,
            )
        col = by_name.get(name)
        if col is not None and datatype not in OIP_DATATYPES.get(col.kind, (datatype,)):
            problems.append(
                {
                    "column": name,
                    "row": None,
                    "message": f"datatype {echo(datatype)} does not fit a {col.kind} column; "
                    f"send {col.oip_datatype}",
                }
            )
        if n_rows is not None and shape[0] != n_rows:
            problems.append(
                {
                    "column": name,
                    "row": None,
                    "message": f"tensor has {shape[0]} rows, earlier tensors have {n_rows}",
                }
            )
        n_rows = shape[0] if n_rows is None else n_rows
        data[name] = flat
    if problems:
        raise InvalidInput(f"invalid input tensors: {_describe(problems[0])}", problems)
    batch = _columnar_batch(data, columns, spec, max_rows)
    outputs = body.get("outputs")
    requested = None
    if isinstance(outputs, list):
        requested = tuple(str(o["name"]) for o in outputs if isinstance(o, dict) and "name" in o)
    return Batch(
        frame=batch.frame,
        ids=batch.ids,
        n_rows=batch.n_rows,
        request_id=request_id,
        requested_outputs=requested,
    )


def _request_id(value: Any) -> str | None:
    """The OIP ``id`` as the answer's ``id`` and ``X-Request-ID`` header: its first 128 characters;
    ``None`` when it is not a string or number. Anything but printable ASCII is refused (400): a header
    holds no line break and no Unicode."""
    if not isinstance(value, str | int):
        return None
    text = str(value)
    if not _REQUEST_ID.fullmatch(text):
        raise InvalidInput(
            f'"id" {echo(text)} is not printable ASCII; it comes back as the X-Request-ID header',
            [{"field": "id", "message": "printable ASCII characters only"}],
            status=400,
        )
    return text[:_MAX_REQUEST_ID]


def _batch_from_split(payload: Any, columns: list[ColumnSchema], spec: ModelSpec, max_rows: int) -> Batch:
    if not isinstance(payload, dict):
        raise InvalidInput(
            '"dataframe_split" must be an object {"columns": [...], "data": [[...]]}, '
            f"got {_json_type(payload)}",
            status=400,
        )
    names, rows = payload.get("columns"), payload.get("data")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidInput('"dataframe_split.columns" must be a list of column names', status=400)
    if not isinstance(rows, list):
        raise InvalidInput('"dataframe_split.data" must be a list of rows (lists of values)', status=400)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InvalidInput(f"columns named twice: {duplicated}", [{"column": n} for n in duplicated], 400)
    _check_size(len(rows), max_rows)
    problems = [
        {
            "column": None,
            "row": i,
            "message": f"row {i} has {len(row) if isinstance(row, list) else _json_type(row)} values, "
            f"expected {len(names)}",
        }
        for i, row in enumerate(rows)
        if not isinstance(row, list) or len(row) != len(names)
    ]
    if problems:
        raise InvalidInput(f"malformed dataframe_split: {problems[0]['message']}", problems)
    data = {name: [row[j] for row in rows] for j, name in enumerate(names)}
    return _columnar_batch(data, columns, spec, max_rows)


def _columnar_batch(
    data: dict[str, list[Any]],
    columns: list[ColumnSchema],
    spec: ModelSpec,
    max_rows: int,
    row_problems: list[dict[str, Any]] | None = None,
) -> Batch:
    import numpy as np
    import pandas as pd

    id_column = spec.data.id_column
    lengths = {len(v) for v in data.values()}
    if len(lengths) > 1:
        raise InvalidInput(
            "columns differ in length: " + ", ".join(f"{k}={len(v)}" for k, v in data.items()),
            [{"column": k, "rows": len(v)} for k, v in data.items()],
        )
    n_rows = lengths.pop() if lengths else 0
    _check_size(n_rows, max_rows)

    known = {c.name for c in columns}
    problems: list[dict[str, Any]] = []
    for name in sorted(set(data) - known - {id_column})[:_MAX_PROBLEMS]:
        problems.append(
            {
                "column": _clip(name),
                "row": None,
                "message": f"unknown column {echo(name)}; the model takes {_clip(str(sorted(known)), 400)} "
                f"(plus the optional id column {id_column!r})",
            }
        )
    for col in columns:
        if col.name not in data and col.required:
            problems.append({"column": col.name, "row": None, "message": f"missing column {col.name!r}"})
    problems.extend(row_problems or [])
    for col in columns:
        if col.name in data and len(problems) < _MAX_PROBLEMS:
            problems.extend(_check_cells(col, data[col.name], _MAX_PROBLEMS - len(problems)))
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise InvalidInput(f"invalid input: {_describe(problems[0])}{more}", problems)

    present = [c for c in columns if c.name in data]
    index = _column_index(tuple(c.name for c in present))
    if present and all(c.kind == "double" for c in present):
        # One float64 block, built in one go: no per-column arrays for pandas to consolidate later.
        matrix = np.array(
            [[math.nan if v is None else v for v in data[c.name]] for c in present], dtype="float64"
        ).T
        frame = pd.DataFrame(matrix, columns=index, copy=False)
        ids = list(data[id_column]) if id_column in data else None
        return Batch(frame=frame, ids=ids, n_rows=n_rows)
    frame_data: dict[str, Any] = {}
    for col in present:
        values = data[col.name]
        if col.kind in ("double", "float"):
            frame_data[col.name] = np.asarray(
                [math.nan if v is None else float(v) for v in values],
                dtype="float64" if col.kind == "double" else "float32",
            )
        elif col.kind in ("long", "integer"):
            frame_data[col.name] = np.asarray(
                [int(v) for v in values], dtype="int64" if col.kind == "long" else "int32"
            )
        elif col.kind == "boolean":
            frame_data[col.name] = np.asarray(values, dtype=bool)
        else:
            frame_data[col.name] = pd.Series(values, dtype="object").to_numpy()
    frame = pd.DataFrame(frame_data, columns=index)
    ids = list(data[id_column]) if id_column in data else None
    return Batch(frame=frame, ids=ids, n_rows=n_rows)


@functools.lru_cache(maxsize=256)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    """One shared ``pd.Index`` per column set: pandas keeps an index's hash table with the index, so
    every frame of a model selects its columns (as a scikit-learn ``ColumnTransformer`` does) without
    hashing the names again. Only a model's own columns get here (unknown ones are refused first)."""
    import pandas as pd

    return pd.Index(names, dtype=object)


def _check_size(n_rows: int, max_rows: int) -> None:
    if n_rows == 0:
        raise InvalidInput("empty batch: send at least one row", [{"row": None, "message": "no rows"}])
    if n_rows > max_rows:
        raise InvalidInput(
            f"batch of {n_rows} rows exceeds the limit of {max_rows} rows per request; split it",
            [{"row": None, "message": f"{n_rows} > {max_rows}"}],
        )


def _check_cells(col: ColumnSchema, values: list[Any], budget: int) -> list[dict[str, Any]]:
    if _all_fine(col, values):
        return []
    problems: list[dict[str, Any]] = []
    for i, value in enumerate(values):
        message = _cell_problem(col, value)
        if message is not None:
            problems.append({"column": col.name, "row": i, "message": message})
            if len(problems) >= budget:
                break
    return problems


def _all_fine(col: ColumnSchema, values: list[Any]) -> bool:
    """Whether a whole column passes :func:`_cell_problem`, decided for the common case in one
    vectorised step: strings in a string column, finite in-range numbers in a float column. ``False``
    means "look cell by cell" (which then names every problem), never "invalid"."""
    kinds = set(map(type, values))
    if col.kind in ("string", "datetime", "binary"):
        return kinds <= {str}
    if col.kind not in _FLOAT_LIMITS or not kinds <= {float, int}:
        return False
    import numpy as np

    try:
        array = np.asarray(values, dtype="float64")
    except (OverflowError, ValueError):
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.all(np.abs(array) <= _FLOAT_LIMITS[col.kind]))


def _cell_problem(col: ColumnSchema, value: Any) -> str | None:
    if value is _ABSENT:
        return None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if col.nullable:
            return None
        return f"null in column {col.name!r}, which requires a value"
    kind = col.kind
    if kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number ({kind}), got {_json_type(value)} {_preview(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"expected a finite number, got {value}"
        if not -_FLOAT_LIMITS[kind] <= value <= _FLOAT_LIMITS[kind]:
            return f"number {_preview(value)} is outside the range of a {kind}"
    elif kind in ("long", "integer"):
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            return f"expected an integer ({kind}), got {_json_type(value)} {_preview(value)}"
        low, high = _INT_LIMITS[kind]
        if not low <= value <= high:
            return f"integer {_preview(value)} is outside the range of a {kind}"
    elif kind in ("string", "datetime", "binary"):
        if not isinstance(value, str):
            return f"expected a string, got {_json_type(value)} {_preview(value)}"
    elif kind == "boolean" and not isinstance(value, bool):
        return f"expected true/false, got {_json_type(value)} {_preview(value)}"
    return None


def _describe(problem: dict[str, Any]) -> str:
    where = []
    if problem.get("column") is not None:
        where.append(f"column {problem['column']!r}")
    if problem.get("row") is not None:
        where.append(f"row {problem['row']}")
    prefix = " ".join(where)
    return f"{prefix}: {problem['message']}" if prefix else str(problem["message"])


def _flatten(values: Any) -> list[Any] | None:
    """The values of a (nested) list, depth first; ``None`` when it is not a list or nests deeper
    than ``_MAX_DEPTH`` (iterative, so no input can exhaust the stack)."""
    if not isinstance(values, list):
        return None
    out: list[Any] = []
    stack: list[tuple[list[Any], int]] = [(values, 0)]
    iterators = [iter(values)]
    while iterators:
        try:
            value = next(iterators[-1])
        except StopIteration:
            iterators.pop()
            stack.pop()
            continue
        if isinstance(value, list):
            if len(stack) >= _MAX_DEPTH:
                return None
            stack.append((value, len(stack)))
            iterators.append(iter(value))
        else:
            out.append(value)
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _preview(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (ValueError, RecursionError):  # an int too long to print, or nesting too deep
        text = f"<{_json_type(value)}>"
    return _clip(text, 40)


def _clip(text: str, limit: int = _MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} chars)"


def echo(name: Any) -> str:
    """A name the client sent, quoted and cut short for an error message."""
    return _clip(repr(name) if isinstance(name, str) else _preview(name))


def contract_violations(spec: ModelSpec, frame: pd.DataFrame) -> dict[int, list[str]]:
    """Row → the columns whose value is outside the spec's data contract: a numeric feature beyond its
    ``min``/``max``, a categorical one outside its categories (missing values are not violations).

    Vectorised (one comparison over the numeric block, ``isin`` per categorical), so the prediction
    log can flag every row off the request path.
    """
    import numpy as np

    flagged: dict[int, list[str]] = {}
    numeric = [f for f in spec.numeric_features if f.name in frame.columns and (f.min, f.max) != (None, None)]
    if numeric and len(frame):
        names = [f.name for f in numeric]
        block = frame if list(frame.columns) == names else frame[names]  # no copy for a numeric model
        values = block.to_numpy(dtype="float64", na_value=np.nan)
        low = np.asarray([-np.inf if f.min is None else f.min for f in numeric])
        high = np.asarray([np.inf if f.max is None else f.max for f in numeric])
        with np.errstate(invalid="ignore"):
            rows, cols = np.nonzero((values < low) | (values > high))
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            flagged.setdefault(row, []).append(numeric[col].name)
    for categorical in spec.categorical_features:
        if categorical.name not in frame.columns:
            continue
        column = frame[categorical.name]
        bad = column.notna().to_numpy() & ~column.isin(categorical.categories).to_numpy()
        for row in np.flatnonzero(bad).tolist():
            flagged.setdefault(row, []).append(categorical.name)
    return dict(sorted(flagged.items()))


def out_of_contract(spec: ModelSpec, frame: pd.DataFrame, limit: int = _MAX_PROBLEMS) -> list[dict[str, Any]]:
    """:func:`contract_violations` as 4xx problems, each naming the column, the row, the value and the
    contract's range or categories (at most ``limit``)."""
    numeric = {f.name: f for f in spec.numeric_features}
    categories = {f.name: list(f.categories) for f in spec.categorical_features}
    problems: list[dict[str, Any]] = []
    for row, names in contract_violations(spec, frame).items():
        for name in names:
            value = frame[name].iloc[row]
            if name in categories:
                bound = f"is not one of the contract's categories {categories[name]}"
                shown = echo(value)
            else:
                low, high = _bound(numeric[name].min), _bound(numeric[name].max)
                bound = f"is outside the contract's range [{low}, {high}]"
                shown = _preview(float(value))
            problems.append(
                {"column": name, "row": row, "message": f"column {name!r} row {row}: {shown} {bound}"}
            )
            if len(problems) >= limit:
                return problems
    return problems


def _bound(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:g}"
