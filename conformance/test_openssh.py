"""OpenSSH: ssh-keygen -D, ssh -I, ssh-agent + ssh-add -s, and all of them through p11-kit-proxy.so.

Each module's token gets an RSA-2048 and a P-256 key pair (pkcs11-tool). A
loopback sshd (its own configuration, host key and authorized_keys, on a
port the OS chose) is started for the module's scenarios and stopped after
them. The PIN reaches ssh and ssh-add through SSH_ASKPASS (forced: there is
no terminal).

ssh-agent keeps its default provider allowlist (`/usr/lib*/*,/usr/local/lib*/*`,
real paths): SoftHSMv2 is loaded from /usr/lib/softhsm, ptkhsm from the copy
`ptkhsm install` makes in /usr/local/lib/ptkhsm/ (uninstalled afterwards;
if a copy is installed there already, the runner installs into a temporary
prefix under /usr/local/lib/ instead and leaves that copy alone).
"""

import getpass
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ptkhsm import p11kit

from .harness import MODULES, USER_PIN, as_non_root
from .keys import Keys
from .servers import free_port, serve

CLIENT = "OpenSSH"
SSHD = "/usr/sbin/sshd"  # sshd re-executes itself: it must be started by absolute path
PROXY = "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so"
KEYS = {"rsa": "rsa:2048", "p256": "EC:prime256v1"}
KEY_TYPE = {"rsa": "RSA", "p256": "ECDSA"}
PRIVSEP = Path("/run/sshd")  # sshd's privilege-separation directory (Debian's path)


def openssh_public(key):
    return key.public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


class OpenSSH:
    def __init__(self, token):
        self.token = token
        self.dir = token.dir / "openssh"
        self.dir.mkdir(exist_ok=True)
        self.keys = Keys(token, "openssh")
        self.user = getpass.getuser()
        askpass = self.dir / "askpass"
        askpass.write_text(f"#!/bin/sh\necho {USER_PIN}\n")
        askpass.chmod(0o700)
        self.env = dict(token.env, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force")
        self.env.pop("SSH_AUTH_SOCK", None)
        self.authorized = self.dir / "authorized_keys"
        self.authorized.write_text("")
        self.port = None

    def key(self, kind):
        return self.keys.pair(KEYS[kind])

    def authorize(self, *kinds):
        """authorized_keys holds exactly these keys: a login proves which key signed."""
        self.authorized.write_text("".join(openssh_public(self.key(k)) + "\n" for k in kinds))

    def identity(self, kind):
        """-i <public key> with IdentitiesOnly: ssh offers only that one of the token's (or agent's) keys.

        Without it ssh offers every key of the token in turn, and sshd's
        MaxAuthTries (6) ends the connection on a token holding many keys.
        """
        path = self.dir / f"{kind}.pub"
        path.write_text(openssh_public(self.key(kind)) + "\n")
        return ["-o", "IdentitiesOnly=yes", "-i", str(path)]

    def start_sshd(self):
        host_key = self.dir / "ssh_host_ed25519_key"
        self.token.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key])
        self.port = free_port()
        config = self.dir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\n"
            f"AuthorizedKeysFile {self.authorized}\nStrictModes no\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            f"PermitRootLogin prohibit-password\nAllowUsers {self.user}\nLogLevel VERBOSE\n")
        (self.dir / "known_hosts").write_text(
            f"[127.0.0.1]:{self.port} " + (host_key.with_suffix(".pub")).read_text())
        return serve("sshd", [SSHD, "-D", "-e", "-f", config], self.env, self.dir)

    def ssh_options(self):
        return ["-F", "/dev/null", "-p", str(self.port), "-o", "BatchMode=no",
                "-o", f"UserKnownHostsFile={self.dir / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
                "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
                "-o", "ConnectTimeout=20"]

    def login(self, *options, env=None, prefix=()):
        """ssh to the loopback sshd; the remote command proves the session ran. Returns ssh's output."""
        result = self.token.run([*prefix, "ssh", *self.ssh_options(), *options, f"{self.user}@127.0.0.1",
                                 "echo logged-in-as-$(id -un)"], env=env or self.env, timeout=60)
        assert result.stdout == f"logged-in-as-{self.user}\n", self.token.describe(result)
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def openssh(token):
    created = not PRIVSEP.exists()
    if created:
        PRIVSEP.mkdir(mode=0o755)
    ssh = OpenSSH(token)
    for kind in KEYS:
        ssh.key(kind)
    with ssh.start_sshd() as sshd:
        sshd.wait_for(r"Server listening on 127\.0\.0\.1 port")
        ssh.sshd = sshd
        yield ssh
    if created:
        shutil.rmtree(PRIVSEP, ignore_errors=True)


