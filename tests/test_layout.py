"""The package's shape: kpjax's modules import one another without cycles, and each imports alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kpjax

PACKAGE = Path(kpjax.__file__).parent


def module_names() -> dict[str, Path]:
    """Every kpjax module's dotted name and its file."""
    names = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return names


def imported_modules(name: str, file: Path, modules: set[str]) -> set[str]:
    """The kpjax modules that ``name``'s ``import`` and ``from`` statements name, at module level or inside functions.

    ``from P import X`` counts as importing ``P.X`` when that is a module, else ``P``.
    """
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, or ``level - 1`` packages above it
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
    return found & modules - {name}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported_modules(name, file, set(modules)) for name, file in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    visiting, done = [], set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(graph[node]):
            if cycle := visit(target):
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if cycle := visit(node):
            return cycle
    return None


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (package / "sub" / "__init__.py").write_text("from .b import thing\n")
    (package / "sub" / "b.py").write_text("import pkg.a\nthing = 1\n")
    modules = {"pkg", "pkg.a", "pkg.sub", "pkg.sub.b"}
    assert imported_modules("pkg.a", package / "a.py", modules) == {"pkg.sub.b"}
    assert imported_modules("pkg.sub", package / "sub" / "__init__.py", modules) == {"pkg.sub.b"}
    assert imported_modules("pkg.sub.b", package / "sub" / "b.py", modules) == {"pkg.a"}
    graph = {"pkg": set(), "pkg.a": {"pkg.sub.b"}, "pkg.sub": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    assert find_cycle({**graph, "pkg.sub.b": set()}) is None


def test_no_import_cycles():
    graph = import_graph()
    assert {"kpjax.inference", "kpjax.records", "kpjax.sources.rows", "kpjax.sources.convert"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


ALONE = """
import importlib, sys, traceback
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "kpjax" or m.startswith("kpjax.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        print(f"{name}: {traceback.format_exc().strip().splitlines()[-1]}")
"""


def test_each_module_imports_alone():
    """Each module imported with no other kpjax module loaded before it (one interpreter, kpjax unloaded between
    imports), so that none works only because another was imported first. ``kpjax.__main__`` runs the CLI."""
    names = sorted(set(module_names()) - {"kpjax.__main__"})
    result = subprocess.run([sys.executable, "-c", ALONE, *names], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_predicting_does_not_import_pandas():
    """Kaggle's reader, the one user of pandas on the data path, is imported only when data is loaded."""
    script = "import sys, kpjax.predict, kpjax.serve, kpjax.export; print('pandas' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
