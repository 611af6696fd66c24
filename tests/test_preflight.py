"""shim/preflight.py's reading of what an import would find, run as the shim runs it
(its source with the globals the C side gives it)."""

import sys
from pathlib import Path

import cryptography

import ptkhsm

PREFLIGHT = Path(__file__).resolve().parent.parent / "shim" / "preflight.py"


def _run(pins, first_dir):
    scope = {"SITEDIRS": [], "HERE": str(first_dir), "REFUSE": False, "VERSION": ptkhsm.__version__,
             "PINS": pins, "IMPORTS": {}}
    sys.path.insert(0, str(first_dir))
    try:
        exec(compile(PREFLIGHT.read_text(), str(PREFLIGHT), "exec"), scope)
    finally:
        sys.path.remove(str(first_dir))
    return scope["reason"]


def test_the_first_metadata_on_the_path_counts(tmp_path):
    assert _run({"cryptography": cryptography.__version__}, tmp_path) is None
    (tmp_path / "cryptography-1.0.dist-info").mkdir()       # the host's own copy, ahead of ours
    (tmp_path / "cryptography_vectors-9.9.dist-info").mkdir()
    assert _run({"cryptography": cryptography.__version__}, tmp_path) == (
        f"the host's environment has cryptography 1.0 (in {tmp_path}); "
        f"libptkhsm.so needs cryptography {cryptography.__version__}")


def test_an_old_style_egg_and_a_missing_distribution(tmp_path):
    (tmp_path / "Some_Dist-2.1-py3.11.egg-info").mkdir()
    assert _run({"some-dist": "2.1"}, tmp_path) is None
    assert _run({"not-installed-anywhere": "1"}, tmp_path) == "not-installed-anywhere 1 is not installed in "
