"""The shape of the code: the layers in pyproject.toml hold, and no import cycle comes back.

import-linter checks the contracts ([tool.importlinter]); grimp (which it brings) gives the
import graph, in which the only cycle allowed is two modules that import each other for type
annotations only (`if TYPE_CHECKING:`). An import inside a function hides a cycle from the
reader: there is none, except where a line says why (`# function-level: <reason>`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp

from portal.config import PROJECT_ROOT

PACKAGES = ("portal", "workers")
REASON = "# function-level:"


def test_the_layer_contracts_are_kept() -> None:
    # In a process of its own: import-linter reconfigures logging, which other tests read.
    checked = subprocess.run(
        [Path(sys.executable).with_name("lint-imports"), "--no-cache"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _source(module: str) -> Path:
    path = PROJECT_ROOT / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _type_checking_lines(module: str) -> set[int]:
    """The lines inside `if TYPE_CHECKING:` blocks of a module."""
    tree = ast.parse(_source(module).read_text())
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.If):
            continue
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def test_no_import_cycle_beyond_two_type_only_modules() -> None:
    graph = grimp.build_graph(*PACKAGES)
    # Every import that closes a cycle: the imported module leads back to its importer.
    closing = {
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.chain_exists(importer=imported, imported=importer)
    }
    for importer, imported in sorted(closing):
        # A cycle of two: the modules import each other directly, and here for types only.
        assert (imported, importer) in closing, f"a cycle through {importer} -> {imported}"
        typed = _type_checking_lines(importer)
        details = graph.get_import_details(importer=importer, imported=imported)
        at_run_time = [d for d in details if d["line_number"] not in typed]
        assert not at_run_time, f"{importer} imports {imported} at run time: {at_run_time}"
    assert len(closing) <= 2  # today: portal.models.company <-> portal.models.user


def _function_imports() -> Iterator[str]:
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            tree = ast.parse("\n".join(lines))
            for function in ast.walk(tree):
                if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(function):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        said = lines[node.lineno - 1] + lines[node.lineno - 2]
                        if REASON not in said:
                            yield f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}"


def test_imports_sit_at_the_top_of_their_module() -> None:
    assert list(_function_imports()) == []
