"""The shape issue 34 asked for, kept: no import cycle among our modules (function-level imports
count: a lazy import still ties two modules together), no module over 400 lines and no function over
60 lines in sense_local/ and tui/, cli.build_parser's table of subcommands aside. No model needed."""
from __future__ import annotations

import ast
import importlib.util

from conftest import ROOT

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_BY_DESIGN = {("sense_local/cli.py", "build_parser")}  # the table of subcommands
PACKAGES = ("sense_local", "tui")


def _import_cycles():
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text()


def test_the_cycle_finder_finds_a_cycle():
    cycles = _import_cycles().cycles
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_our_modules():
    finder = _import_cycles()
    graph = finder.import_graph()
    assert "sense_local.cli" in graph and "sense_local.cli_config" in graph["sense_local.cli_generate"]
    assert finder.cycles(graph) == []


def test_no_module_over_400_lines():
    long = {path: src.count("\n") for path, src in _sources() if src.count("\n") > MAX_MODULE_LINES}
    assert long == {}


def test_no_function_over_60_lines():
    long = {}
    for path, src in _sources():
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (path, node.name) not in LONG_BY_DESIGN:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path}:{node.lineno} {node.name}"] = lines
    assert long == {}
