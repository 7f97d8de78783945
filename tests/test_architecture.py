"""Import direction: protocol code never depends on a concrete transport or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vfl"
PURE = sorted((ROOT / "psi").glob("*.py")) + sorted((ROOT / "lr").glob("*.py")) + sorted(
    (ROOT / "crypto").glob("*.py"))
FORBIDDEN = ("vfl.transport", "vfl.cli", "vfl.pipeline", "grpc", "socket", "threading", "pickle")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_protocol_modules_are_pure(path):
    bad = [m for m in _imports(path) if m.startswith(FORBIDDEN)]
    assert not bad, f"{path} imports {bad}"


def test_no_unsafe_deserialisation_or_weak_randomness_anywhere():
    for path in ROOT.rglob("*.py"):
        text = path.read_text()
        for needle in ("pickle", "eval(", "exec(", "yaml.load", "import random\n"):
            assert needle not in text, f"{path} contains {needle!r}"
    for path in list((ROOT / "crypto").glob("*.py")) + list((ROOT / "psi").glob("*.py")):
        assert "np.random" not in path.read_text(), path