def test_keygen_lists_keys(openssh):
    """ssh-keygen -D lists the token's RSA and P-256 public keys, as OpenSSH keys"""
    out = openssh.token.run(["ssh-keygen", "-D", openssh.token.module.path], env=openssh.env).stdout
    listed = {" ".join(line.split()[:2]) for line in out.splitlines()}
    for kind in KEYS:
        assert openssh_public(openssh.key(kind)) in listed, out


@pytest.mark.parametrize("kind", list(KEYS))
def test_ssh_login(openssh, kind):
    """ssh -I logs in to a loopback sshd with the token key (authorized_keys holds only that key)"""
    openssh.authorize(kind)
    report = openssh.login("-I", openssh.token.module.path, *openssh.identity(kind), "-v")
    assert re.search(rf"Server accepts key: .*{KEY_TYPE[kind]}", report), report


def _installed_module(token):
    """(path to give ssh-add, cleanup): SoftHSMv2 as packaged; ptkhsm copied by `ptkhsm install`."""
    if token.module.control:
        return token.module.path, lambda: None
    prefix = Path("/usr/local")
    if (prefix / "lib" / "ptkhsm").exists():  # someone's installed copy: leave it alone
        prefix = Path(tempfile.mkdtemp(prefix="ptkhsm-openssh-", dir="/usr/local/lib"))
    before = sorted(str(p) for p in prefix.rglob("ptkhsm*"))
    ptkhsm = [str(Path(sys.executable).parent / "ptkhsm")]
    path = token.run([*ptkhsm, "install", "--prefix", prefix]).stdout.strip()

    def uninstall():
        token.run([*ptkhsm, "uninstall", "--prefix", prefix])
        after = sorted(str(p) for p in prefix.rglob("ptkhsm*"))
        if prefix != Path("/usr/local"):
            os.rmdir(prefix)
        assert after == before, f"ptkhsm uninstall left {sorted(set(after) - set(before))}"
    return path, uninstall


def test_agent(openssh):
    """a default ssh-agent loads the installed module (ssh-add -s), logs in with each key, unloads it (ssh-add -e)"""
    token = openssh.token
    socket_path = openssh.dir / "agent.sock"
    module, uninstall = _installed_module(token)
    try:
        with serve("ssh-agent", ["ssh-agent", "-D", "-a", socket_path], openssh.env, openssh.dir) as agent:
            agent.wait_for(r"SSH_AUTH_SOCK=")
            env = dict(openssh.env, SSH_AUTH_SOCK=str(socket_path))
            if not token.module.control and not MODULES[0].path.startswith(("/usr/lib", "/usr/local/lib")):
                # the package's own path (a venv's site-packages) is outside the allowlist
                refused = token.run(["ssh-add", "-s", MODULES[0].path], env=env, check=False)
                assert refused.returncode != 0 and "agent refused operation" in refused.stderr, \
                    token.describe(refused)
            token.run(["ssh-add", "-s", module], env=env)
            listed = token.run(["ssh-add", "-L"], env=env).stdout
            for kind in KEYS:
                assert openssh_public(openssh.key(kind)) in listed, listed
                openssh.authorize(kind)
                report = openssh.login("-v", "-o", "IdentityAgent=" + str(socket_path), *openssh.identity(kind),
                                       env=env)
                assert re.search(rf"Server accepts key: .*{KEY_TYPE[kind]}.* agent", report), report
            token.run(["ssh-add", "-e", module], env=env)
            empty = token.run(["ssh-add", "-L"], env=env, check=False)
            assert empty.returncode == 1 and "no identities" in empty.stdout, token.describe(empty)
    finally:
        uninstall()


def test_p11kit_proxy(openssh):
    """ssh-keygen -D and ssh -I through p11-kit-proxy.so, the module registered as a p11-kit module"""
    token = openssh.token
    name = f"openssh-{token.module.name}"
    # p11-kit skips user module files for root: the programs run in a user namespace, not as uid 0
    prefix = as_non_root()
    p11kit.register(token.module.path, name, environ=token.env)
    try:
        out = token.run([*prefix, "ssh-keygen", "-D", PROXY], env=openssh.env).stdout
        listed = {" ".join(line.split()[:2]) for line in out.splitlines()}
        for kind in KEYS:
            assert openssh_public(openssh.key(kind)) in listed, out
        openssh.authorize("p256")
        report = openssh.login("-I", PROXY, *openssh.identity("p256"), "-v", prefix=prefix)
        assert re.search(r"Server accepts key: .*ECDSA", report), report
    finally:
        p11kit.unregister(name, environ=token.env)
