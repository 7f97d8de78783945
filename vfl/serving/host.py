"""A host's side of online scoring: partial scores of single customers, by ID.

The host loads its model part(s) and its feature table once, computes every
customer's partial score ``x_h . w_h`` up front (exactly as ``vfl predict``
does for the same rows: the part's WOE encoding, imputation and scaling,
then its weights), and answers a request by looking the IDs up. It answers
only its configured guest, only for a model it holds, within its own limits:

* at most ``max_ids_per_request`` IDs per request, each at most
  :data:`MAX_ID_CHARS` characters;
* ``requests_per_second`` on average, in bursts of at most ``burst``
  (a token bucket on the monotonic clock);
* ``daily_id_budget`` IDs per UTC day;
* points at one scale per model only: the host's ``[serve] points_scale``, or
  else the first scale the guest asks for, pinned and kept across restarts.
  Points are ``sum_j round(scale * a_j)``; free to vary the scale, a guest
  could bisect every rounding jump and read each feature's points, the bin of
  every feature of the customer (issue 25: 22 of 30 customers, every feature,
  in 14,700 requests, against the former host).

Every request that is answered is appended to the audit log (one JSON line:
UTC time, caller, model id, the customer IDs asked and how many were known).
The host learns which of its customers the guest asks about; that is the
price of online scoring (``protocols/specs/serving.md``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from vfl.data import PartyTable
from vfl.exceptions import ConfigError, VFLError
from vfl.jobs import encode_for_part
from vfl.lr.estimator import HostLogisticRegression
from vfl.lr.messages import MAX_POINTS_SCALE
from vfl.model import ModelPart
from vfl.scorecard import PointsTable, part_points_table
from vfl.serving.messages import PartialScoreReply, PartialScoreRequest
from vfl.tableio import normalize_ids
from vfl.types import FloatArray, IntArray

__all__ = ["ServeLimits", "ServingError", "HostModel", "StoredHostModel", "HostScorer",
           "AuditLog", "MAX_ID_CHARS", "remove_stale_stores"]

#: Longest customer ID accepted in a request.
MAX_ID_CHARS = 256
#: Most points tables (one per scale the guest asked for) kept per model.
_POINTS_CACHE = 4


class ServingError(VFLError):
    """A scoring request refused; ``code`` says why (``invalid``, ``forbidden``,
    ``unknown_model``, ``rate_limited``, ``budget_exhausted``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ServeLimits:
    """A host's own limits on what its guest may ask (``[serve]`` of its config)."""

    max_ids_per_request: int = 100
    requests_per_second: float = 200.0
    burst: int = 400
    daily_id_budget: int = 1_000_000

    def __post_init__(self) -> None:
        if not 1 <= self.max_ids_per_request <= 10_000:
            raise ConfigError("max_ids_per_request must be 1 to 10000.")
        if not (math.isfinite(self.requests_per_second) and self.requests_per_second > 0):
            raise ConfigError("requests_per_second must be a positive number.")
        if self.burst < 1:
            raise ConfigError("burst must be at least 1.")
        if self.daily_id_budget < 1:
            raise ConfigError("daily_id_budget must be at least 1.")


class _PointsTables:
    """A few points tables of a served part, by scale (each costs only its bins)."""

    part: ModelPart

    def __init__(self) -> None:
        self._tables: dict[float, PointsTable] = {}
        self._lock = threading.Lock()

    def _table(self, scale: float) -> PointsTable:
        with self._lock:
            if scale not in self._tables:
                if len(self._tables) >= _POINTS_CACHE:
                    self._tables.pop(next(iter(self._tables)))
                self._tables[scale] = part_points_table(self.part, scale=scale)
            return self._tables[scale]

    def _gather(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, FloatArray]:
        """Per ID a row of ``X`` (-1: unknown), ``X``, and the partial scores of ``X``'s
        rows (at least those the IDs name)."""
        raise NotImplementedError

    def answer(self, ids: Sequence[str], scale: float, per_feature: bool = False
               ) -> tuple[np.ndarray, FloatArray, IntArray, list[str], IntArray]:
        """Per ID: known, partial score (0 if unknown), points at ``scale`` (none if 0), and
        with ``per_feature`` the feature names and points per feature (0 where unknown).
        The customers' rows are read once."""
        where, X, own = self._gather(ids)
        known = where >= 0
        sel = where[known]
        scores = np.zeros(len(ids), dtype=np.float64)
        scores[known] = own[sel]
        points = np.zeros(0, dtype=np.int64)
        names: list[str] = []
        per = np.zeros((0, 0), dtype=np.int64)
        if scale > 0.0:
            table = self._table(scale)
            points = np.zeros(len(ids), dtype=np.int64)
            if per_feature:
                names = table.names
                per = np.zeros((len(ids), len(names)), dtype=np.int64)
            if sel.size:
                rows = X[sel]
                if per_feature:
                    per[known] = table.points_per_feature(rows)
                points[known] = table.score(rows)
        return known, scores, points, names, per

    def lookup(self, ids: Sequence[str], scale: float) -> tuple[np.ndarray, FloatArray, IntArray]:
        """Per ID: known, partial score (0 if unknown), points at ``scale`` (none if 0)."""
        known, scores, points, _, _ = self.answer(ids, scale)
        return known, scores, points

    lower_ids: bool
    strip_ids: bool

    def _normalized(self, ids: Sequence[str]) -> list[str]:
        """``ids`` as the table's IDs were normalised (strip, lower case) when loaded."""
        return list(normalize_ids(pd.Series(list(ids), dtype=object), strip=self.strip_ids,
                                  lower=self.lower_ids))


class HostModel(_PointsTables):
    """One served model: its part, and every customer's partial score by ID."""

    def __init__(self, part: ModelPart, table: PartyTable, *, lower_ids: bool = False,
                 strip_ids: bool = True) -> None:
        if part.role != "host":
            raise ConfigError(f"{part.party}'s model part {part.model_id} is a {part.role}'s "
                              "part; a host serves its own host part.")
        table = table.select(part.features)
        est = HostLogisticRegression.from_part(part)
        self.part = part
        self.model_id = part.model_id
        self.lower_ids, self.strip_ids = lower_ids, strip_ids
        self.X = table.X
        self.scores: FloatArray = np.asarray(est.partial_score(encode_for_part(part, table.X)),
                                             dtype=np.float64)
        self.index = {cid: i for i, cid in enumerate(table.ids)}
        super().__init__()

    @property
    def n_customers(self) -> int:
        """Customers this model can score."""
        return len(self.index)

    def close(self) -> None:
        """Nothing to close (the table is in memory)."""

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Row of each ID in the table (-1: unknown), after the table's ID normalisation."""
        return np.fromiter((self.index.get(i, -1) for i in self._normalized(ids)),
                           dtype=np.int64, count=len(ids))

    def _gather(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, FloatArray]:
        return self.rows(ids), self.X, self.scores


class StoredHostModel(_PointsTables):
    """One served model over a feature table in a DuckDB file (tables larger than memory).

    The table (CSV or Parquet) is copied once into ``store`` with its IDs
    normalised as :func:`vfl.data.load_table` does and a unique index on them;
    the copy is reused while the source file is unchanged (path, size,
    modification time, columns), rebuilt otherwise. A request reads only its
    customers' rows and computes their partial scores as ``vfl predict`` does.
    """

    def __init__(self, part: ModelPart, source: str | Path, store: str | Path, *,
                 id_column: str, lower_ids: bool = False, strip_ids: bool = True) -> None:
        import duckdb

        if part.role != "host":
            raise ConfigError(f"{part.party}'s model part {part.model_id} is a {part.role}'s "
                              "part; a host serves its own host part.")
        self.part, self.model_id = part, part.model_id
        self.features = list(part.features)
        self.estimator = HostLogisticRegression.from_part(part)
        self.store, stamp = store_file(Path(store), Path(source), id_column, self.features,
                                       lower_ids, strip_ids)
        _build_store(Path(source), self.store, stamp, id_column, self.features, lower_ids,
                     strip_ids)
        self._con = duckdb.connect(str(self.store), read_only=True)
        self.lower_ids, self.strip_ids = lower_ids, strip_ids
        row = self._con.execute("SELECT count(*) FROM customers").fetchone()
        self._n = int(row[0]) if row else 0
        super().__init__()

    @property
    def n_customers(self) -> int:
        """Customers this model can score."""
        return self._n

    def _fetch(self, norm: list[str]) -> list[tuple[object, ...]]:
        """The stored rows of these (normalised) IDs: ``(id, f0, f1, ...)``."""
        if not norm:
            return []
        cols = ", ".join(f'"f{j}"' for j in range(len(self.features)))
        with self._con.cursor() as cur:  # one cursor per call: requests run in threads
            rows: list[tuple[object, ...]] = cur.execute(
                f"SELECT id, {cols} FROM customers WHERE id IN (SELECT unnest(?))",  # noqa: S608
                [norm]).fetchall()
        return rows

    def close(self) -> None:
        """Close the store (a model no longer served)."""
        self._con.close()

    def _read(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per ID its row in ``X`` (-1: unknown), and the stored rows of the known ones."""
        norm = self._normalized(ids)
        found = self._fetch(norm)
        at = {r[0]: i for i, r in enumerate(found)}
        X = np.asarray([[np.nan if v is None else v for v in r[1:]] for r in found],
                       dtype=np.float64).reshape(len(found), len(self.features))
        return np.asarray([at.get(i, -1) for i in norm], dtype=np.int64), X

    def _gather(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, FloatArray]:
        where, X = self._read(ids)
        own = (np.asarray(self.estimator.partial_score(encode_for_part(self.part, X)),
                          dtype=np.float64) if X.shape[0] else np.zeros(0))
        return where, X, own


def store_file(store: Path, source: Path, id_column: str, features: list[str],
               lower_ids: bool, strip_ids: bool) -> tuple[Path, str]:
    """The DuckDB file for this source and model (its name carries a digest of both, so a
    changed table or model is a new file: DuckDB caches an open database by path), and the
    stamp recorded in it."""
    try:
        st = source.stat()
    except OSError:
        raise ConfigError(f"{source}: the feature table to serve is missing.") from None
    stamp = json.dumps({"source": str(source.resolve()), "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns, "id": id_column, "features": features,
                        "lower": lower_ids, "strip": strip_ids, "version": 2})
    digest = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    return store.with_name(f"{store.stem}-{digest}{store.suffix or '.duckdb'}"), stamp


def remove_stale_stores(current: Path) -> None:
    """Remove the other stores of this name (older digests: full copies of a table) and
    half-built store folders left by a killed build, beside ``current``."""
    import shutil

    stem = current.stem.rsplit("-", 1)[0]
    for p in current.parent.glob(f"{stem}-*{current.suffix}"):
        if p != current and re.fullmatch(rf"{re.escape(stem)}-[0-9a-f]{{16}}", p.stem):
            p.unlink(missing_ok=True)
    for d in current.parent.glob(".vfl-store-*"):
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)


def _build_store(source: Path, store: Path, stamp: str, id_column: str, features: list[str],
                 lower_ids: bool, strip_ids: bool) -> None:
    """Copy ``source`` into the DuckDB file ``store`` through :func:`vfl.data.load_table`'s
    rules (chunk by chunk: the same ID normalisation, numeric checks and bounds as training
    and ``vfl predict``), unless it is there already. Built in a private (``0700``) folder
    and moved into place; nothing is left behind on failure."""
    import shutil
    import tempfile

    import duckdb

    from vfl.data import load_table
    from vfl.exceptions import DataError
    from vfl.tableio import iter_batches

    if store.is_file():
        return
    store.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".vfl-store-", dir=store.parent))
    tmp = work / store.name
    try:
        con = duckdb.connect(str(tmp))
        try:
            cols = ", ".join(f'"f{j}" DOUBLE' for j in range(len(features)))
            con.execute(f"CREATE TABLE customers (id VARCHAR NOT NULL, {cols})")
            for frame in iter_batches(source, [id_column, *features], id_column=id_column):
                try:
                    t = load_table(frame, id_column=id_column, features=features,
                                   lower_ids=lower_ids, strip_ids=strip_ids)
                except DataError as exc:
                    first = int(frame.index[0]) + 1
                    raise ConfigError(f"{source} (rows from {first:,} on): "
                                      f"{str(exc).replace('<DataFrame>: ', '')}") from None
                chunk = pd.DataFrame({"id": t.ids, **{f"f{j}": t.X[:, j]
                                                     for j in range(len(features))}})
                con.register("chunk", chunk)
                con.execute("INSERT INTO customers SELECT * FROM chunk")
                con.unregister("chunk")
            dup = con.execute("SELECT count(*) - count(DISTINCT id) FROM customers").fetchone()
            if dup and dup[0]:
                raise ConfigError(f"{source}: {dup[0]} duplicate customer IDs; a served table "
                                  "needs one row per customer.")
            con.execute("CREATE UNIQUE INDEX customers_id ON customers (id)")
            con.execute("CREATE TABLE meta (stamp VARCHAR)")
            con.execute("INSERT INTO meta VALUES (?)", [stamp])
        except duckdb.Error as exc:
            raise ConfigError(f"{source}: cannot load the feature table into {store}: "
                              f"{exc}") from None
        finally:
            con.close()
        os.chmod(tmp, 0o600)
        os.replace(tmp, store)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class AuditLog:
    """Append-only JSON lines: who asked about which customers, when (``0600``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)  # an older file too: it names customers
        self._fh: IO[str] = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: dict[str, object]) -> None:
        """Append one record and flush it to the operating system."""
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            self._fh.close()


class HostScorer:
    """Answers :class:`PartialScoreRequest` from ``guest``, within ``limits``.

    ``models`` can be replaced while serving (:meth:`serve_models`, a hot
    reload): requests in flight finish with the models they started with.
    ``clock`` (monotonic seconds) and ``today`` (the UTC date) are for tests.
    """

    def __init__(self, models: Sequence[HostModel | StoredHostModel], *, guest: str,
                 limits: ServeLimits = ServeLimits(), audit: AuditLog | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 today: Callable[[], dt.date] | None = None,
                 share_feature_points: bool = False,
                 budget_file: str | Path | None = None,
                 points_scale: float | None = None,
                 scales_file: str | Path | None = None) -> None:
        self.guest = guest
        if points_scale is not None and not (math.isfinite(points_scale)
                                             and 0.0 < points_scale <= MAX_POINTS_SCALE):
            raise ConfigError(f"points_scale must be in (0, {MAX_POINTS_SCALE:g}]; got "
                              f"{points_scale!r}")
        #: the one points scale answered ([serve] points_scale; None: the first asked, pinned)
        self.points_scale = points_scale
        #: per model, the scale pinned at its first request (kept across restarts)
        self.scales_file = Path(scales_file) if scales_file is not None else None
        self._pins: dict[str, float] = self._load_pins()
        #: answer with per-feature points as well as the total ([serve] share_feature_points)
        self.share_feature_points = share_feature_points
        self.limits = limits
        self.audit = audit
        self._clock = clock
        self._today = today or (lambda: dt.datetime.now(dt.UTC).date())
        self._lock = threading.Lock()
        #: per model served (its caller is the one guest): the token bucket and today's IDs
        self._buckets: dict[str, tuple[float, float]] = {}
        self._day = self._today()
        self._used: dict[str, int] = {}
        #: today's use of the budget, kept across restarts (written at most once a second)
        self.budget_file = Path(budget_file) if budget_file is not None else None
        self._saved_at = -math.inf
        self._save_lock = threading.Lock()
        self._load_budget()
        self._models: dict[str, HostModel | StoredHostModel] = {}
        self.serve_models(models)

    @property
    def model_ids(self) -> list[str]:
        """The models served now."""
        return list(self._models)

    @property
    def models(self) -> list[HostModel | StoredHostModel]:
        """The models served now."""
        return list(self._models.values())

    @property
    def used_today(self) -> int:
        """IDs scored today (UTC), every model together."""
        own = [v for k, v in self._used.items() if k != "*"]
        return sum(own) if own else self._used.get("*", 0)

    def used_today_by_model(self) -> dict[str, int]:
        """IDs scored today (UTC) per model."""
        return dict(self._used)

    def serve_models(self, models: Sequence[HostModel | StoredHostModel]) -> None:
        """Serve exactly ``models`` from now on (a hot reload: add the new model first, then,
        once the guest has switched, drop the old one)."""
        if not models:
            raise ConfigError("A host serves at least one model.")
        self._models = {m.model_id: m for m in models}

    def _load_pins(self) -> dict[str, float]:
        if self.scales_file is None or not self.scales_file.is_file():
            return {}
        try:
            state = json.loads(self.scales_file.read_text()[:65536])
            pins = {str(k): float(v) for k, v in state.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            raise ConfigError(f"{self.scales_file}: not a pinned-scales file (it records the "
                              "one points scale answered per model).") from None
        if any(not (math.isfinite(v) and 0.0 < v <= MAX_POINTS_SCALE) for v in pins.values()):
            raise ConfigError(f"{self.scales_file}: a pinned scale out of range.")
        return pins

    def _check_scale(self, model_id: str, scale: float) -> None:
        """Answer points at one scale per model only (see the module's docstring)."""
        if scale == 0.0 or self.share_feature_points:
            return  # no points; or the host shares every feature's points anyway
        with self._lock:
            pinned = self.points_scale if self.points_scale is not None else self._pins.get(
                model_id)
            if pinned is None:
                self._pins[model_id] = pinned = scale
                if self.scales_file is not None:
                    tmp = self.scales_file.with_name(f".{self.scales_file.name}.tmp")
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "w") as fh:
                        fh.write(json.dumps(self._pins))
                    os.replace(tmp, self.scales_file)
        if scale != pinned:
            where = f" ({self.scales_file})" if self.scales_file is not None else ""
            how = ("this host's [serve] points_scale" if self.points_scale is not None
                   else f"pinned at the first request{where}")
            raise ServingError("forbidden", f"points at scale {scale!r} refused: this host "
                               f"answers model {model_id[:64]!r} at scale {pinned!r} only "
                               f"({how}); another scale would reveal each feature's points")

    def _load_budget(self) -> None:
        if self.budget_file is None or not self.budget_file.is_file():
            return
        try:
            state = json.loads(self.budget_file.read_text()[:65536])
            day = dt.date.fromisoformat(state["day"])
            raw = state["used"]
            # version 1 kept one count for every model: it counts against each of them
            used = ({str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict)
                    else {"*": int(raw)})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"{self.budget_file}: not a daily-budget state file (delete it "
                              "to start the day's count at 0).") from None
        if day == self._day and all(v >= 0 for v in used.values()):
            self._used = used

    def save_budget(self, force: bool = False) -> None:
        """Write today's use of the budget (atomically; at most once a second unless
        ``force``)."""
        if self.budget_file is None:
            return
        now = self._clock()
        with self._lock:
            if not force and now - self._saved_at < 1.0:
                return
            self._saved_at = now
            state = json.dumps({"day": self._day.isoformat(), "used": self._used})
        with self._save_lock:  # one writer of the temporary file at a time
            tmp = self.budget_file.with_name(f".{self.budget_file.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(state)
            os.replace(tmp, self.budget_file)

    def _admit(self, model_id: str, n_ids: int) -> None:
        """Take one request token and ``n_ids`` of today's budget of ``model_id`` (the
        limits are per model: one model's traffic never spends another's), or refuse.

        A host serves at most its current model and the previous one (during a hot
        reload), so its guest reads at most twice ``daily_id_budget`` IDs a day."""
        with self._lock:
            now = self._clock()
            rate, burst = self.limits.requests_per_second, self.limits.burst
            tokens, refilled = self._buckets.get(model_id, (float(burst), now))
            tokens = min(float(burst), tokens + (now - refilled) * rate)
            self._buckets[model_id] = (tokens, now)
            today = self._today()
            if today != self._day:
                self._day, self._used = today, {}
            used = self._used.get(model_id, self._used.get("*", 0))
            if tokens < 1.0:
                raise ServingError("rate_limited", f"more than {rate:g} requests per second "
                                   f"for model {model_id[:64]} (bursts of {burst}): slow down "
                                   "and retry")
            if used + n_ids > self.limits.daily_id_budget:
                raise ServingError("budget_exhausted",
                                   f"today's budget of {self.limits.daily_id_budget} customer "
                                   f"IDs for model {model_id[:64]} is used up (it resets at "
                                   "00:00 UTC)")
            self._buckets[model_id] = (tokens - 1.0, now)
            self._used[model_id] = used + n_ids

    def score(self, caller: str, req: PartialScoreRequest) -> PartialScoreReply:
        """The answer to ``caller``'s request (``caller``: the verified certificate's name).

        Raises
        ------
        ServingError
            Another caller than the guest, an unknown model, a request beyond
            the limits, a malformed request; nothing is scored or logged then
            (beyond the refusal the server counts).
        """
        if caller != self.guest:
            raise ServingError("forbidden", f"{caller!r} is not this host's guest")
        ids = req.customer_ids
        if len(ids) > self.limits.max_ids_per_request:
            raise ServingError("invalid", f"{len(ids)} customer IDs in one request; at most "
                               f"{self.limits.max_ids_per_request}")
        if any(not isinstance(i, str) or not 0 < len(i) <= MAX_ID_CHARS for i in ids):
            raise ServingError("invalid", f"every customer ID must be 1 to {MAX_ID_CHARS} "
                               "characters")
        scale = float(req.scale)
        if not (math.isfinite(scale) and (scale == 0.0 or 0.0 < scale <= MAX_POINTS_SCALE)):
            raise ServingError("invalid", f"the points scale must be 0 or in (0, "
                               f"{MAX_POINTS_SCALE:g}]")
        model = self._models.get(req.model_id)
        if model is None:
            raise ServingError("unknown_model", f"this host serves model(s) "
                               f"{', '.join(self._models)}, not {req.model_id[:64]!r}")
        self._check_scale(model.model_id, scale)
        self._admit(model.model_id, len(ids))
        if ids:
            self.save_budget()
        known, scores, points, names, per_feature = model.answer(
            ids, scale, per_feature=self.share_feature_points)
        if self.audit is not None and ids:
            self.audit.write({"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                              "caller": caller, "model_id": model.model_id,
                              "customers": list(ids), "known": int(known.sum())})
        return PartialScoreReply(model.model_id, np.packbits(known).tobytes(), scores, points,
                                 names, per_feature)
