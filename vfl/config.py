"""Per-party TOML configuration for networked runs (``vfl run --config party.toml``).

Example (the guest; see ``examples/two_banks/`` for all three)::

    [job]
    id = "credit-2026-11"          # the same on every party
    output = "out/bank_a"          # model part (and, on the guest, report.json)
    timeout_seconds = 600          # longest wait for any one message
    connect_timeout_seconds = 60   # how long peers may take to come up
    link_grace_seconds = 30        # a dropped link is re-dialled this long before the job stops

    [party]
    name = "bank_a"                # = the CN of this party's certificate
    role = "guest"                 # guest | host | arbiter
    listen = "127.0.0.1:50051"

    [tls]
    ca = "certs/ca.pem"
    cert = "certs/bank_a.pem"
    key = "certs/bank_a.key"

    [[peers]]
    name = "bank_b"
    role = "host"
    address = "127.0.0.1:50052"
    # cert = "certs/bank_b.pem"    # optional: pin this exact certificate

    [[peers]]
    name = "arbiter"
    role = "arbiter"
    address = "127.0.0.1:50053"

    [data]                         # guest and hosts
    path = "bank_a.csv"
    id_column = "customer_id"
    label_column = "default"       # guest only
    # features = ["age", "income"] # default: every other column
    # exclude = ["branch"]         # leave these columns out
    # validation_path = "bank_a_valid.csv"  # all parties or none: per-epoch validation
    # lower_ids = false

    [train]                        # guest only; any TrainConfig field
    epochs = 6
    # score_training_rows = false  # guest only: ask hosts to score every training row
                                   # afterwards (each host must allow it; see [security])

    [security]                     # this party's own limits on its peers (vfl/policy.py)
    allow_insecure_key_size = false
    # max_validation_share = 0.3   # host: largest validation hold-out it accepts
    # allow_training_scores = false # host: answer the guest's training-row scoring
    # max_psi_set_size = 20000000  # largest ID set a peer may bring to PSI
    # max_message_bytes = 1073741824  # ceiling on one message from a peer
    # max_inbox_messages = 8       # messages buffered per peer before back-pressure
    # max_key_bits = 8192          # largest Paillier key accepted from a peer

    [compute]                      # guest and hosts: where the ciphertext work runs
    engine = "local"               # local (default) | dask
    # workers = 8                  # local: pool processes (default: the cores)
    # engine = "dask"              # or: this party's own Dask cluster (examples/dask_party/)
    # scheduler = "tls://10.0.0.5:8786"
    # ca = "compute/ca.pem"        # the party's OWN compute CA, never [tls] ca
    # cert = "compute/client.pem"  # this process's client certificate from it
    # key = "compute/client.key"
    # connect_timeout_seconds = 10 # fail if the scheduler (or a worker) is not there by then
    # allow_plain_tcp = false      # tests only: accept a tcp:// scheduler

    [checkpoint]                   # every party: its state after every epoch (vfl run --resume)
    # enabled = true
    # dir = "out/bank_a/checkpoints"   # default: <output>/checkpoints
    # every_batches = 0                # guest: also after every N batches within an epoch, for
                                       # long epochs (0: at epoch ends only); hosts follow it
    # passphrase_file = "ckpt.pass"    # arbiter: seals its key pair (or VFL_CHECKPOINT_PASSPHRASE);
                                       # owner-only file; without one the arbiter writes none

Relative paths are resolved against the folder of the TOML file. Every error
names the file and the key.
"""

from __future__ import annotations

import difflib
import tomllib
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vfl.checkpoint import MAX_EVERY_BATCHES
from vfl.crypto.engine import ComputeConfig
from vfl.exceptions import ConfigError
from vfl.jobs import JobOptions
from vfl.lr.config import TrainConfig
from vfl.policy import SecurityPolicy
from vfl.roles import Role
from vfl.transport.base import LINK_GRACE

__all__ = ["PartyConfig", "PeerConfig", "DataConfig", "ComputeConfig", "load_party_config"]


