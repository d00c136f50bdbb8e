"""Seeded demo data: daily batches that look like what a real source would land.

One source per shipped spec (:data:`DEMO_SOURCES`):

* ``churn`` (binary): synthetic subscription customers whose label follows a logistic model of the
  features (month-to-month contracts, high charges, many support calls and short tenure churn more) plus
  label noise; ``drift`` moves the feature distributions so monitoring has something to find.
* ``breast_cancer`` (binary), ``digits`` (multiclass: 8x8 images of the digits 0..9) and ``diabetes``
  (regression: disease progression a year on): scikit-learn's bundled datasets (no download), renamed to
  the spec's columns and spread over daily batches, every sample once, with a stable id and the event
  date of the batch it lands in.

:func:`corrupt` breaks a batch in named ways so the data contract can be shown (and tested) to catch
each of them, and :func:`land_demo_data` writes the batches where the pipeline reads them.
Every function is deterministic for its arguments: the same call lands byte-for-byte the same data.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.config import ModelSpec
from conveyor.data import storage

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Every corruption :func:`corrupt` knows, in the order it applies them.
CORRUPTION_KINDS: tuple[str, ...] = (
    "few_rows",
    "duplicate_ids",
    "nulls",
    "out_of_range",
    "unknown_category",
    "wrong_types",
    "missing_column",
)

_LABEL_NOISE = 0.05
_TOTAL_CHARGES_MISSING = 0.02
_BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DemoDataError(ValueError):
    """Demo data cannot be produced for the given arguments."""


def _rng(seed: int, *salt: int) -> Any:
    import numpy as np

    return np.random.default_rng([seed, *salt])


def _require_columns(spec: ModelSpec, expected: Sequence[str]) -> None:
    missing = sorted(set(expected) - set(spec.columns))
    extra = sorted(set(spec.columns) - set(expected))
    if missing or extra:
        raise DemoDataError(
            f"spec {spec.name!r} does not match the demo generator: columns the generator needs but the "
            f"spec lacks {missing}, spec columns the generator cannot produce {extra}; "
            "update the spec or the generator together"
        )


def generate_churn(spec: ModelSpec, n_rows: int, day: dt.date, seed: int, drift: float = 0.0) -> pd.DataFrame:
    """One day of synthetic churn customers.

    Args:
        spec: the churn spec; its columns and categories are what the frame carries.
        n_rows: rows to generate.
        day: the event date of every row; ids are ``C<YYYYMMDD><index>``.
        seed: with ``day``, fixes every random draw.
        drift: 0 = reference distributions; 1 = strongly shifted (pricier plans, more month-to-month
            contracts, more support calls, younger customers).

    Returns:
        A DataFrame with exactly ``spec.columns``: string ids, ``datetime64[ns]`` event date, float64
        numeric features, string categoricals and an int64 0/1 target.

    Raises:
        DemoDataError: bad arguments, or the spec's columns/categories differ from what this
            generator produces.
    """
    import numpy as np
    import pandas as pd

    if n_rows < 1:
        raise DemoDataError(f"generate_churn needs n_rows >= 1, got {n_rows}")
    if not 0.0 <= drift <= 1.0:
        raise DemoDataError(f"generate_churn needs drift in [0, 1], got {drift}")
    data = spec.data
    features = [
        "tenure_months",
        "monthly_charges",
        "total_charges",
        "support_calls",
        "age",
        "contract",
        "payment_method",
        "internet_service",
    ]
    _require_columns(spec, [data.id_column, data.event_time_column, *features, data.target])
    categories = {c.name: list(c.categories) for c in spec.categorical_features}
    wanted = {
        "contract": {"month-to-month", "one-year", "two-year"},
        "payment_method": {"card", "bank-transfer", "e-check", "mailed-check"},
        "internet_service": {"dsl", "fiber", "none"},
    }
    for name, values in wanted.items():
        if set(categories.get(name, ())) != values:
            raise DemoDataError(
                f"spec {spec.name!r}: categorical {name!r} has {categories.get(name)}, the churn generator "
                f"produces {sorted(values)}; update the spec or the generator together"
            )

    rng = _rng(seed, day.toordinal())
    n = n_rows

    mtm_share = 0.50 + 0.30 * drift
    contract = rng.choice(
        ["month-to-month", "one-year", "two-year"],
        size=n,
        p=[mtm_share, (1 - mtm_share) * 0.55, (1 - mtm_share) * 0.45],
    )
    internet = rng.choice(["dsl", "fiber", "none"], size=n, p=[0.35, 0.45, 0.20])
    payment = rng.choice(
        ["card", "bank-transfer", "e-check", "mailed-check"], size=n, p=[0.30, 0.25, 0.30, 0.15]
    )

    tenure_mean = np.select(
        [contract == "month-to-month", contract == "one-year"], [10.0, 30.0], default=50.0
    )
    tenure = np.clip(np.round(rng.gamma(shape=1.6, scale=tenure_mean / 1.6)), 0, 120)

    base_charge = np.select([internet == "fiber", internet == "dsl"], [82.0, 55.0], default=22.0)
    monthly = np.clip(base_charge + rng.normal(0.0, 9.0, size=n) + 25.0 * drift, 15.0, 250.0)
    monthly = np.round(monthly, 2)

    total = np.round(monthly * np.maximum(tenure, 1) * rng.normal(1.0, 0.04, size=n), 2)
    total = np.clip(total, 0.0, 60000.0)
    total[rng.random(n) < _TOTAL_CHARGES_MISSING] = np.nan

    support = rng.poisson(1.1 + 0.5 * (internet == "fiber") + 1.8 * drift).astype("float64")
    support = np.clip(support, 0, 50)

    age = np.clip(np.round(rng.normal(46.0 - 6.0 * drift, 14.0, size=n)), 18, 95)

    logit = (
        -2.2
        + 1.35 * (contract == "month-to-month")
        - 0.75 * (contract == "two-year")
        + 0.025 * (monthly - 62.0)
        + 0.38 * (support - 1.3)
        - 0.035 * (tenure - 22.0)
        + 0.45 * (payment == "e-check")
        - 0.012 * (age - 45.0)
    )
    probability = 1.0 / (1.0 + np.exp(-logit))
    churned = (rng.random(n) < probability).astype("int64")
    flips = rng.random(n) < _LABEL_NOISE
    churned[flips] = 1 - churned[flips]

    width = max(5, len(str(n)))
    prefix = f"C{day:%Y%m%d}"
    ids = [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]
    frame = pd.DataFrame(
        {
            data.id_column: pd.Series(ids, dtype="object"),
            data.event_time_column: np.full(n, np.datetime64(day.isoformat(), "ns")),
            "tenure_months": tenure.astype("float64"),
            "monthly_charges": monthly.astype("float64"),
            "total_charges": total.astype("float64"),
            "support_calls": support.astype("float64"),
            "age": age.astype("float64"),
            "contract": pd.Series(contract, dtype="object"),
            "payment_method": pd.Series(payment, dtype="object"),
            "internet_service": pd.Series(internet, dtype="object"),
            data.target: churned,
        }
    )
    return frame[spec.columns]


def _spread(
    spec: ModelSpec, frame: pd.DataFrame, days: int, end_day: dt.date, seed: int, salt: int
) -> list[tuple[dt.date, pd.DataFrame]]:
    """``frame`` (ids, features, target) shuffled by ``seed`` into ``days`` daily batches ending at
    ``end_day``, each row once, each batch in id order with its day as the event date."""
    import numpy as np

    order = _rng(seed, salt).permutation(len(frame))
    batches: list[tuple[dt.date, pd.DataFrame]] = []
    for k, chunk in enumerate(np.array_split(order, days)):
        day = end_day - dt.timedelta(days=days - 1 - k)
        batch = frame.iloc[np.sort(chunk)].reset_index(drop=True)
        batch.insert(
            1, spec.data.event_time_column, np.full(len(batch), np.datetime64(day.isoformat(), "ns"))
        )
        batches.append((day, batch[spec.columns]))
    return batches


def _dataset_frame(
    spec: ModelSpec, dataset: str, source: pd.DataFrame, days: int, drift: float
) -> pd.DataFrame:
    """``source``'s features under the spec's names (float64), checked against the spec and ``days``."""
    n = len(source)
    if not 1 <= days <= n:
        raise DemoDataError(f"{dataset}_batches needs 1 <= days <= {n}, got {days}")
    if not 0.0 <= drift <= 1.0:
        raise DemoDataError(f"{dataset}_batches needs drift in [0, 1], got {drift}")
    unknown = [f for f in spec.feature_names if f not in source.columns]
    if unknown or spec.categorical_features:
        raise DemoDataError(
            f"spec {spec.name!r} asks for features scikit-learn's {dataset} data does not have: "
            f"{unknown or [c.name for c in spec.categorical_features]}; it has {list(source.columns)[:12]}"
        )
    return source[spec.feature_names].astype("float64")


def breast_cancer_batches(
    spec: ModelSpec, days: int, end_day: dt.date, seed: int, drift: float = 0.0
) -> list[tuple[dt.date, pd.DataFrame]]:
    """scikit-learn's breast-cancer data as ``days`` daily batches ending at ``end_day``.

    All 569 samples appear exactly once. Ids are ``S<row number>`` (``S00001`` for scikit-learn's first
    row) so a sample keeps its id whatever the seed; ``seed`` fixes which day each sample lands on.

    Args:
        spec: the breast-cancer spec (feature names are scikit-learn's with ``_`` for spaces).
        days: number of daily batches (1..569).
        end_day: the date of the last batch.
        seed: fixes the shuffle.
        drift: 0..1; scales the texture features up by up to 40% (something for monitoring to find).

    Returns:
        ``[(day, frame), ...]`` oldest first, each frame with exactly ``spec.columns``.

    Raises:
        DemoDataError: bad ``days``/``drift``, or a spec feature scikit-learn's data lacks.
    """
    from sklearn.datasets import load_breast_cancer

    source = load_breast_cancer(as_frame=True).frame
    renamed = source.rename(columns=lambda c: str(c).replace(" ", "_"))
    frame = _dataset_frame(spec, "breast_cancer", renamed, days, drift)
    for name in ("mean_texture", "worst_texture"):
        if drift and name in frame.columns:
            frame[name] = frame[name] * (1.0 + 0.4 * drift)
    frame.insert(0, spec.data.id_column, [f"S{i + 1:05d}" for i in range(len(frame))])
    # scikit-learn: 0 = malignant, 1 = benign.
    frame[spec.data.target] = (1 - source["target"].to_numpy()).astype("int64")
    return _spread(spec, frame, days, end_day, seed, salt=569)


def digits_batches(
    spec: ModelSpec, days: int, end_day: dt.date, seed: int, drift: float = 0.0
) -> list[tuple[dt.date, pd.DataFrame]]:
    """scikit-learn's handwritten digits (multiclass) as ``days`` daily batches ending at ``end_day``.

    All 1,797 images appear exactly once: 64 pixel features ``pixel_<row>_<column>`` (ink, 0..16) and
    the digit (int64, 0..9). Ids are ``D<row number>`` (``D00001`` for scikit-learn's first image).

    Args:
        spec: the digits spec (features named as scikit-learn names them).
        days: number of daily batches (1..1797).
        end_day: the date of the last batch.
        seed: fixes which day each image lands on.
        drift: 0..1; darkens the ink by up to 30% (capped at 16, the sensor's maximum).

    Returns:
        ``[(day, frame), ...]`` oldest first, each frame with exactly ``spec.columns``.

    Raises:
        DemoDataError: bad ``days``/``drift``, or a spec feature scikit-learn's data lacks.
    """
    from sklearn.datasets import load_digits

    source = load_digits(as_frame=True).frame
    frame = _dataset_frame(spec, "digits", source, days, drift)
    if drift:
        frame = (frame * (1.0 + 0.3 * drift)).clip(upper=16.0)
    frame.insert(0, spec.data.id_column, [f"D{i + 1:05d}" for i in range(len(frame))])
    frame[spec.data.target] = source["target"].to_numpy().astype("int64")
    return _spread(spec, frame, days, end_day, seed, salt=1797)


def diabetes_batches(
    spec: ModelSpec, days: int, end_day: dt.date, seed: int, drift: float = 0.0
) -> list[tuple[dt.date, pd.DataFrame]]:
    """scikit-learn's diabetes data (regression) as ``days`` daily batches ending at ``end_day``.

    All 442 patients appear exactly once, in original units (``load_diabetes(scaled=False)``: age in
    years, sex 1/2, BMI, blood pressure, six blood serum measurements) with the target, a measure of
    disease progression one year after baseline (float64, 25..346). Ids are ``P<row number>``.

    Args:
        spec: the diabetes spec (features named as scikit-learn names them: age, sex, bmi, bp, s1..s6).
        days: number of daily batches (1..442).
        end_day: the date of the last batch.
        seed: fixes which day each patient lands on.
        drift: 0..1; raises BMI and blood pressure by up to 15%.

    Returns:
        ``[(day, frame), ...]`` oldest first, each frame with exactly ``spec.columns``.

    Raises:
        DemoDataError: bad ``days``/``drift``, or a spec feature scikit-learn's data lacks.
    """
    from sklearn.datasets import load_diabetes

    source = load_diabetes(as_frame=True, scaled=False).frame
    frame = _dataset_frame(spec, "diabetes", source, days, drift)
    for name in ("bmi", "bp"):
        if drift and name in frame.columns:
            frame[name] = frame[name] * (1.0 + 0.15 * drift)
    frame.insert(0, spec.data.id_column, [f"P{i + 1:05d}" for i in range(len(frame))])
    frame[spec.data.target] = source["target"].to_numpy().astype("float64")
    return _spread(spec, frame, days, end_day, seed, salt=442)


#: The daily batches of each shipped spec's scikit-learn dataset, by spec name.
SKLEARN_SOURCES: dict[str, Callable[..., list[tuple[dt.date, pd.DataFrame]]]] = {
    "breast_cancer": breast_cancer_batches,
    "digits": digits_batches,
    "diabetes": diabetes_batches,
}
#: Every spec name :func:`land_demo_data` can land data for.
DEMO_SOURCES: tuple[str, ...] = ("churn", *SKLEARN_SOURCES)


def _unknown_target(spec: ModelSpec) -> Any:
    """A target value the spec's contract refuses: a label outside ``data.classes`` (the next integer
    after the largest for integer labels), or a regression value past its range (a string when the
    range is unbounded)."""
    from conveyor.pyfunc_outputs import integer_labels

    data = spec.data
    if spec.task == "regression":
        if data.target_max is not None:
            return float(data.target_max + abs(data.target_max) + 1)
        if data.target_min is not None:
            return float(data.target_min - abs(data.target_min) - 1)
        return "n/a"
    if integer_labels(spec.classes):
        return max(int(c) for c in spec.classes) + 1
    return "unknown-label"


def corrupt(df: pd.DataFrame, spec: ModelSpec, kinds: Iterable[str], seed: int = 0) -> pd.DataFrame:
    """A copy of ``df`` (with a fresh ``RangeIndex``) broken in the named ways; ``df`` is left alone.

    Kinds (applied in :data:`CORRUPTION_KINDS` order, each on a different column where it picks one):

    * ``few_rows``: keep a fifth of ``spec.data.min_rows`` rows.
    * ``duplicate_ids``: give a few rows the id of another row.
    * ``nulls``: NaN into a numeric feature, ~25 points above its allowed null fraction.
    * ``out_of_range``: a few values of a bounded numeric feature past its max (or under its min).
    * ``unknown_category``: a few values of a categorical outside its categories; for a spec without
      categoricals, a few target values the contract refuses: a label outside ``data.classes`` (2 for
      a 0/1 target, 10 for the digits 0..9), a regression value past ``data.target_max`` (or under
      ``target_min``; the string ``"n/a"`` when the target is unbounded).
    * ``wrong_types``: a numeric feature stored as strings (the way a broken CSV export lands).
    * ``missing_column``: drop a required numeric feature.

    Raises:
        DemoDataError: an unknown kind, or nothing left to corrupt.
    """
    import numpy as np

    wanted = list(dict.fromkeys(kinds))
    unknown = [k for k in wanted if k not in CORRUPTION_KINDS]
    if unknown:
        raise DemoDataError(f"unknown corruption kinds {unknown}; known: {list(CORRUPTION_KINDS)}")
    rng = _rng(seed, 7919)
    out = df.reset_index(drop=True)  # a copy; rows are picked by position
    touched: set[str] = set()
    numeric = [f for f in spec.numeric_features if f.name in out.columns]

    def pick_numeric(kind: str, bounded: bool = False) -> str:
        candidates = [
            f.name
            for f in numeric
            if f.name not in touched and (not bounded or f.max is not None or f.min is not None)
        ]
        if not candidates:
            raise DemoDataError(f"corrupt({kind!r}): no untouched numeric feature left in spec {spec.name!r}")
        name = str(candidates[int(rng.integers(len(candidates)))])
        touched.add(name)
        return name

    def some_rows(k: int = 3) -> Any:
        count = max(k, len(out) // 40)
        return np.sort(rng.choice(len(out), size=min(count, len(out)), replace=False))

    for kind in CORRUPTION_KINDS:
        if kind not in wanted:
            continue
        if kind == "few_rows":
            keep = max(1, min(len(out), spec.data.min_rows) // 5)
            out = out.iloc[:keep].reset_index(drop=True)
        elif kind == "duplicate_ids":
            if len(out) < 2:
                raise DemoDataError("corrupt('duplicate_ids') needs at least 2 rows")
            # Each chosen row takes the id of the row before it: a re-sent record.
            rows = some_rows()
            rows = rows[(rows > 0) & ~np.isin(rows - 1, rows)]
            if not len(rows):
                rows = np.array([1])
            id_col = spec.data.id_column
            out.loc[rows, id_col] = out[id_col].to_numpy()[rows - 1]
        elif kind == "nulls":
            name = pick_numeric(kind)
            limit = next(f.max_null_fraction for f in numeric if f.name == name)
            share = min(0.9, limit + 0.25)
            out.loc[rng.random(len(out)) < share, name] = np.nan
            if out[name].isna().mean() <= limit:  # tiny frames: make sure the limit is really broken
                out.loc[: max(1, int(len(out) * share)), name] = np.nan
        elif kind == "out_of_range":
            name = pick_numeric(kind, bounded=True)
            feature = next(f for f in numeric if f.name == name)
            bad = feature.max * 2 + 1 if feature.max is not None else float(feature.min or 0) - 10
            out.loc[some_rows(), name] = float(bad)
        elif kind == "unknown_category":
            cats = [c for c in spec.categorical_features if c.name in out.columns and c.name not in touched]
            if cats:
                cat = cats[int(rng.integers(len(cats)))]
                touched.add(cat.name)
                out.loc[some_rows(), cat.name] = f"unknown-{cat.name.replace('_', '-')}"
            else:
                bad_target = _unknown_target(spec)
                if isinstance(bad_target, str):
                    out[spec.data.target] = out[spec.data.target].astype(object)
                out.loc[some_rows(), spec.data.target] = bad_target
        elif kind == "wrong_types":
            name = pick_numeric(kind)
            out[name] = out[name].map(lambda v: "n/a" if v != v else f"{v:.2f}").astype("object")
        elif kind == "missing_column":
            name = pick_numeric(kind)
            out = out.drop(columns=[name])
    return out


def landing_uri(spec: ModelSpec, day: dt.date, batch_name: str = "batch") -> str:
    """Where the batch ``batch_name`` of ``day`` lands: ``landing/<model>/date=YYYY-MM-DD/<name>.parquet``."""
    if not _BATCH_NAME.match(batch_name):
        raise DemoDataError(
            f"batch name {batch_name!r} must be a plain file name (letters, digits, '_', '-', '.')"
        )
    return storage.data_uri("landing", spec.name, f"date={day.isoformat()}", f"{batch_name}.parquet")


def land_batch(spec: ModelSpec, df: pd.DataFrame, day: dt.date, batch_name: str = "batch") -> str:
    """Write ``df`` as the batch ``batch_name`` of ``day`` under the data root (replacing it).

    Returns:
        The URI written.
    """
    uri = landing_uri(spec, day, batch_name)
    storage.write_parquet(df, uri)
    log.info("landed %d rows for %s on %s at %s", len(df), spec.name, day, uri)
    return uri


def land_demo_data(
    spec: ModelSpec,
    days: int,
    end_day: dt.date,
    rows_per_day: int = 400,
    seed: int = 0,
    drift: float = 0.0,
    corruption: Sequence[str] = (),
) -> list[str]:
    """Land ``days`` daily demo batches ending at ``end_day`` (one file per day).

    Args:
        spec: ``churn`` (synthetic, ``rows_per_day`` rows a day), or ``breast_cancer``, ``digits`` or
            ``diabetes`` (scikit-learn's 569, 1,797 or 442 rows spread over the days; ``rows_per_day`` is
            ignored).
        days: how many days, the last being ``end_day``.
        end_day: the newest day.
        rows_per_day: churn rows per day.
        seed: fixes every draw.
        drift: 0..1, applied to every landed day.
        corruption: :func:`corrupt` kinds applied to the newest day's batch only ("tonight's batch is bad").

    Returns:
        The landed URIs, oldest first.

    Raises:
        DemoDataError: a spec with no demo source, or bad arguments.
    """
    if days < 1:
        raise DemoDataError(f"land_demo_data needs days >= 1, got {days}")
    if spec.name == "churn":
        batches = [
            (day, generate_churn(spec, rows_per_day, day, seed, drift))
            for day in (end_day - dt.timedelta(days=days - 1 - k) for k in range(days))
        ]
    elif spec.name in SKLEARN_SOURCES:
        batches = SKLEARN_SOURCES[spec.name](spec, days, end_day, seed, drift=drift)
    else:
        raise DemoDataError(
            f"no demo data source for model {spec.name!r}; known: {', '.join(DEMO_SOURCES)}. "
            "Land real batches with land_batch() instead."
        )
    if corruption:
        last_day, last = batches[-1]
        batches[-1] = (last_day, corrupt(last, spec, corruption, seed=seed))
    return [land_batch(spec, frame, day) for day, frame in batches]
