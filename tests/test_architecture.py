"""Import direction: protocol code never depends on a concrete transport or the CLI.

Layers, top to bottom: ``vfl/cli.py``; the jobs and their runners
(``runner.py``, ``pipeline.py``, ``jobs.py``, ``demo.py``, ``report.py``, ...);
the protocols (``vfl/lr``, ``vfl/psi``, ``vfl/binning``) over ``vfl/crypto``. A
protocol's pure state (its messages and step classes) does no I/O: only its
``driver.py`` talks to a :class:`~vfl.channel.Channel`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vfl"


def _glob(package: str, *, exclude: tuple[str, ...] = ()) -> list[Path]:
    return [p for p in sorted((ROOT / package).glob("*.py")) if p.name not in exclude]


PURE = (_glob("psi") + _glob("lr") + _glob("crypto") + _glob("binning", exclude=("driver.py",)))
FORBIDDEN = ("vfl.transport", "vfl.cli", "vfl.pipeline", "grpc", "socket", "threading", "pickle")
#: The pure state of the protocols split into messages / steps / driver: no Channel either.
STATE = (_glob("psi", exclude=("driver.py", "__init__.py"))
         + _glob("binning", exclude=("driver.py", "__init__.py"))
         + _glob("lr", exclude=("driver.py", "__init__.py", "estimator.py")))
PROTOCOLS = _glob("lr") + _glob("psi") + _glob("binning") + _glob("crypto")
TOP = ("vfl.jobs", "vfl.pipeline", "vfl.runner", "vfl.outputs", "vfl.demo", "vfl.report",
       "vfl.cli")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (``from a import b`` also gives ``a.b``)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(
        ".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base:
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _file_of(module: str) -> Path | None:
    if module != "vfl" and not module.startswith("vfl."):
        return None
    base = ROOT.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None  # a name imported from a module, not a module


def _reachable(path: Path) -> set[str]:
    """``vfl`` modules imported by ``path``, directly or through other ``vfl`` modules it names.

    Static: an ``import vfl.a.b`` counts ``vfl.a.b`` and what it imports, not
    the ``vfl`` and ``vfl.a`` package initialisers Python also runs.
    """
    seen: set[str] = set()
    todo = [path]
    done: set[Path] = set()
    while todo:
        p = todo.pop()
        if p in done:
            continue
        done.add(p)
        for m in _imports(p):
            f = _file_of(m)
            if f is not None:
                seen.add(_module_name(f))
                todo.append(f)
    return seen


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("path", PURE, ids=_rel)
def test_protocol_modules_are_pure(path):
    bad = [m for m in _imports(path) if m.startswith(FORBIDDEN)]
    assert not bad, f"{path} imports {bad}"


def test_the_state_list_covers_the_split_protocols():
    names = {_rel(p) for p in STATE}
    assert {"psi/client.py", "psi/server.py", "psi/messages.py", "binning/guest.py",
            "binning/host.py", "binning/core.py", "binning/woe.py",
            "binning/messages.py", "lr/guest.py", "lr/host.py", "lr/arbiter.py",
            "lr/_party.py", "lr/schedule.py", "lr/messages.py"} <= names


@pytest.mark.parametrize("path", STATE, ids=_rel)
def test_protocol_state_does_no_io(path):
    """Only the drivers reach a Channel, not even through another ``vfl`` module."""
    bad = [m for m in _reachable(path) | _imports(path) if _under(m, ("vfl.channel",))]
    assert not bad, f"{path} reaches {bad}"


@pytest.mark.parametrize("path", _glob("binning"), ids=_rel)
def test_binning_does_not_depend_on_lr(path):
    bad = [m for m in _reachable(path) | _imports(path) if _under(m, ("vfl.lr",))]
    assert not bad, f"{path} reaches {bad}"


def test_runner_does_not_import_the_pipeline():
    bad = [m for m in _imports(ROOT / "runner.py") if _under(m, ("vfl.pipeline",))]
    assert not bad, f"vfl/runner.py imports {bad}"


@pytest.mark.parametrize("name", ["runner.py", "pipeline.py", "demo.py"])
def test_only_the_cli_imports_the_cli(name):
    """``vfl/cli.py`` may import anything; what it runs never imports it back."""
    bad = [m for m in _imports(ROOT / name) if _under(m, ("vfl.cli",))]
    assert not bad, f"vfl/{name} imports {bad}"


@pytest.mark.parametrize("path", PROTOCOLS, ids=_rel)
def test_protocols_do_not_import_the_layers_above(path):
    bad = [m for m in _imports(path) if _under(m, TOP)]
    assert not bad, f"{path} imports {bad}"


def test_no_unsafe_deserialisation_or_weak_randomness_anywhere():
    for path in ROOT.rglob("*.py"):
        text = path.read_text()
        for needle in ("pickle", "eval(", "exec(", "yaml.load", "import random\n"):
            assert needle not in text, f"{path} contains {needle!r}"
    for path in list((ROOT / "crypto").glob("*.py")) + list((ROOT / "psi").glob("*.py")):
        assert "np.random" not in path.read_text(), path


OUTSIDE_CRYPTO = sorted(p for p in ROOT.rglob("*.py")
                        if "crypto" not in p.relative_to(ROOT).parts and "_proto" not in str(p))


@pytest.mark.parametrize("path", OUTSIDE_CRYPTO, ids=_rel)
def test_ciphertext_arithmetic_only_inside_crypto(path):
    """Big-integer work on ciphertexts goes through vfl/crypto (EncryptedVector, zkp, wire)."""
    text = path.read_text()
    assert not [m for m in _imports(path) if _under(m, ("gmpy2",))], f"{path} imports gmpy2"
    for needle in ("nsquare", "% n2", "powmod(", "invert("):
        assert needle not in text, f"{_rel(path)} does ciphertext arithmetic by hand ({needle!r})"
