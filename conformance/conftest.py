"""Conformance runners: fixtures, and the recorder behind docs/feature-matrix.md.

The `token` fixture is parametrized over harness.MODULES (ptkhsm, SoftHSMv2):
each module's token is set up once per session, and pytest groups the tests
by module. Every test that takes `token` in a module that names its CLIENT is
a scenario; the recorder keeps one cell per scenario and module (pass, fail,
not-supported, fail with the documented reason). With
PTKHSM_CONFORMANCE_RESULTS=<file> the results are written there as JSON at
the end of the session, for conformance/matrix.py.
"""

import json
import os
from pathlib import Path

import pytest

from . import harness, matrix

HERE = Path(__file__).resolve().parent
RECORDER = harness.RECORDER
CLIENTS = ["pkcs11-tool", "OpenSSL", "GnuTLS", "NSS", "p11-kit", "Java", "C"]


@pytest.fixture(scope="session", params=harness.MODULES, ids=[m.name for m in harness.MODULES])
def token(request, tmp_path_factory):
    """The module's token "conformance" (user PIN 1234, SO PIN 12345678) in a fresh work directory."""
    tok = harness.Token(request.param, tmp_path_factory.mktemp(f"conformance-{request.param.name}"))
    tok.initialise()
    return tok


def _in_conformance(item):
    return HERE in Path(str(item.fspath)).resolve().parents


def scenario_of(item):
    """(client, scenario, about, module name) of a scenario item, else None."""
    callspec = getattr(item, "callspec", None)
    client = getattr(item.module, "CLIENT", None)
    if callspec is None or client is None or "token" not in callspec.params or not _in_conformance(item):
        return None
    module = callspec.params["token"].name
    ident = callspec.id
    if ident == module:
        params = ""
    elif ident.startswith(module + "-"):
        params = ident[len(module) + 1:]
    else:
        params = ident[:-len(module) - 1]
    name = item.originalname.removeprefix("test_").replace("_", " ")
    about = (item.function.__doc__ or "").strip().splitlines()
    return client, f"{name} [{params}]" if params else name, about[0] if about else "", module


class Recorder:
    def __init__(self):
        self.scenarios = {}   # (client, scenario) -> {"order", "about", "cells": {module: cell}}
        self.expected = {}    # (client, scenario) -> set of module names selected
        self.deselected = False
        self.files = set()

    def collected(self, items):
        for index, item in enumerate(items):
            if _in_conformance(item):
                self.files.add(Path(str(item.fspath)).name)
            found = scenario_of(item)
            if found:
                client, scen, about, _ = found
                self.scenarios.setdefault((client, scen), {"order": index, "about": about, "cells": {}})

    def selected(self, items):
        for item in items:
            found = scenario_of(item)
            if found:
                self.expected.setdefault(found[:2], set()).add(found[3])

    def report(self, item, call, report):
        found = scenario_of(item)
        if not found:
            return
        client, scen, _, module = found
        cells = self.scenarios[(client, scen)]["cells"]
        if report.when == "setup" or module not in cells:
            cells[module] = {"outcome": "pass", "reason": ""}
        cell = cells[module]
        if report.passed:
            return
        if report.failed:
            reason = ""
            if call.excinfo is not None and isinstance(call.excinfo.value, harness.Missing):
                reason = str(call.excinfo.value)
            if cell["outcome"] != "fail" or not cell["reason"]:
                cell.update(outcome="fail", reason=reason)
            return
        # skipped: an imperative xfail (a documented difference) or a skip
        if hasattr(report, "wasxfail"):
            cell.update(outcome="fail", reason=report.wasxfail)
            return
        message = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        message = message.removeprefix("Skipped: ")
        if message.startswith(harness.NOT_SUPPORTED):
            cell.update(outcome="not-supported", reason=message[len(harness.NOT_SUPPORTED):])
        else:
            cell.update(outcome="skipped", reason=message)

    def results(self):
        """The results document that matrix.py renders."""
        def order(entry):
            (client, _), data = entry
            return (CLIENTS.index(client) if client in CLIENTS else len(CLIENTS), data["order"])
        return {
            "release": matrix.debian_release(),
            "modules": [{"name": m.name, "title": m.title, "path": m.path} for m in harness.MODULES],
            "scenarios": [{"client": client, "scenario": scen, "about": data["about"], "cells": data["cells"]}
                          for (client, scen), data in sorted(self.scenarios.items(), key=order)],
        }

    def complete(self):
        """Did this session select every scenario of conformance/?"""
        runners = {p.name for p in HERE.glob("test_*.py")}
        return not self.deselected and runners <= self.files


def pytest_configure(config):
    config.stash[RECORDER] = Recorder()
    config.addinivalue_line("markers", "matrix_check: runs after every scenario of the session")


@pytest.hookimpl(hookwrapper=True)
def pytest_collection_modifyitems(session, config, items):
    recorder = config.stash[RECORDER]
    recorder.collected(items)
    yield
    recorder.selected(items)
    last = [item for item in items if item.get_closest_marker("matrix_check")]
    for item in last:
        items.remove(item)
    items.extend(last)


def pytest_deselected(items):
    if any(_in_conformance(item) for item in items):
        items[0].config.stash[RECORDER].deselected = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    item.config.stash[RECORDER].report(item, call, outcome.get_result())


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("PTKHSM_CONFORMANCE_RESULTS")
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(session.config.stash[RECORDER].results(), indent=1) + "\n")
