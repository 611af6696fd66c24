"""The test session's log and error texts, checked for secrets at its end
(docs/security.md, "Nothing secret in logs or errors").

`start()` (tests/conftest.py, before anything imports ptkhsm) points
PTKHSM_LOG_FILE at a directory of the session: every process the tests start
with the suite's environment — the module in pytest itself, pkcs11-tool,
OpenSSL, the C hosts, the fuzzer, `ptkhsm serve` of the network tests, SMS and
ExtToken included — appends its log there at DEBUG. Then, in the pytest process:

- what the tests use is collected: each PIN the HSM checks or seals a key
  under, each key value a template brings into it (CKA_VALUE and RSA private
  components of secret and private keys), besides the suite's PIN constants;
- error texts are collected: every CKRError's reason, the stderr of every
  subprocess whose output a test captured (stdout is the tests' own channel:
  tests/reliability/secrets_child.py hands its secrets back on it), each test's
  captured stdout, stderr and log, and each failure's error message.

`finish()` (pytest_sessionfinish, after the servers stopped) looks for every
collected secret in all of it with `secretscan`. A finding fails the session
(exit status 1), names the file, line and secret, and keeps the directory;
otherwise the directory is removed.
"""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from secretscan import Secrets

LOG_DIR = Path(tempfile.mkdtemp(prefix="ptkhsm-session-logs-"))
LOG_FILE = LOG_DIR / "ptkhsm.log"
TEXTS = LOG_DIR / "error-texts.log"
secrets = Secrets()
_reasons = set()
_texts = None
_test = ["(collection)"]  # the test running, for where a secret was first used
_tests = {}  # node id -> its number in the error texts
KEY_PARTS = ("CKA_VALUE", "CKA_PRIVATE_EXPONENT", "CKA_PRIME_1", "CKA_PRIME_2", "CKA_EXPONENT_1",
             "CKA_EXPONENT_2", "CKA_COEFFICIENT")


def start():
    """PTKHSM_SESSION_LOG=0 leaves it out (to measure what it costs)."""
    global _texts
    if os.environ.get("PTKHSM_SESSION_LOG") == "0":
        shutil.rmtree(LOG_DIR, ignore_errors=True)
        return
    os.environ["PTKHSM_LOG_FILE"] = str(LOG_FILE)
    os.environ["PTKHSM_LOG_FILE_LEVEL"] = "DEBUG"
    _texts = os.fdopen(os.open(TEXTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
    _collect_used()
    _collect_texts()


def _collect_used():
    from ptkhsm import constants as C
    from ptkhsm.hsm import policy, token
    from ptkhsm.hsm.store import sealing

    parts = [getattr(C, name) for name in KEY_PARTS]
    keys = (C.CKO_SECRET_KEY, C.CKO_PRIVATE_KEY)

    def as_dict(template, _real=policy.as_dict):
        attrs = _real(template)
        if attrs.get(C.CKA_CLASS) in keys:
            for part in parts:
                if isinstance(attrs.get(part), (bytes, bytearray)):
                    secrets.add_value(attrs[part], f"a key value used by {_test[0]}")
        return attrs

    def pin_user(real):
        def wrapper(pin, *args, **kwargs):
            secrets.add_pin(pin, f"used by {_test[0]}")
            return real(pin, *args, **kwargs)
        return wrapper

    def check_length(self, pin, _real=token.PinPolicy.check_length):
        secrets.add_pin(pin, f"used by {_test[0]}")
        return _real(self, pin)

    policy.as_dict = as_dict
    sealing.seal_under_pin = pin_user(sealing.seal_under_pin)
    sealing.unseal_with_pin = pin_user(sealing.unseal_with_pin)
    token.PinPolicy.check_length = check_length


def _collect_texts():
    from ptkhsm.errors import CKRError

    def init(self, rv, reason="", _real=CKRError.__init__):
        _real(self, rv, reason)
        _reasons.add(str(reason))

    def communicate(self, *args, _real=subprocess.Popen.communicate, **kwargs):
        out = _real(self, *args, **kwargs)
        program = self.args[0] if isinstance(self.args, (list, tuple)) else str(self.args).split()[0]
        if out[1]:  # the program's name only: its arguments may hold PINs the test passed
            keep(f"stderr of {Path(str(program)).name}", out[1])
        return out

    CKRError.__init__ = init
    subprocess.Popen.communicate = communicate


def keep(title, text):
    """Add an error text of the session (str or bytes) to the check."""
    if _texts is None:
        return
    data = text.encode(errors="replace") if isinstance(text, str) else bytes(text)
    # the test by number: node ids hold parameters, key values and PINs among them
    _texts.write(f"\n==== {title} (test #{_tests.setdefault(_test[0], len(_tests))})\n".encode() + data)


def test_started(nodeid):
    _test[0] = nodeid


def report(report):
    """pytest_runtest_logreport: a test's captured output and its failure."""
    for title, content in report.sections if report.when == "teardown" else ():  # it has all phases
        keep(title, content)
    crash = getattr(report.longrepr, "reprcrash", None)
    if report.failed and crash is not None:  # the error, not the test's source around it
        keep(f"failure of {report.when}", crash.message)


def finish(session):
    """Scan everything; -> lines to show. A finding sets the session's exit status."""
    if _texts is None:
        return []
    _texts.write(b"\n==== CKRError reasons\n" + "\n".join(sorted(_reasons)).encode(errors="replace"))
    _texts.close()
    findings, size = [], 0
    for path in sorted(LOG_DIR.iterdir()):
        data = path.read_bytes()
        size += len(data)
        findings += secrets.scan(data, path.name)
    summary = (f"secrets check: {len(secrets.pins)} PINs and {secrets.values} key values the tests used, "
               f"looked for in {size / 1e6:.1f} MB of logs and error texts ({LOG_DIR}): ")
    if not findings:
        shutil.rmtree(LOG_DIR, ignore_errors=True)
        return [summary + "none found"]
    session.exitstatus = 1
    lines = [summary + f"{len(findings)} FOUND (the directory is kept)"]
    names = {number: nodeid for nodeid, number in _tests.items()}
    texts = TEXTS.read_bytes().split(b"\n")

    def test_of(where, line):  # the header above the line in the error texts
        if where != TEXTS.name:
            return ""
        header = next((t for t in reversed(texts[:line]) if t.startswith(b"==== ")), b"")
        number = re.search(rb"\(test #(\d+)\)$", header)
        return f" [{header[5:].decode(errors='replace')}: {names[int(number.group(1))]}]" if number else ""

    lines += [f"  {where}:{line}: {what}{test_of(where, line)}" for where, line, what in findings[:50]]
    return lines
