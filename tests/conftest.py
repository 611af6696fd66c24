"""Shared fixtures: the real libptkhsm.so, a fresh data directory per test session.

PTKHSM_MODULE selects the library (default: the installed one, as printed by
`ptkhsm module`). Every test session gets its own ET_PTKC_SW_DATAPATH, set
before python-pkcs11 loads the module (C_Initialize reads it).

PTKHSM_TEST_TRANSPORT=tcp|unix runs the same tests with the module pointed at
`ptkhsm serve` (started here over that data directory, stopped at the end);
each `fresh_env` gets a server of its own.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import suitelog
from modulepath import module_path
from netserver import TRANSPORTS, Server

ROOT = Path(__file__).resolve().parent.parent
USER_PIN = "1234"
SO_PIN = "12345678"
TOKEN_LABEL = "ptkhsm-test"


MODULE = module_path()
# Every directory the tests make with tempfile goes under one of the session's, removed at its
# end: fresh_env alone makes hundreds a run. Readable by all, for the tests that run as nobody.
# pytest's own tmp_path stays where it was, kept after a failure.
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
_SCRATCH = tempfile.mkdtemp(prefix="ptkhsm-tests-")
os.chmod(_SCRATCH, 0o755)
tempfile.tempdir = _SCRATCH
_DATA = tempfile.mkdtemp(prefix="ptkhsm-test-")
os.environ["ET_PTKC_SW_DATAPATH"] = _DATA
os.environ["ET_PTKC_SW_PIN_KDF_ITERATIONS"] = "1000"  # keep logins cheap in tests
suitelog.start()  # the session's log at DEBUG, checked for secrets at its end (tests/suitelog.py)
_SECRETS_CHECK = []
TRANSPORT = os.environ.get("PTKHSM_TEST_TRANSPORT", "inprocess")
if TRANSPORT not in TRANSPORTS + ("inprocess",):
    raise RuntimeError(f"PTKHSM_TEST_TRANSPORT={TRANSPORT!r}: use tcp, unix or inprocess")
_SERVERS = []
if TRANSPORT != "inprocess":
    _SERVERS.append(Server(_DATA, TRANSPORT))
    os.environ["ET_HSM_NETCLIENT_SERVERLIST"] = _SERVERS[0].address


def pytest_sessionfinish(session, exitstatus):
    for server in _SERVERS:
        server.stop()
    shutil.rmtree(_SCRATCH, ignore_errors=True)
    _SECRETS_CHECK[:] = suitelog.finish(session)


def pytest_runtest_setup(item):
    suitelog.test_started(item.nodeid)


def pytest_runtest_logreport(report):
    suitelog.report(report)


def pytest_terminal_summary(terminalreporter):
    for line in _SECRETS_CHECK:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def module():
    return MODULE


def init_token(env=None, slot=0, label=TOKEN_LABEL):
    """Initialise a token and its user PIN with pkcs11-tool, a real client."""
    tool = ["pkcs11-tool", "--module", MODULE, "--slot", str(slot)]
    subprocess.run(tool + ["--init-token", "--label", label, "--so-pin", SO_PIN],
                   check=True, capture_output=True, env=env)
    subprocess.run(tool + ["--init-pin", "--login", "--so-pin", SO_PIN, "--pin", USER_PIN],
                   check=True, capture_output=True, env=env)


@pytest.fixture(scope="session")
def lib():
    import pkcs11
    init_token()
    return pkcs11.lib(MODULE)


@pytest.fixture(scope="session")
def token(lib):
    """Slot 0's token, initialised with SO PIN 12345678 and user PIN 1234."""
    return lib.get_token(token_label=TOKEN_LABEL)


@pytest.fixture
def session(token):
    """A read/write session with the user logged in."""
    with token.open(rw=True, user_pin=USER_PIN) as session:
        yield session


def fresh_env(**extra):
    """Environment for a subprocess with its own data directory."""
    env = dict(os.environ)
    env["ET_PTKC_SW_DATAPATH"] = tempfile.mkdtemp(prefix="ptkhsm-sub-")
    env.update(extra)
    if TRANSPORT != "inprocess":
        try:
            server = Server(env["ET_PTKC_SW_DATAPATH"], TRANSPORT, env=env)
        except RuntimeError:  # an item the test breaks on purpose: the client must report it
            server = Server(env["ET_PTKC_SW_DATAPATH"], TRANSPORT)
        _SERVERS.append(server)
        env["ET_HSM_NETCLIENT_SERVERLIST"] = server.address
    return env


@pytest.fixture(scope="session")
def c_host(tmp_path_factory):
    """tests/c/host.c, compiled once: a plain C program that dlopens the module."""
    binary = tmp_path_factory.mktemp("host") / "host"
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(ROOT / "shim" / "include"), "-o", str(binary),
                    str(ROOT / "tests" / "c" / "host.c"), "-ldl", "-lpthread"], check=True)
    return binary
