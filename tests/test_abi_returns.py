"""Every exported function returns its CK_RV on every path (or raises).

cffi turns a function that returns None into a TypeError, which the onerror
hook reports as CKR_GENERAL_ERROR: a forgotten `return OK` would turn a
success into a failure that only the path using it would notice.
"""

import ast
from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parent.parent / "ptkhsm" / "abi" / "functions.py"


def exported():
    tree = ast.parse(FUNCTIONS.read_text())
    return [node for node in tree.body if isinstance(node, ast.FunctionDef)
            and any(isinstance(d, ast.Name) and d.id == "export" for d in node.decorator_list)]


def test_every_export_ends_in_return_or_raise():
    functions = exported()
    assert len(functions) > 50
    for fn in functions:
        assert isinstance(fn.body[-1], (ast.Return, ast.Raise)), f"{fn.name} falls off its end"


def test_no_export_returns_nothing():
    for fn in exported():
        for node in ast.walk(fn):
            if isinstance(node, ast.Return):
                assert node.value is not None, f"{fn.name}: bare return at line {node.lineno}"