@dataclass(frozen=True)
class PeerConfig:
    """A peer: its name, role, address and optional pinned certificate."""

    name: str
    role: Role
    address: str
    cert: Path | None = None
    #: a host's online scoring service (``vfl serve``), for the guest's ``vfl serve``
    serve_address: str | None = None


@dataclass(frozen=True)
class ServeConfig:
    """A party's ``[serve]`` section (``vfl serve``, :mod:`vfl.serving`)."""

    listen: str | None = None  # host: gRPC scoring service; guest: HTTP API
    model: Path | None = None  # default: <output>/<name>.json
    # host: its limits on the guest
    max_ids_per_request: int = 100
    requests_per_second: float = 200.0
    burst: int = 400
    daily_id_budget: int = 1_000_000
    audit_log: Path | None = None  # default: <output>/scoring_audit.jsonl
    share_feature_points: bool = False  # host: also send its points per feature
    points_scale: float | None = None  # host: the one points scale answered (None: first asked)
    store: str = "memory"  # host: "memory", or "duckdb" for tables larger than memory
    store_path: Path | None = None  # duckdb: default <output>/scoring_store.duckdb
    # guest: what to do without a host's score, batch size, how long to wait for a host
    fallback: str = "host_average"
    max_batch: int = 100
    host_timeout: float = 2.0
    ids_per_host_request: int = 100  # at most each host's max_ids_per_request
    # guest: who may call the API ("api_keys" with a clients file, or "none" behind a
    # gateway that authenticates; unset: vfl serve refuses to start), what stays open
    auth: str | None = None
    clients: Path | None = None
    api_audit_log: Path | None = None  # default: <output>/api_audit.jsonl
    open_metrics: bool = False
    open_docs: bool = False
    # guest, auth = "mtls": the API's own certificate and key, and the CA of its clients
    api_cert: Path | None = None
    api_key: Path | None = None
    client_ca: Path | None = None
    # guest: a feature outside its training range: "refuse" (422), "clip" or "flag"
    range_policy: str = "refuse"
    range_margin: float = 0.1
    # guest: the scorecard's scaling (as vfl predict --pdo/--base-score/--base-odds)
    pdo: float = 20.0
    base_score: float = 600.0
    base_odds: float = 50.0


@dataclass(frozen=True)
class DataConfig:
    """This party's data file and columns."""

    path: Path
    id_column: str
    label_column: str | None = None
    features: list[str] | None = None
    lower_ids: bool = False
    strip_ids: bool = True
    validation_path: Path | None = None
    exclude: list[str] = field(default_factory=list)



@dataclass(frozen=True)
class CheckpointConfig:
    """A party's ``[checkpoint]`` section (:mod:`vfl.checkpoint`)."""

    enabled: bool = True
    folder: Path | None = None  # None: <output>/checkpoints
    passphrase_file: Path | None = None
    every_batches: int = 0  # the guest's: also within epochs, every N batches (0: no)


@dataclass(frozen=True)
class PartyConfig:
    """One party's validated configuration."""

    source: Path
    job_id: str
    output: Path
    timeout: float
    connect_timeout: float
    name: str
    role: Role
    listen: str
    ca: Path
    cert: Path
    key: Path
    peers: list[PeerConfig]
    data: DataConfig | None
    train: TrainConfig
    allow_insecure_key_size: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    policy: SecurityPolicy = field(default_factory=SecurityPolicy)
    options: JobOptions = field(default_factory=JobOptions)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    #: seconds a dropped link to a peer is re-dialled before the job stops
    link_grace: float = LINK_GRACE
    serve: ServeConfig = field(default_factory=ServeConfig)

    @property
    def checkpoint_folder(self) -> Path:
        """Where this party's checkpoints go."""
        return self.checkpoint.folder or self.output / "checkpoints"

    def peers_with(self, role: Role) -> list[PeerConfig]:
        """The peers that play ``role``, in file order."""
        return [p for p in self.peers if p.role == role]

    @property
    def guest(self) -> str:
        """Name of the guest (this party or a peer)."""
        return self.name if self.role == Role.GUEST else self.peers_with(Role.GUEST)[0].name

    @property
    def arbiter(self) -> str:
        """Name of the arbiter (this party or a peer)."""
        return self.name if self.role == Role.ARBITER else self.peers_with(Role.ARBITER)[0].name

    @property
    def hosts(self) -> list[str]:
        """Names of the hosts this party knows, in file order."""
        mine = [self.name] if self.role == Role.HOST else []
        return mine + [p.name for p in self.peers_with(Role.HOST)]


