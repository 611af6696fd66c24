"""The call table, the ABI exports, the HSM's Application and the network proxy agree."""

import ast
import inspect
from pathlib import Path

from ptkhsm import calls
from ptkhsm.cryptoki.netclient import NetClient
from ptkhsm.hsm.core import Application

FUNCTIONS = Path(__file__).resolve().parent.parent / "ptkhsm" / "abi" / "functions.py"


def _exports_and_api_calls():
    """-> {C function: set of api() methods it calls} from functions.py's source."""
    tree = ast.parse(FUNCTIONS.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("C_"):
            used = set()
            helpers = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            for sub in ast.walk(node):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, (ast.Call, ast.Name)):
                    base = sub.value
                    if (isinstance(base, ast.Call) and getattr(base.func, "id", None) == "api") or \
                            (isinstance(base, ast.Name) and base.id == "hsm"):
                        used.add(sub.attr)
            out[node.name] = used
            out[node.name + "#helpers"] = helpers
    return out


def test_ids_and_names_unique():
    assert len({c.id for c in calls.CALLS}) == len(calls.CALLS)
    assert len(calls.BY_NAME) == len(calls.CALLS)
    functions = [f for c in calls.CALLS for f in c.functions]
    assert len(functions) == len(set(functions))


def test_every_call_is_an_application_method_with_the_same_arguments():
    for call in calls.CALLS:
        method = getattr(Application, call.name)
        params = list(inspect.signature(method).parameters)[1:]
        assert len(params) == len(call.args), call.name
        if call.session:
            assert call.args[0][1] == calls.ULONG, call.name
        for pin in call.pins + tuple(s for s in call.secrets if s != "reply"):
            assert pin in calls.arg_names(call), (call.name, pin)


def test_every_abi_export_that_reaches_the_hsm_is_in_the_table():
    used = _exports_and_api_calls()
    table = {f: c.name for c in calls.CALLS for f in c.functions}
    for function, methods in used.items():
        if function.endswith("#helpers") or function in calls.LOCAL or function == "C_Finalize":
            continue
        if not methods:
            continue  # the operation shapes (_run, _final, _init) take the method as an argument
        assert methods <= set(calls.BY_NAME) | {"session_info"}, (function, methods)
        if function in table:
            assert table[function] in methods, (function, methods)
    for function in table:
        if function != "C_Finalize":
            assert function in used, f"{function} is in the table but not exported"


def test_operation_exports_name_their_method():
    """C_Encrypt -> api().encrypt etc. (passed to _run/_final/_init)."""
    tree = ast.parse(FUNCTIONS.read_text())
    table = {f: c.name for c in calls.CALLS for f in c.functions}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in table:
            attrs = {a.attr for a in ast.walk(node) if isinstance(a, ast.Attribute)}
            assert table[node.name] in attrs, node.name


def test_the_proxy_has_every_call():
    for call in calls.CALLS:
        assert callable(getattr(NetClient, call.name)), call.name
