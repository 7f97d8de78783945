"""Loading and checking one party's table.

A table is a CSV or a Parquet file (by its suffix; :mod:`vfl.tableio` reads
both) or a DataFrame. Every check fails with a
:class:`~vfl.exceptions.DataError` that names the file, the column and a few
offending line numbers (CSV; 1-based rows for Parquet), never the IDs or
values themselves (they are personal data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from vfl.exceptions import DataError
from vfl.tableio import TableFormat, normalize_ids, read_frame, row_location, table_format
from vfl.types import FloatArray

__all__ = ["PartyTable", "load_table", "normalize_ids", "MAX_ABS_FEATURE"]

#: Largest feature magnitude accepted at load (exact integers in float64 reach 2**53 ~ 9e15;
#: beyond this a column's standardisation loses all precision or overflows).
MAX_ABS_FEATURE = 1e15



@dataclass
class PartyTable:
    """One party's rows: IDs, numeric features (NaN = missing), optional label."""

    ids: list[str]
    X: FloatArray
    feature_names: list[str]
    y: npt.NDArray[np.int64] | None = None
    source: str = "<memory>"
    #: the IDs as written in the file, before --lower-ids/stripping (default: ``ids``)
    original_ids: list[str] | None = None
    #: the label column's name (guest tables)
    label_column: str | None = None

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return len(self.ids)

    def select(self, features: Sequence[str]) -> PartyTable:
        """The same rows with only ``features``, in that order.

        Raises
        ------
        DataError
            Naming the feature columns the table lacks.
        """
        missing = [f for f in features if f not in self.feature_names]
        if missing:
            raise DataError(f"{self.source}: feature column(s) not found: {', '.join(missing)}")
        idx = [self.feature_names.index(f) for f in features]
        return PartyTable(self.ids, self.X[:, idx], list(features), self.y, self.source,
                          self.original_ids, self.label_column)

    def take(self, rows: npt.NDArray[np.int64]) -> PartyTable:
        """The rows at ``rows``, in that order."""
        return PartyTable([self.ids[i] for i in rows], self.X[rows], self.feature_names,
                          None if self.y is None else self.y[rows], self.source,
                          None if self.original_ids is None
                          else [self.original_ids[i] for i in rows], self.label_column)


def _rows(mask: npt.NDArray[np.bool_], fmt: TableFormat | None) -> str:
    """``line(s) 2, 4 and 3 more`` (CSV, a DataFrame) or ``row(s) 1, 3`` (Parquet)."""
    return row_location(np.flatnonzero(mask), fmt)


def _not_numbers(col: pd.Series) -> bool:
    """Dates and durations: pandas would turn them into nanosecond counts."""
    return bool(pd.api.types.is_datetime64_any_dtype(col)
                or pd.api.types.is_timedelta64_dtype(col))


def load_table(
    path: str | Path | pd.DataFrame,
    *,
    id_column: str,
    label_column: str | None = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    strip_ids: bool = True,
    lower_ids: bool = False,
    require_label: bool = False,
) -> PartyTable:
    """Read a CSV or Parquet file (or a DataFrame) into a checked :class:`PartyTable`.

    Parameters
    ----------
    path : path or DataFrame
        ``.csv``/``.csv.gz`` or ``.parquet``/``.pq`` (:mod:`vfl.tableio`);
        the same data gives the same table in either format.
    id_column : str
        Column with the customer ID (read as text).
    label_column : str, optional
        Binary 0/1 label (guest only). If the column is absent and
        ``require_label`` is false, the table is read without a label.
    features : sequence of str, optional
        Feature columns; default all columns except the ID and the label.
    exclude : sequence of str
        Columns to leave out (those the table has; with ``features``, both apply).
    """
    fmt: TableFormat | None = None
    if isinstance(path, pd.DataFrame):
        df, source = path.copy(), "<DataFrame>"
    else:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise DataError(f"File not found: {p}")
        fmt = table_format(p)
        df = read_frame(p, id_column=id_column)  # DataError naming the file if unreadable
    columns = [str(c) for c in df.columns]
    if len(df) == 0:
        raise DataError(f"{source}: no data rows{' (only a header)' if fmt != 'parquet' else ''}"
                        "; nothing to train or score.")
    if id_column not in columns:
        raise DataError(
            f"{source}: ID column {id_column!r} not found; columns are: {', '.join(columns[:20])}"
        )
    raw_ids = df[id_column]
    missing_ids = raw_ids.isna().to_numpy() | (raw_ids.astype(str).str.strip() == "").to_numpy()
    if missing_ids.any():
        raise DataError(
            f"{source}: column {id_column!r} has missing IDs on {_rows(missing_ids, fmt)}."
        )
    ids = normalize_ids(raw_ids, strip=strip_ids, lower=lower_ids)
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        raise DataError(
            f"{source}: column {id_column!r} has duplicate IDs on {_rows(dup, fmt)}; "
            "each customer must appear once."
        )
    y = None
    has_label = label_column is not None and label_column in columns
    if label_column is not None and not has_label and require_label:
        raise DataError(
            f"{source}: label column {label_column!r} not found; columns are: "
            f"{', '.join(columns[:20])}"
        )
    if has_label:
        lab = pd.to_numeric(df[label_column], errors="coerce")
        bad = ~lab.isin([0, 1]).to_numpy()
        if bad.any():
            raise DataError(
                f"{source}: label column {label_column!r} must be 0 or 1; other values on "
                f"{_rows(bad, fmt)}."
            )
        y = lab.to_numpy().astype(np.int64)
        if len(np.unique(y)) < 2:
            raise DataError(
                f"{source}: label column {label_column!r} has only one class (all {len(y):,} "
                f"rows are {int(y[0])}); a model needs both defaults (1) and non-defaults (0).")
    left_out = {id_column} | ({label_column} if has_label else set()) | set(exclude)
    if features is None:
        features = [c for c in columns if c not in left_out]
    else:
        unknown = [f for f in features if f not in columns]
        if unknown:
            raise DataError(f"{source}: feature column(s) not found: {', '.join(unknown)}")
        features = [f for f in features if f not in set(exclude)]
    if not features:
        raise DataError(f"{source}: no feature columns besides the ID and label.")
    blocks = []
    for name in features:
        col = df[name]
        if isinstance(col.dtype, pd.CategoricalDtype):  # a Parquet dictionary column
            col = col.astype(object)
        if _not_numbers(col):  # every value is bad; an all-missing column stays missing
            num = pd.Series(np.nan, index=col.index)
        else:
            num = pd.to_numeric(col, errors="coerce")
        bad = (num.isna() & col.notna()).to_numpy()
        if bad.any():
            raise DataError(
                f"{source}: feature column {name!r} is not numeric ({_rows(bad, fmt)}); "
                "encode categories as numbers or leave the column out."
            )
        blocks.append(num.to_numpy(dtype=np.float64))
    X = np.column_stack(blocks)
    with np.errstate(invalid="ignore"):
        extreme = ~(np.abs(X) <= MAX_ABS_FEATURE) & ~np.isnan(X)
    if extreme.any():
        j = int(np.flatnonzero(extreme.any(axis=0))[0])
        raise DataError(
            f"{source}: feature column {features[j]!r} has values beyond +-{MAX_ABS_FEATURE:.0e} "
            f"or infinite ({_rows(extreme[:, j], fmt)}); fix the extract, or rescale the "
            "column (e.g. to thousands) before training.")
    return PartyTable(ids.tolist(), X, list(features), y, source, raw_ids.astype(str).tolist(),
                      label_column if has_label else None)
