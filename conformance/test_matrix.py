"""docs/feature-matrix.md is current: its rows and cells are those of this run.

Runs after every scenario of the session (marker matrix_check). Every
scenario that ran must be in the committed matrix with the same cell for
each module that ran it; when the whole of conformance/ ran, the matrix must
not list scenarios that no longer exist. `make conformance` regenerates it.

The matrix says which Debian release it was run on. A run on another release
(Debian 13 against a matrix of Debian 12) checks the scenarios only: its
programs differ (OpenSC, OpenSSL, p11-kit versions), so some documented
differences do too, and each scenario's own test already failed if its
outcome was not the documented one for that release.

A `skipped: …` cell, in the matrix or in this run, says the machine could not
run the scenario (a program its Debian release does not package, a kernel
that refuses `unshare --user` in a chroot), nothing about the module: it
matches any cell. The matrix is generated on Debian 12; a Debian 13 run fills
in what 12 skips.
"""

import pytest

from . import matrix
from .harness import RECORDER, ROOT

DOC = ROOT / "docs" / "feature-matrix.md"


@pytest.mark.matrix_check
def test_feature_matrix_is_current(request):
    recorder = request.config.stash[RECORDER]
    results = recorder.results()
    titles = {m["name"]: m["title"] for m in results["modules"]}
    if not DOC.exists():
        pytest.fail(f"{DOC} is missing: run `make conformance`")
    committed, columns = matrix.parse(DOC.read_text())
    assert columns == list(titles.values()), f"{DOC}: columns {columns}, expected {list(titles.values())}"
    run = matrix.rows(results)
    same_release = matrix.release_of(DOC.read_text()) == results["release"]
    problems = []
    for (client, scenario), data in ((k, v) for k, v in _ran(results)):
        key = (client, scenario)
        if key not in committed:
            problems.append(f"new scenario: {client} | {scenario}")
            continue
        for module in data if same_release else ():
            title = titles[module]
            if committed[key][title] != run[key][title] and not _skipped(committed[key][title], run[key][title]):
                problems.append(f"{client} | {scenario} | {title}: matrix says {committed[key][title]!r}, "
                                f"this run {run[key][title]!r}")
    if recorder.complete():
        for client, scenario in sorted(set(committed) - set(run)):
            problems.append(f"no longer a scenario: {client} | {scenario}")
    assert not problems, f"{DOC} is out of date, run `make conformance`:\n  " + "\n  ".join(problems)


def _skipped(*cells):
    return any(cell.startswith("skipped") for cell in cells)


def _ran(results):
    """(key, modules that produced a cell) for every scenario that ran in this session."""
    for s in results["scenarios"]:
        if s["cells"]:
            yield (s["client"], s["scenario"]), list(s["cells"])


def test_render_parse_roundtrip():
    """matrix.parse reads back what matrix.render writes, escapes included."""
    results = {
        "modules": [{"name": "a", "title": "A"}, {"name": "b", "title": "B b"}],
        "scenarios": [
            {"client": "tool", "scenario": "x [p|q]", "about": "-h <token> & more",
             "cells": {"a": {"outcome": "pass", "reason": ""},
                       "b": {"outcome": "fail", "reason": "why | <not>"}}},
            {"client": "tool", "scenario": "y", "about": "",
             "cells": {"a": {"outcome": "not-supported", "reason": "no X"}}},
        ],
    }
    text = matrix.render(results)
    assert matrix.parse(text) == (matrix.rows(results), ["A", "B b"])
    assert "| A | 2 | 1 | 0 | 1 |" in text
