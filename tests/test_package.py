"""The package's public surface: a light import, and --help on every verb."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import xraylib
from xraylib.cli import main


def test_import_is_light_and_modules_are_reachable():
    code = "import sys, xraylib, xraylib.train; assert 'tensorflow' not in sys.modules; print(xraylib.train.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "xraylib.train"


@pytest.mark.parametrize(
    "verb",
    [
        ["data", "synth"],
        ["data", "fetch"],
        ["data", "index"],
        ["train"],
        ["sweep"],
        ["report"],
        ["evaluate"],
        ["predict"],
        ["export"],
        ["bench", "pipeline"],
    ],
)
def test_every_verb_explains_itself(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([*verb, "--help"])
    assert info.value.code == 0
    assert "usage: xraylib " + " ".join(verb) in capsys.readouterr().out


def _imported_modules(path: Path, names: set[str]) -> set[str]:
    """The package modules a module imports anywhere: function bodies and `if TYPE_CHECKING:` blocks too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xraylib"):
            parts = node.module.split(".")
            found.update(parts[1:2] or [a.name for a in node.names if a.name in names])
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("xraylib."))
    return found - {path.stem}


def test_no_import_circle_among_the_modules_deferred_and_type_only_imports_included():
    package = Path(xraylib.__file__).parent
    modules = {p.stem: p for p in package.glob("*.py") if p.stem != "__init__"}
    graph = {name: _imported_modules(path, set(modules)) & set(modules) for name, path in modules.items()}
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(name) :] + [name]))
        if name not in done:
            for dep in sorted(graph[name]):
                walk(dep, path + [name])
            done.add(name)

    for name in sorted(graph):
        walk(name, [])
    assert graph["sweep"] and graph["run_figures"], "the graph was read"
