"""p11-kit: `ptkhsm register` writes the module file; p11-kit, its proxy and GnuTLS then find the token.

`ptkhsm register` writes ~/.config/pkcs11/modules/<name>.module in the
token's private HOME. For the control run the same command registers
SoftHSMv2 (`--module`, `--name softhsm2-control`). p11-kit ignores user
module files when running as root, so as root the p11-kit programs run in a
user namespace (`unshare --user`), where they are not uid 0.
"""

import re
import sys
from pathlib import Path

import pytest

from .harness import MODULES, TOKEN_LABEL, as_non_root

CLIENT = "p11-kit"
PROXY = "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so"
CLI = "import sys; from ptkhsm.cli import main; sys.exit(main(sys.argv[1:]))"


class P11Kit:
    def __init__(self, token):
        self.token = token
        self.name = "ptkhsm" if not token.module.control else f"{token.module.name}-control"
        self.file = token.home / ".config" / "pkcs11" / "modules" / f"{self.name}.module"

    def ptkhsm(self, *args):
        """The `ptkhsm` command of the package whose libptkhsm.so is under test."""
        package_root = Path(MODULES[0].path).resolve().parent.parent
        env = dict(self.token.env, PYTHONPATH=str(package_root))
        if self.token.module.control:
            args = [*args, "--name", self.name] + (["--module", self.token.module.path]
                                                   if args[0] == "register" else [])
        return self.token.run([sys.executable, "-c", CLI, *args], env=env)

    def run(self, *argv, **kw):
        """A p11-kit based program, not as uid 0 (p11-kit skips user configuration for root)."""
        return self.token.run([*as_non_root(), *argv], **kw)

    def modules(self):
        """{module name: its block} from p11-kit list-modules."""
        out = self.run("p11-kit", "list-modules").stdout
        blocks = re.split(r"^(?=\S)", out, flags=re.M)
        return {b.split(":", 1)[0]: b for b in blocks if b.strip()}


@pytest.fixture(scope="module")
def p11kit(token):
    kit = P11Kit(token)
    kit.ptkhsm("register")
    yield kit
    if kit.file.exists():
        kit.ptkhsm("unregister")


def test_register(p11kit):
    """`ptkhsm register` writes the user module file naming the library"""
    text = p11kit.file.read_text()
    assert f"module: {p11kit.token.module.path}\n" in text, text


def test_list_modules(p11kit):
    """p11-kit list-modules shows the registered module, its library and its token"""
    modules = p11kit.modules()
    assert p11kit.name in modules, list(modules)
    block = modules[p11kit.name]
    assert block.startswith(f"{p11kit.name}: {p11kit.token.module.path}\n"), block
    assert f"    token: {TOKEN_LABEL}\n" in block, block


def test_proxy(p11kit):
    """pkcs11-tool through p11-kit-proxy.so lists the token of the registered module"""
    out = p11kit.run("pkcs11-tool", "--module", PROXY, "-L").stdout
    assert re.search(r"token label\s*:\s*" + TOKEN_LABEL, out), out
    manufacturer = "ptkhsm project" if not p11kit.token.module.control else "SoftHSM project"
    assert re.search(r"token manufacturer\s*:\s*" + manufacturer, out), out


def test_gnutls_default(p11kit):
    """p11tool without --provider (GnuTLS loads the p11-kit modules) lists the token"""
    out = p11kit.run("p11tool", "--list-token-urls").stdout
    assert any(f"token={TOKEN_LABEL}" in url.split(";") for url in out.split()), out


def test_unregister(p11kit):
    """`ptkhsm unregister` removes the file; p11-kit list-modules no longer shows the module"""
    p11kit.ptkhsm("unregister")
    assert not p11kit.file.exists()
    assert p11kit.name not in p11kit.modules()