#: The keys each section accepts (``[train]`` and ``[security]``: the fields of
#: TrainConfig, JobOptions and SecurityPolicy).
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "job": ("id", "output", "timeout_seconds", "connect_timeout_seconds", "link_grace_seconds"),
    "party": ("name", "role", "listen"),
    "tls": ("ca", "cert", "key"),
    "peers": ("name", "role", "address", "cert", "serve_address"),
    "data": ("path", "id_column", "label_column", "features", "exclude", "lower_ids",
             "strip_ids", "validation_path"),
    "compute": ("engine", "workers", "scheduler", "ca", "cert", "key", "allow_plain_tcp",
                "connect_timeout_seconds"),
    "checkpoint": ("enabled", "dir", "passphrase_file", "every_batches"),
    "serve": ("listen", "model", "max_ids_per_request", "requests_per_second", "burst",
              "daily_id_budget", "audit_log", "fallback", "max_batch", "host_timeout_seconds",
              "ids_per_host_request", "store", "store_path", "share_feature_points",
              "points_scale", "pdo", "base_score", "base_odds", "auth", "clients",
              "api_audit_log", "open_metrics", "open_docs", "range_policy", "range_margin",
              "api_cert", "api_key", "client_ca"),
}



#: TOML value checks per annotation: (accepts, what to call it); bool is not an int here.
_TOML_TYPES: dict[Any, tuple[Any, str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


class _Reader:
    def __init__(self, source: Path, data: dict[str, Any]) -> None:
        self.source = source
        self.data = data

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {msg}")

    def only(self, section: dict[str, Any], sect: str, allowed: Sequence[str]) -> None:
        """Refuse keys the section does not know, suggesting the closest known one."""
        for key in section:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.err(f"{sect}.{key}", f"unknown key; {hint}known: "
                                                f"{', '.join(sorted(allowed))}")

    def typed(self, section: dict[str, Any], sect: str, cls: type) -> dict[str, Any]:
        """``section``'s values checked against the annotations of dataclass ``cls``."""
        hints = typing.get_type_hints(cls)
        for key, value in section.items():
            want = hints[key]
            if want in _TOML_TYPES and not _TOML_TYPES[want][0](value):
                raise self.err(f"{sect}.{key}", f"must be {_TOML_TYPES[want][1]}, got "
                                                f"{_type_name(value)} {value!r}")
        return section

    def table(self, key: str, *, required: bool = True) -> dict[str, Any]:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.err(f"[{key}]", "missing section")
            return {}
        if not isinstance(value, dict):
            raise self.err(f"[{key}]", "must be a table")
        return value

    def get(self, section: dict[str, Any], sect: str, key: str, typ: type | tuple[type, ...],
            default: Any = ..., ) -> Any:
        if key not in section:
            if default is ...:
                raise self.err(f"{sect}.{key}", "missing")
            return default
        value = section[key]
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
            names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                     list: "a list", dict: "a table"}
            kinds = typ if isinstance(typ, tuple) else (typ,)
            want = " or ".join(names.get(k, k.__name__) for k in kinds)
            raise self.err(f"{sect}.{key}", f"must be {want}, got {_type_name(value)} {value!r}")
        return value

    def path(self, section: dict[str, Any], sect: str, key: str, *, must_exist: bool = True,
             default: Any = ...) -> Path:
        raw = self.get(section, sect, key, str, default)
        if raw is None:
            return None  # type: ignore[return-value]
        p = Path(raw)
        if not p.is_absolute():
            p = self.source.parent / p
        if must_exist and not p.exists():
            raise self.err(f"{sect}.{key}", f"file not found: {p}")
        return p


def _address(reader: _Reader, value: str, key: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise reader.err(key, f"must be host:port, got {value!r}")
    return value


def load_party_config(path: str | Path) -> PartyConfig:
    """Read and validate a party's TOML file.

    Raises
    ------
    ConfigError
        Naming the file and the key that is missing or wrong.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"Config file not found: {source}")
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not a UTF-8 text file; a party's config is TOML text "
                          "(see examples/two_banks/).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    r = _Reader(source, raw)
    known = {"job", "party", "tls", "peers", "data", "train", "security", "compute",
             "checkpoint", "serve"}
    unknown = sorted(set(raw) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"did you mean [{close[0]}]? " if close else ""
        raise r.err(f"[{unknown[0]}]", f"unknown section; {hint}expected one of "
                                       f"{', '.join(sorted(known))}")

    job = r.table("job")
    party = r.table("party")
    tls = r.table("tls")
    security = r.table("security", required=False)
    for sect, table in (("job", job), ("party", party), ("tls", tls)):
        r.only(table, sect, SECTION_KEYS[sect])
    job_id = r.get(job, "job", "id", str)
    if not job_id:
        raise r.err("job.id", "must not be empty")
    name = r.get(party, "party", "name", str)
    role_raw = r.get(party, "party", "role", str)
    try:
        role = Role(role_raw)
    except ValueError:
        raise r.err("party.role", f"must be guest, host or arbiter, got {role_raw!r}") from None
    listen = _address(r, r.get(party, "party", "listen", str), "party.listen")

    peers_raw = raw.get("peers", [])
    if not isinstance(peers_raw, list) or not peers_raw:
        raise r.err("[[peers]]", "at least one peer is needed")
    peers = []
    for i, p in enumerate(peers_raw):
        sect = f"peers[{i}]"
        if not isinstance(p, dict):
            raise r.err(sect, "must be a table")
        r.only(p, sect, SECTION_KEYS["peers"])
        prole_raw = r.get(p, sect, "role", str)
        try:
            prole = Role(prole_raw)
        except ValueError:
            raise r.err(f"{sect}.role", f"must be guest, host or arbiter, got {prole_raw!r}") from None
        pname = r.get(p, sect, "name", str)
        if pname == name:
            raise r.err(f"{sect}.name", "a peer cannot have this party's own name")
        serve_address = r.get(p, sect, "serve_address", str, None)
        if serve_address is not None:
            if prole != Role.HOST:
                raise r.err(f"{sect}.serve_address", "only a host runs a scoring service")
            serve_address = _address(r, serve_address, f"{sect}.serve_address")
        peers.append(PeerConfig(pname, prole, _address(r, r.get(p, sect, "address", str),
                                                       f"{sect}.address"),
                                r.path(p, sect, "cert", default=None), serve_address))
    names = [p.name for p in peers]
    if len(set(names)) != len(names):
        raise r.err("[[peers]]", "peer names must be unique")
    roles = [role, *[p.role for p in peers]]
    if roles.count(Role.GUEST) != 1 or roles.count(Role.ARBITER) != 1 or Role.HOST not in roles:
        raise r.err("[[peers]]", "a job needs exactly one guest, one arbiter and at least one "
                                 "host (counting this party)")

    data = None
    if role != Role.ARBITER:
        d = r.table("data")
        r.only(d, "data", SECTION_KEYS["data"])
        features = r.get(d, "data", "features", list, None)
        if features is not None and not all(isinstance(f, str) for f in features):
            raise r.err("data.features", "must be a list of column names")
        exclude = r.get(d, "data", "exclude", list, [])
        if not all(isinstance(f, str) for f in exclude):
            raise r.err("data.exclude", "must be a list of column names")
        label = r.get(d, "data", "label_column", str, None)
        if role == Role.GUEST and not label:
            raise r.err("data.label_column", "the guest needs the label column")
        if role == Role.HOST and label:
            raise r.err("data.label_column", "a host has no label; remove this key")
        data = DataConfig(r.path(d, "data", "path"), r.get(d, "data", "id_column", str), label,
                          features, r.get(d, "data", "lower_ids", bool, False),
                          r.get(d, "data", "strip_ids", bool, True),
                          r.path(d, "data", "validation_path", default=None), list(exclude))

    train_raw = r.table("train", required=False)
    if train_raw and role != Role.GUEST:
        raise r.err("[train]", "only the guest sets training parameters")
    train_raw = dict(train_raw)
    option_names = {f.name for f in fields(JobOptions)}
    options_raw = {k: train_raw.pop(k) for k in list(train_raw) if k in option_names}
    allowed = {f.name for f in fields(TrainConfig)} - {"allow_insecure_key_size"}
    r.only(train_raw, "train", sorted(allowed | option_names))
    r.typed(train_raw, "train", TrainConfig)
    r.typed(options_raw, "train", JobOptions)
    try:
        options = JobOptions(**options_raw)
    except ConfigError as exc:
        raise r.err("[train]", str(exc)) from None
    r.only(security, "security", SecurityPolicy.names())
    r.typed(security, "security", SecurityPolicy)
    insecure = r.get(security, "security", "allow_insecure_key_size", bool, False)
    try:
        policy = SecurityPolicy(**security).validate()
    except (ConfigError, TypeError) as exc:
        raise r.err("[security]", str(exc)) from None
    try:
        train = TrainConfig(**train_raw, allow_insecure_key_size=insecure)
    except (ConfigError, TypeError) as exc:
        raise r.err("[train]", str(exc)) from None

    tls_ca = r.path(tls, "tls", "ca")
    compute = _compute(r, r.table("compute", required=False), role, tls_ca)
    ckpt = r.table("checkpoint", required=False)
    r.only(ckpt, "checkpoint", SECTION_KEYS["checkpoint"])
    checkpoint = CheckpointConfig(
        enabled=r.get(ckpt, "checkpoint", "enabled", bool, True),
        folder=r.path(ckpt, "checkpoint", "dir", must_exist=False, default=None),
        passphrase_file=r.path(ckpt, "checkpoint", "passphrase_file", default=None),
        every_batches=r.get(ckpt, "checkpoint", "every_batches", int, 0))
    if not 0 <= checkpoint.every_batches <= MAX_EVERY_BATCHES:
        raise r.err("checkpoint.every_batches",
                    f"must be 0 to {MAX_EVERY_BATCHES}, got {checkpoint.every_batches}")
    if checkpoint.every_batches and role != Role.GUEST:
        raise r.err("checkpoint.every_batches",
                    "is the guest's to set (the hosts follow the guest's interval; the arbiter "
                    "writes at epoch ends)")

    serve = _serve(r, r.table("serve", required=False), role)

    return PartyConfig(
        source=source,
        job_id=job_id,
        output=r.path(job, "job", "output", must_exist=False, default=f"out/{name}"),
        timeout=_seconds(r, job, "timeout_seconds", 600, low=1),
        connect_timeout=_seconds(r, job, "connect_timeout_seconds", 60, low=1),
        link_grace=_seconds(r, job, "link_grace_seconds", LINK_GRACE, low=0),
        name=name,
        role=role,
        listen=listen,
        ca=tls_ca,
        cert=r.path(tls, "tls", "cert"),
        key=r.path(tls, "tls", "key"),
        peers=peers,
        data=data,
        train=train,
        allow_insecure_key_size=insecure,
        policy=policy,
        options=options,
        compute=compute,
        checkpoint=checkpoint,
        serve=serve,
    )


def _serve(r: _Reader, section: dict[str, Any], role: Role) -> ServeConfig:
    """The ``[serve]`` section: where ``vfl serve`` listens, which part, the host's limits."""
    r.only(section, "serve", SECTION_KEYS["serve"])
    if section and role == Role.ARBITER:
        raise r.err("[serve]", "the arbiter takes no part in online scoring")
    listen = r.get(section, "serve", "listen", str, None)
    if listen is not None:
        listen = _address(r, listen, "serve.listen")
    host_keys = ("max_ids_per_request", "requests_per_second", "burst", "daily_id_budget",
                 "audit_log", "store", "store_path", "share_feature_points", "points_scale")
    if role == Role.GUEST:
        for k in host_keys:
            if k in section:
                raise r.err(f"serve.{k}", "is a host's limit on its guest")
    else:
        for k in ("fallback", "max_batch", "host_timeout_seconds", "ids_per_host_request",
                  "pdo", "base_score", "base_odds", "auth", "clients", "api_audit_log",
                  "open_metrics", "open_docs", "range_policy", "range_margin", "api_cert",
                  "api_key", "client_ca"):
            if k in section:
                raise r.err(f"serve.{k}", "is the guest's setting")
    fallback = r.get(section, "serve", "fallback", str, "host_average")
    if fallback not in ("host_average", "error"):
        raise r.err("serve.fallback", f"must be 'host_average' or 'error', got {fallback!r}")
    max_batch = r.get(section, "serve", "max_batch", int, 100)
    if not 1 <= max_batch <= 10_000:
        raise r.err("serve.max_batch", f"must be 1 to 10000, got {max_batch}")
    host_timeout = float(r.get(section, "serve", "host_timeout_seconds", (int, float), 2.0))
    per_request = r.get(section, "serve", "ids_per_host_request", int, 100)
    store = r.get(section, "serve", "store", str, "memory")
    if store not in ("memory", "duckdb"):
        raise r.err("serve.store", f"must be 'memory' or 'duckdb', got {store!r}")
    if not 1 <= per_request <= 10_000:
        raise r.err("serve.ids_per_host_request", f"must be 1 to 10000, got {per_request}")
    from vfl.serving.auth import AUTH_MODES

    auth = r.get(section, "serve", "auth", str, None)
    if auth is not None and auth not in AUTH_MODES:
        raise r.err("serve.auth", f"must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
    clients = r.path(section, "serve", "clients", must_exist=False, default=None)
    from vfl.preprocess import RANGE_POLICIES

    policy = r.get(section, "serve", "range_policy", str, "refuse")
    if policy not in RANGE_POLICIES:
        raise r.err("serve.range_policy", f"must be one of {', '.join(RANGE_POLICIES)}, got "
                    f"{policy!r}")
    if auth in ("api_keys", "mtls") and clients is None:
        raise r.err("serve.clients", f"is needed with auth = \"{auth}\": the clients file "
                    "(vfl serve-key --clients FILE --name NAME adds a key; a [[client]] with "
                    "cert_name a certificate)")
    api_tls = {k: r.path(section, "serve", k, must_exist=True, default=None)
               for k in ("api_cert", "api_key", "client_ca")}
    if auth == "mtls" and None in api_tls.values():
        missing = [k for k, v in api_tls.items() if v is None]
        raise r.err(f"serve.{missing[0]}", "is needed with auth = \"mtls\": the API's "
                    "certificate and key, and the CA that issues its clients' certificates")
    if not 0.01 <= host_timeout <= 600:
        raise r.err("serve.host_timeout_seconds", f"must be 0.01 to 600, got {host_timeout:g}")
    cfg = ServeConfig(
        listen=listen,
        model=r.path(section, "serve", "model", must_exist=False, default=None),
        max_ids_per_request=r.get(section, "serve", "max_ids_per_request", int, 100),
        requests_per_second=float(r.get(section, "serve", "requests_per_second", (int, float),
                                        200.0)),
        burst=r.get(section, "serve", "burst", int, 400),
        daily_id_budget=r.get(section, "serve", "daily_id_budget", int, 1_000_000),
        audit_log=r.path(section, "serve", "audit_log", must_exist=False, default=None),
        fallback=fallback, max_batch=max_batch, host_timeout=host_timeout,
        ids_per_host_request=per_request, store=store,
        share_feature_points=r.get(section, "serve", "share_feature_points", bool, False),
        points_scale=(None if section.get("points_scale") is None else
                      float(r.get(section, "serve", "points_scale", (int, float), 0.0))),
        pdo=float(r.get(section, "serve", "pdo", (int, float), 20.0)),
        base_score=float(r.get(section, "serve", "base_score", (int, float), 600.0)),
        base_odds=float(r.get(section, "serve", "base_odds", (int, float), 50.0)),
        store_path=r.path(section, "serve", "store_path", must_exist=False, default=None),
        auth=auth, clients=clients,
        api_audit_log=r.path(section, "serve", "api_audit_log", must_exist=False, default=None),
        open_metrics=r.get(section, "serve", "open_metrics", bool, False),
        open_docs=r.get(section, "serve", "open_docs", bool, False),
        range_policy=r.get(section, "serve", "range_policy", str, "refuse"),
        api_cert=api_tls["api_cert"], api_key=api_tls["api_key"],
        client_ca=api_tls["client_ca"],
        range_margin=float(r.get(section, "serve", "range_margin", (int, float), 0.1)))
    from vfl.scorecard import Scorecard
    from vfl.serving.host import ServeLimits

    try:
        ServeLimits(cfg.max_ids_per_request, cfg.requests_per_second, cfg.burst,
                    cfg.daily_id_budget)
        Scorecard(cfg.base_score, cfg.base_odds, cfg.pdo)
    except ConfigError as exc:
        raise r.err("[serve]", str(exc)) from None
    if not 0 < cfg.pdo <= 1000:  # the points scale (pdo / ln 2 x slope) stays within 10^4
        raise r.err("serve.pdo", f"must be in (0, 1000], got {cfg.pdo:g}")
    return cfg


def _seconds(r: _Reader, job: dict[str, Any], key: str, default: float, *, low: float,
             high: float = 7 * 86400) -> float:
    """A ``[job]`` duration in seconds, within ``[low, high]``."""
    value = float(r.get(job, "job", key, (int, float), default))
    if not low <= value <= high:
        raise r.err(f"job.{key}", f"must be between {low:g} and {high:g} seconds, got {value:g}")
    return value


def _compute(r: _Reader, section: dict[str, Any], role: Role, tls_ca: Path) -> ComputeConfig:
    """The ``[compute]`` section: where this party's ciphertext work runs."""
    r.only(section, "compute", SECTION_KEYS["compute"])
    engine = r.get(section, "compute", "engine", str, "local")
    if role == Role.ARBITER and (engine != "local" or "workers" in section):
        raise r.err("[compute]", "the arbiter's work (decryption) runs in its own process, "
                                 "and its private key never leaves it; remove engine/workers "
                                 "from its [compute] section")
    paths = {k: r.path(section, "compute", k, default=None) for k in ("ca", "cert", "key")}
    ca = paths["ca"]
    if ca is not None and (ca.resolve() == tls_ca.resolve()
                           or ca.read_bytes().strip() == tls_ca.read_bytes().strip()):
        raise r.err("compute.ca", f"{ca} is the federation's CA ([tls] ca): a Dask cluster "
                                  "admits every certificate its CA issued, so every peer could "
                                  "run code on this party's cluster. Give the cluster a CA of "
                                  "its own (vfl.certs.write_compute_certs).")
    try:
        return ComputeConfig(
            engine=engine,
            workers=r.get(section, "compute", "workers", int, None),
            scheduler=r.get(section, "compute", "scheduler", str, None),
            allow_plain_tcp=r.get(section, "compute", "allow_plain_tcp", bool, False),
            connect_timeout=float(r.get(section, "compute", "connect_timeout_seconds",
                                        (int, float), 10.0)),
            **paths)
    except ConfigError as exc:
        raise r.err("[compute]", str(exc)) from None
