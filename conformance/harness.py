"""The conformance harness: the modules, their tokens, and running real programs.

Every runner in conformance/ takes the `token` fixture, parametrized over
MODULES: ptkhsm (the module under test) and SoftHSMv2 (the control). Each
module gets one fresh work directory per test session, holding its token
store (ptkhsm's ET_PTKC_SW_DATAPATH, SoftHSMv2's tokendir), a private HOME
(NSS, p11-kit, Java and GnuTLS read their user files there) and the files a
scenario writes. The token "conformance" is initialised once per module and
session with pkcs11-tool.

Outcomes, as the feature matrix shows them:
- pass;
- fail: the program or a check failed; `Missing` names what the module lacks;
- not-supported: `not_supported(reason)`, for a control run that lacks a
  mechanism the scenario needs (ptkhsm lacking one is a failure), and for an
  optional function a module does not implement (CKR_FUNCTION_NOT_SUPPORTED);
- fail with a reason: `Token.known_failure`, a documented difference of the
  control (docs/conformance.md); it must still fail, and for that reason.
A program that is not installed is a failure, never a skip; skipped (with
the reason) is only what the machine cannot offer: a package its Debian
release does not have (pkcs11-provider on Debian 12), or user namespaces in
a chroot (`as_non_root`).
"""

import functools
import itertools
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from modulepath import module_path  # noqa: E402  (shared with tests/)

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "conformance"
USER_PIN = "1234"
SO_PIN = "12345678"
NOT_SUPPORTED = "not-supported: "
RECORDER = pytest.StashKey()  # the outcome recorder of conftest.py, in config.stash


@dataclass(frozen=True)
class Module:
    name: str      # pytest id and results key
    title: str     # column heading
    path: str
    control: bool  # True for the reference implementation

    def __str__(self):
        return self.name


MODULES = [
    Module("ptkhsm", "ptkhsm", module_path(), False),
    Module("softhsm2", "SoftHSMv2", SOFTHSM, True),
]


@functools.cache
def _user_namespace_refusal():
    probe = subprocess.run(["unshare", "--user", "true"], capture_output=True, text=True, timeout=30)
    return (probe.stderr.strip() or f"exit status {probe.returncode}") if probe.returncode else None


def as_non_root():
    """The argv prefix that runs a program as a user other than uid 0 (p11-kit reads user
    module files only then): `unshare --user` for root. Skips where the kernel refuses it
    (inside a chroot)."""
    if os.geteuid() != 0:
        return []
    refusal = _user_namespace_refusal()
    if refusal:
        pytest.skip(f"unshare --user is refused here ({refusal}; a chroot): p11-kit reads user module "
                    "files only for a user other than root")
    return ["unshare", "--user"]


