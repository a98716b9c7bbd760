"""The package's shape, kept by tests: layers, no import cycles, no reaching into privates.

The layers are the ``[tool.importlinter]`` contract in pyproject.toml (imports point
down: cli, audit, sync, the public facade, export, data, schema, sqlite, errors).
import-linter leaves type-only imports out of that contract; the cycle test here
counts them too, since a cycle through a type hint still ties two modules together.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qcsql"


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return found


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Every qcsql module ``name`` imports, anywhere in it (type-only imports included)."""
    package = name if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists() else ""
    package = package or name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    return {target for target in targets if target in known and target != name}


def test_the_layers_contract_holds() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    done = subprocess.run(
        [str(lint)], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_import_cycles_not_even_through_type_hints() -> None:
    modules = _modules()
    known = set(modules)
    # A package's __init__ may gather its own modules; a module importing its package
    # for a sibling is the same edge, so packages are not nodes of their own here.
    packages = {name for name in known if (PACKAGE.parent / name.replace(".", "/")).is_dir()}
    graph = {
        name: {t for t in _imports(name, tree, known) if t not in packages or t == "qcsql"}
        for name, tree in modules.items()
        if name not in packages
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target in graph and target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# Attributes that start with an underscore by their owner's public design.
_PUBLIC_UNDERSCORED = {"_mapping", "_CFuncPtr", "_asdict", "_replace", "_fields"}


def test_no_module_reaches_into_another_objects_private_names() -> None:
    reaching = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                private = node.attr.startswith("_") and not node.attr.startswith("__")
                own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                if private and not own and node.attr not in _PUBLIC_UNDERSCORED:
                    reaching.append(f"{name}:{node.lineno} {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qcsql"):
                reaching += [
                    f"{name}:{node.lineno} from {node.module} import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
    assert not reaching, "\n".join(reaching)
