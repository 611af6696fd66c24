"""OpenVPN 2.6 (pkcs11-helper): --show-pkcs11-ids, and a TLS client whose key is in the token.

Each key pair (RSA-2048, P-256) is made with pkcs11-tool, and a certificate
for it, issued by a throw-away CA (conformance/tls.py), is written beside it
into the token. The loopback server (`--dev null`: no tun device) has a
software key; it requires and verifies the client's certificate, so a
completed TLS handshake proves the token key signed. The token PIN reaches
the client over its management interface (a unix socket), answering
`>PASSWORD:Need '<token>' token`.
"""

import re
import socket
import time

import pytest
from cryptography.hazmat.primitives import serialization

from .harness import USER_PIN
from .keys import Keys
from .tls import CA
from .servers import free_port, serve

CLIENT = "OpenVPN"
KEYS = {"rsa": "rsa:2048", "p256": "EC:prime256v1"}
READY = r"Initialization Sequence Completed"


class OpenVPN:
    def __init__(self, token):
        self.token = token
        self.dir = token.dir / "openvpn"
        self.dir.mkdir(exist_ok=True)
        self.keys = Keys(token, "openvpn")
        self.ca = CA(self.dir)
        self.server_key, self.server_cert = self.ca.software_pair("server", "server", server=True)
        self._certified = {}

    def key(self, kind):
        """The key pair and, written into the token beside it, its certificate."""
        key = self.keys.pair(KEYS[kind])
        if kind not in self._certified:
            cert = self.ca.issue(key.public, f"client-{kind}", server=False)
            path = self.dir / f"client-{kind}.der"
            path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
            self.token.tool("--write-object", path, "--type", "cert", "--id", key.id, "--label", key.label)
            self._certified[kind] = cert
        return key

    def ids(self):
        """{certificate subject CN: serialized id} from --show-pkcs11-ids."""
        out = self.token.run(["openvpn", "--show-pkcs11-ids", self.token.module.path]).stdout
        found = {}
        for block in out.split("Certificate\n")[1:]:
            subject = re.search(r"DN:\s+CN=(\S+)", block)
            serialized = re.search(r"Serialized id:\s+(\S+)", block)
            if subject and serialized:
                found[subject.group(1)] = serialized.group(1)
        return found, out


@pytest.fixture(scope="module")
def openvpn(token):
    return OpenVPN(token)


def test_show_pkcs11_ids(openvpn):
    """--show-pkcs11-ids lists the token's certificates, each with a serialized id"""
    for kind in KEYS:
        openvpn.key(kind)
    found, out = openvpn.ids()
    for kind in KEYS:
        assert f"client-{kind}" in found, out


def _answer_pin(path, deadline):
    """Connect to the client's management socket; give the token PIN when asked. Returns what it said."""
    while time.monotonic() < deadline:
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(path))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            time.sleep(0.1)
    else:
        return "no management socket"
    seen = ""
    with sock:
        sock.settimeout(max(1, deadline - time.monotonic()))
        stream = sock.makefile("rw", newline="\n")
        try:
            lines = iter(stream.readline, "")
            for line in lines:
                seen += line
                asked = re.match(r">PASSWORD:Need '(.*)' password", line)
                if asked:
                    stream.write(f'password "{asked.group(1)}" {USER_PIN}\n')
                    stream.flush()
                    return seen + stream.readline()  # SUCCESS: 'conformance token' password entered...
        except TimeoutError:
            seen += "(management interface: no more lines)\n"
    return seen


@pytest.mark.parametrize("kind", list(KEYS))
def test_tls_client(openvpn, kind):
    """a client with --pkcs11-providers/--pkcs11-id completes the TLS handshake with a loopback server"""
    openvpn.key(kind)
    found, out = openvpn.ids()
    serialized = found.get(f"client-{kind}")
    assert serialized, out
    port = free_port(socket.SOCK_DGRAM)
    common = ["--dev", "null", "--proto", "udp4", "--ca", openvpn.ca.pem, "--verb", "3",
              "--data-ciphers", "AES-256-GCM", "--tls-version-min", "1.2", "--ping-exit", "30"]
    server_argv = ["openvpn", "--tls-server", "--local", "127.0.0.1", "--lport", str(port), "--dh", "none",
                   "--cert", openvpn.server_cert, "--key", openvpn.server_key, *common]
    management = openvpn.dir / f"management-{kind}.sock"
    client_argv = ["openvpn", "--tls-client", "--nobind", "--remote", "127.0.0.1", str(port),
                   "--verify-x509-name", "server", "name", "--remote-cert-tls", "server",
                   "--pkcs11-providers", openvpn.token.module.path, "--pkcs11-id", serialized,
                   "--management", management, "unix", "--management-query-passwords",
                   "--connect-retry-max", "1", *common]
    with serve("openvpn server", server_argv, openvpn.token.env, openvpn.dir) as server:
        server.wait_for(r"UDPv4 link local \(bound\)")
        with serve("openvpn client", client_argv, openvpn.token.env, openvpn.dir) as client:
            said = _answer_pin(management, time.monotonic() + 30)
            if not re.search(r"SUCCESS: '.*' password entered", said):
                client.stop()
                server.stop()
                pytest.fail(f"the client did not take the PIN:\n{said}\n--- client\n{client.report()}\n"
                            f"--- server\n{server.report()}")
            client.wait_for(READY, timeout=30)
            server.wait_for(READY, timeout=30)
        assert f"CN=client-{kind}" in server.output, server.report()