def package_version(name):
    """The installed version of a Debian package, as a tuple of its leading numbers (() if none)."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True).stdout
    return tuple(int(n) for n in re.findall(r"\d+", out.split(":")[-1].split("-")[0]))


class Missing(Exception):
    """The module under test lacks something a scenario needs (a mechanism)."""


def not_supported(reason):
    pytest.skip(NOT_SUPPORTED + reason)


def command_line(argv):
    return " ".join(str(a) for a in argv)


def _tail(text, lines=25):
    text = (text or "").rstrip()
    parts = text.splitlines()
    return "\n".join(parts[-lines:])


class Token:
    """One module's token "conformance", and the environment its programs run in."""

    def __init__(self, module, workdir):
        self.module = module
        self.dir = Path(workdir)
        self.home = self.dir / "home"
        self.home.mkdir()
        data = self.dir / "ptkhsm-data"
        data.mkdir(mode=0o700)
        tokendir = self.dir / "softhsm-tokens"
        tokendir.mkdir()
        self.softhsm_conf = self.dir / "softhsm2.conf"
        self.softhsm_conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\n"
                                     "log.level = ERROR\nslots.removable = false\n")
        env = dict(os.environ)
        for name in ("XDG_CONFIG_HOME", "OPENSSL_CONF", "GNUTLS_PIN", "GNUTLS_SO_PIN", "PKCS11_MODULE"):
            env.pop(name, None)
        env.update(HOME=str(self.home), ET_PTKC_SW_DATAPATH=str(data),
                   ET_PTKC_SW_PIN_KDF_ITERATIONS="1000", SOFTHSM2_CONF=str(self.softhsm_conf))
        self.env = env
        self._ids = itertools.count(1)
        self._mechanisms = None

    # -- running programs -------------------------------------------------

    def run(self, argv, *, check=True, timeout=120, env=None, input=None, cwd=None):
        """Run a real program; a missing program or a non-zero exit fails the scenario."""
        argv = [str(a) for a in argv]
        if shutil.which(argv[0]) is None:
            pytest.fail(f"{argv[0]} is not installed (a missing program is a failure, not a skip)")
        try:
            result = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                                    env=env or self.env, input=input, cwd=cwd or self.dir)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{command_line(argv)}: no answer in {timeout} s\n{_tail(str(exc.stdout))}\n"
                        f"{_tail(str(exc.stderr))}")
        if check and result.returncode != 0:
            pytest.fail(self.describe(result))
        return result

    @staticmethod
    def describe(result):
        return (f"{command_line(result.args)}\nexit status {result.returncode}\n"
                f"--- stdout\n{_tail(result.stdout)}\n--- stderr\n{_tail(result.stderr)}")

    def tool(self, *args, login=True, check=True, timeout=120):
        """pkcs11-tool on this module's token "conformance"."""
        argv = ["pkcs11-tool", "--module", self.module.path, "--token-label", TOKEN_LABEL]
        if login:
            argv += ["--login", "--pin", USER_PIN]
        return self.run(argv + list(args), check=check, timeout=timeout)

    # -- the token ----------------------------------------------------------

    def initialise(self):
        """Initialise the first slot's token and its user PIN, as users do, with pkcs11-tool."""
        base = ["pkcs11-tool", "--module", self.module.path]
        self.run(base + ["--slot", "0", "--init-token", "--label", TOKEN_LABEL, "--so-pin", SO_PIN])
        self.run(base + ["--token-label", TOKEN_LABEL, "--init-pin", "--login", "--so-pin", SO_PIN,
                         "--pin", USER_PIN])

    def new_id(self):
        """A CKA_ID (hex) not used before in this session."""
        return f"c0{next(self._ids):04x}"

    @property
    def mechanisms(self):
        """Mechanism names as pkcs11-tool -M prints them."""
        if self._mechanisms is None:
            out = self.tool("-M", login=False).stdout
            self._mechanisms = {line.split(",")[0].strip() for line in out.splitlines()
                                if line.startswith("  ")}
        return self._mechanisms

    def require(self, *names):
        """The scenario needs these mechanisms: not-supported on the control, a failure on ptkhsm."""
        missing = [name for name in names if name not in self.mechanisms]
        if not missing:
            return
        if self.module.control:
            not_supported(f"no {', '.join(missing)}")
        raise Missing(f"no {', '.join(missing)}")

    @contextmanager
    def known_failure(self, reason, match, *, when=True, modules=("softhsm2",), intermittent=False):
        """A documented difference: on `modules` the block fails, with `match` in the message.

        Elsewhere (or with `when` false) the block runs as usual. If the
        difference disappears (the block passes), the scenario fails so
        docs/conformance.md gets updated; with `intermittent` (a race the
        control hits only sometimes) a pass is recorded as the same failure.
        """
        if not when or self.module.name not in modules:
            yield
            return
        try:
            yield
        except (pytest.fail.Exception, AssertionError) as exc:
            if not re.search(match, str(exc)):
                raise
            pytest.xfail(reason)
        if intermittent:
            pytest.xfail(reason)
        pytest.fail(f"{self.module.title} was expected to fail here ({reason}) but passed: "
                    "update docs/conformance.md and the scenario")

    def uri(self, **attrs):
        """An RFC 7512 URI of an object in this token."""
        parts = [f"token={TOKEN_LABEL}"] + [f"{k}={v}" for k, v in attrs.items()]
        return "pkcs11:" + ";".join(parts)

    def __repr__(self):
        return f"Token({self.module.name})"
