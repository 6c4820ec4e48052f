"""The import layers of memwise, lowest first, and a check that every import points down.

A module may import from its own package and from any layer below its own, never from a layer above
and never from a sibling package of its own layer (siblings stay independent so either can change
without the other). Imports inside functions count: a lazy import is still a dependency.

Layers, lowest first:

0. root of the foundation, importing nothing of memwise: ``exceptions``, ``_version``, ``_aio``
   (gather-and-cancel, the loop in a thread, the current task's identity)
1. foundation: ``config``, ``_datafile``, ``_transport`` (HTTP client, retry and API keys shared by the
   model and embedding clients), ``_sqlite`` (the one SQLite wrapper)
2. model clients: ``llm`` | ``embed`` (siblings)
3. ``store``
4. ``runs`` (ledger, run directories; the ledger satisfies ``llm.recorder.CallRecorder``)
5. ``tasks`` (metrics, judges, environments and their types)
6. ``facts``
7. ``metamem`` | ``umem`` (siblings)
8. ``testing`` (fakes; may use anything below the front ends)
9. ``server``
10. the ``memwise`` package itself, a facade re-exporting public names; the library imports names from
    their own modules, only the CLI may use the facade
11. ``cli``
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"exceptions", "_version", "_aio"}),
    frozenset({"config", "_datafile", "_transport", "_sqlite"}),
    frozenset({"llm", "embed"}),
    frozenset({"store"}),
    frozenset({"runs"}),
    frozenset({"tasks"}),
    frozenset({"facts"}),
    frozenset({"metamem", "umem"}),
    frozenset({"testing"}),
    frozenset({"server"}),
    frozenset({"memwise"}),
    frozenset({"cli"}),
)
_LEVEL = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str | None:
    """The top-level part of ``memwise.x.y`` (``x``), ``memwise`` for the package itself, else None."""
    names = module.split(".")
    if names[0] != "memwise":
        return None
    return names[1] if len(names) > 1 else "memwise"


def _targets(node: ast.Import | ast.ImportFrom, here: list[str]) -> list[str]:
    """Absolute module names an import statement reaches, with ``from memwise import sub`` resolved."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = here[: len(here) - node.level]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module == "memwise":
        subs = {p.stem for p in (SRC / "memwise").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
        return [f"memwise.{a.name}" if a.name in subs else "memwise" for a in node.names]
    return [module]


def layer_violations(root: Path = SRC) -> list[str]:
    """Every import from a higher layer or a sibling package, as ``file:line: a (layer) -> b (layer)``."""
    found: list[str] = []
    for path in sorted((root / "memwise").rglob("*.py")):
        rel = path.relative_to(root)
        parts = list(rel.with_suffix("").parts)
        package = parts if path.name == "__init__.py" else parts[:-1]
        here = package[:-1] if path.name == "__init__.py" else package  # relative imports resolve from here
        source = _part(".".join(parts if path.name != "__init__.py" else parts[:-1]))
        if source is None or source not in _LEVEL:
            found.append(f"{rel}: package {source!r} has no layer; add it to LAYERS in tests/test_layers.py")
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(rel))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for module in _targets(node, here if isinstance(node, ast.ImportFrom) and node.level else parts):
                target = _part(module)
                if target is None or target == source:
                    continue
                if target not in _LEVEL:
                    found.append(f"{rel}:{node.lineno}: imports {module}, whose package has no layer")
                elif _LEVEL[target] > _LEVEL[source] or (_LEVEL[target] == _LEVEL[source]):
                    kind = "sibling" if _LEVEL[target] == _LEVEL[source] else "higher layer"
                    found.append(
                        f"{rel}:{node.lineno}: {source} (layer {_LEVEL[source]}) imports {module} "
                        f"({kind}: {target}, layer {_LEVEL[target]})"
                    )
    return found


def test_every_import_points_to_a_lower_layer() -> None:
    violations = layer_violations()
    assert not violations, "imports against the layer order:\n" + "\n".join(violations)


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    pkg = tmp_path / "memwise"
    (pkg / "llm").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "llm" / "__init__.py").write_text("")
    (pkg / "llm" / "x.py").write_text("def f():\n    from memwise.runs import ledger\n    return ledger\n")
    (pkg / "runs").mkdir()
    (pkg / "runs" / "__init__.py").write_text("")
    assert layer_violations(tmp_path) == [
        "memwise/llm/x.py:2: llm (layer 2) imports memwise.runs (higher layer: runs, layer 4)"
    ]


@pytest.mark.parametrize("module", ["memwise.embed.x", "memwise.llm"])
def test_siblings_may_not_import_each_other(tmp_path: Path, module: str) -> None:
    pkg = tmp_path / "memwise"
    for sub in ("llm", "embed"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    source = "llm" if module.startswith("memwise.embed") else "embed"
    (pkg / source / "y.py").write_text(f"import {module}\n")
    [violation] = layer_violations(tmp_path)
    assert f"memwise/{source}/y.py:1" in violation and "sibling" in violation
