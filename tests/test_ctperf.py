"""ctperf: the C driver runs against the real module and reports what it measured.

Nothing here checks a speed: the machines are shared and noisy. The runs are
a fraction of a second, only to see the driver, its JSON and the tables work.
"""

import json
import shutil

import pytest

from ptkhsm import ctperf
from ptkhsm.cli import main
from ptkhsm.svgchart import ratio_chart

pytestmark = pytest.mark.skipif(not shutil.which("gcc") and not (ctperf.PACKAGE / ctperf.DRIVER_NAME).exists(),
                                reason="ctperf-driver needs gcc")


@pytest.fixture(scope="module")
def target(module):
    with ctperf.Target(module) as target:
        target.prepare()
        yield target


def test_run_reports_counts_and_latencies(target):
    result = target.run("sha256-64", threads=2, seconds=0.2)
    assert result["status"] == "ok", result
    assert result["threads"] == 2 and result["ops"] > 0
    assert result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
    assert result["bytes_per_op"] == 64
    assert result["vmhwm_kb"] >= result["vmrss_kb"] > 0


def test_cold_start(target):
    result = target.run("init")
    assert result["status"] == "ok", result
    assert 0 < result["dlopen_ms"] <= result["first_result_ms"]


def test_find_fills_the_token_once(target):
    first = target.run("find-1k", seconds=0.1)
    assert first["status"] == "ok", first
    assert first["filled"] == 1000 and first["objects"] == 1000
    again = target.run("find-1k", seconds=0.1)
    assert again["status"] == "ok" and again["filled"] == 0


def test_object_create_cleans_up(target):
    assert target.run("object-create", seconds=0.1)["status"] == "ok"
    assert target.run("find-1k", seconds=0.1)["status"] == "ok"  # still exactly one object per label


def test_failure_is_na_with_the_ckr(module):
    with ctperf.Target(module, pin="0000") as target:
        target.prepare()
        target.pin = "9999"   # the token was made with PIN 0000
        result = target.run("random32", seconds=0.1)
    assert result["status"] == "n/a" and result["where"] == "C_Login"
    assert ctperf.ckr_name(result["ckr"]) == "CKR_PIN_INCORRECT"


def test_command_json(module, capsys):
    assert main(["ctperf", "--module", module, "--ops", "random32,session", "--seconds", "0.1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["op"] for r in doc["results"]] == ["session", "random32"]   # run order, not argument order
    assert all(r["status"] == "ok" for r in doc["results"])


def test_unknown_op(module, capsys):
    assert main(["ctperf", "--module", module, "--ops", "nope", "--seconds", "0.1"]) == 1
    assert "unknown operation" in capsys.readouterr().err


def test_plot_is_an_svg(tmp_path):
    """One bar per measured test, coloured by its goal; the n/a test drawn as text; no font inside."""
    import xml.etree.ElementTree as ET
    path = tmp_path / "r.svg"
    ratio_chart(path, "a / b", [("rsa2048-sign", 1.8, 1.0), ("session", 0.05, 0.5), ("ed25519-sign", None, 0.8),
                                ("find-10k", 8446.7, None)])
    svg = ET.parse(path).getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    bars = {g.get("data-test"): g.find("s:rect", ns).get("fill") for g in svg.iterfind(".//s:g[@class='bar']", ns)}
    assert bars == {"rsa2048-sign": "#2ea043", "session": "#d62728", "find-10k": "#1f77b4"}
    texts = [t.text for t in svg.iterfind(".//s:text", ns)]
    assert "a / b" in texts and "n/a" in texts and "1.80x" in texts and "8447x" in texts
    assert "font-face" not in path.read_text() and "<image" not in path.read_text()


def test_thread_counts_of_one_op_take_turns_within_each_round():
    """The ratio of 8 threads to 1 compares neighbouring runs (the machine's speed drifts)."""
    class Recorder:
        def __init__(self, name, log):
            self.name, self.log = name, log

        def prepare(self):
            pass

        def run(self, op, threads, seconds):
            self.log.append((self.name, op, threads))
            return {"status": "ok", "ops_per_s": 1.0}

    log = []
    pairs = ctperf.plan(["p256-sign", "getattr"], [1, 8])
    results = ctperf.run_suite([Recorder("a", log), Recorder("b", log)], pairs, repeat=2)
    one_round = [("a", "getattr", 1), ("b", "getattr", 1), ("a", "getattr", 8), ("b", "getattr", 8)]
    assert log[:8] == one_round * 2
    assert log[8:12] == [(t, "p256-sign", n) for n in (1, 8) for t in "ab"]
    assert len(log) == 16 and all(len(r.runs) == 2 for r in results.values())
