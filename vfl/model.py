"""Model parts: each party saves and loads only its own slice of the model.

A part is a JSON file with a format name, a version and the model id that
all parts of one model share. Files are written atomically (write to a
temporary file in the same folder, then rename), so a crash never leaves a
half-written part that looks complete.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vfl.exceptions import DataError

__all__ = ["ModelPart", "save_model_part", "load_model_part", "atomic_write_text"]

FORMAT = "vfl.model-part"
#: Most features one model part may list.
MAX_PART_FEATURES = 100_000
#: Largest model part file read.
MAX_PART_BYTES = 64 << 20
VERSION = 1


@dataclass
class ModelPart:
    """One party's share of a trained model.

    Attributes
    ----------
    model_id : str
        Shared by every part of one model.
    role : {"guest", "host"}
    party : str
    features : list of str
        This party's feature names (never another party's).
    coef : list of float
        This party's weights, in ``features`` order.
    intercept : float or None
        The guest's intercept.
    preprocessing : dict
        This party's imputation and scaling, fitted on its training rows.
    training : dict
        Hyper-parameters and run summary.
    peers : dict
        Names of the other parties (no data about them).
    calibration : dict or None
        The guest's Platt scaling of the joint score, ``{"method": "platt",
        "slope": a, "intercept": c}``: the model's probability is
        ``sigmoid(a * s + c)`` for the joint score ``s``. None: uncalibrated
        (no validation rows).
    """

    model_id: str
    role: str
    party: str
    features: list[str]
    coef: list[float]
    intercept: float | None
    preprocessing: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    peers: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> str:
        """Serialise with the format header."""
        return json.dumps({"format": FORMAT, "version": VERSION, **asdict(self)}, indent=2)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (same-folder temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model_part(part: ModelPart, path: str | Path) -> Path:
    """Write ``part`` to ``path`` atomically; returns the path."""
    atomic_write_text(path, part.to_json())
    return Path(path)


def load_model_part(path: str | Path) -> ModelPart:
    """Read and check a model part file.

    Raises
    ------
    DataError
        If the file is missing, not a vfl model part, or of another version.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"Model part not found: {p}")
    if p.stat().st_size > MAX_PART_BYTES:
        raise DataError(f"{p} is {p.stat().st_size:,} bytes; a model part is at most "
                        f"{MAX_PART_BYTES:,}.")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{p} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{p} is not a vfl model part.")
    if data.get("version") != VERSION:
        raise DataError(f"{p} is a model part of version {data.get('version')}; "
                        f"this vfl reads version {VERSION}.")
    fields = {k: v for k, v in data.items() if k not in ("format", "version")}
    try:
        part = ModelPart(**fields)
    except TypeError as exc:
        raise DataError(f"{p} has unexpected fields: {exc}") from None
    if len(part.coef) != len(part.features):
        raise DataError(f"{p}: {len(part.coef)} weights for {len(part.features)} features.")
    check_part(part, p)
    return part


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_part(part: ModelPart, source: str | Path) -> None:
    """Refuse a part whose values are not what vfl writes (types, finite numbers, sizes)."""
    where = str(source)
    if part.role not in ("guest", "host"):
        raise DataError(f"{where}: role {part.role!r} is not 'guest' or 'host'.")
    if not isinstance(part.features, list) or not all(isinstance(f, str) for f in part.features):
        raise DataError(f"{where}: 'features' must be a list of names.")
    if len(part.features) > MAX_PART_FEATURES:
        raise DataError(f"{where}: {len(part.features)} features; at most {MAX_PART_FEATURES}.")
    if not isinstance(part.coef, list) or not all(_finite(c) for c in part.coef):
        raise DataError(f"{where}: 'coef' must be a list of finite numbers.")
    if part.intercept is not None and not _finite(part.intercept):
        raise DataError(f"{where}: 'intercept' must be a finite number or null.")
    cal = part.calibration
    if cal is not None:
        if (not isinstance(cal, dict) or cal.get("method") != "platt"
                or not _finite(cal.get("slope")) or not _finite(cal.get("intercept"))
                or set(cal) - {"method", "slope", "intercept", "fitted_on"}):
            raise DataError(f"{where}: 'calibration' must be {{\"method\": \"platt\", "
                            "\"slope\": number, \"intercept\": number}} or null.")
        if part.role != "guest":
            raise DataError(f"{where}: only the guest's part holds a calibration.")
