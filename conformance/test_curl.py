"""curl (OpenSSL build) authenticating with a client certificate whose key is in the token.

The key is named by an RFC 7512 URI and used through libp11's pkcs11 engine
(OPENSSL_CONF loads it with the module). The loopback server is
`openssl s_server -Verify` with a software key: it requires a client
certificate issued by the throw-away CA (conformance/tls.py) and its `-www`
page shows the certificate it verified, so the answer proves the token key
signed the handshake.
"""

import pytest
from cryptography.hazmat.primitives import serialization

from .harness import USER_PIN
from .keys import Keys
from .servers import serve
from .tls import CA, engine_config

CLIENT = "curl"
KEYS = {"rsa": "rsa:2048", "p256": "EC:prime256v1"}
# how the key is handed to curl: the engine named explicitly, or only the pkcs11: URI
# (curl then picks the pkcs11 engine itself)
HOW = {"engine": ["--engine", "pkcs11", "--key-type", "ENG"], "uri": []}


class Curl:
    def __init__(self, token):
        self.token = token
        self.dir = token.dir / "curl"
        self.dir.mkdir(exist_ok=True)
        self.keys = Keys(token, "curl")
        self.ca = CA(self.dir)
        self.server_key, self.server_cert = self.ca.software_pair("server", "localhost", server=True)
        self.env = dict(token.env, OPENSSL_CONF=str(engine_config(self.dir / "openssl.cnf", token.module.path)))

    def client(self, kind):
        """(the key's pkcs11: URI, its certificate's PEM file)"""
        key = self.keys.pair(KEYS[kind])
        cert = self.dir / f"client-{kind}.crt"
        if not cert.exists():
            cert.write_bytes(self.ca.issue(key.public, f"client-{kind}", server=False)
                             .public_bytes(serialization.Encoding.PEM))
        return self.token.uri(object=key.label, type="private", **{"pin-value": USER_PIN}), cert


@pytest.fixture(scope="module")
def curl(token):
    return Curl(token)


@pytest.mark.parametrize("how", list(HOW))
@pytest.mark.parametrize("kind", list(KEYS))
def test_client_certificate(curl, kind, how):
    """curl --key pkcs11:… --cert: TLS 1.3 to a loopback s_server that requires and verifies the client certificate"""
    uri, cert = curl.client(kind)
    server_argv = ["openssl", "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-www", "-tls1_3",
                   "-cert", curl.server_cert, "-key", curl.server_key, "-Verify", "1", "-CAfile", curl.ca.pem]
    # the server needs no engine: it runs without our OPENSSL_CONF
    with serve("s_server", server_argv, curl.token.env, curl.dir) as server:
        port = int(server.wait_for(r"^ACCEPT 127\.0\.0\.1:(\d+)").group(1))
        result = curl.token.run(["curl", "--silent", "--show-error", "--fail", "--max-time", "60",
                                 "--cacert", curl.ca.pem, "--resolve", f"localhost:{port}:127.0.0.1",
                                 *HOW[how], "--key", uri, "--cert", cert, f"https://localhost:{port}/"],
                                env=curl.env, timeout=90)
        page = result.stdout
        assert "Protocol  : TLSv1.3" in page, page
        assert "Client certificate" in page and f"Subject: CN=client-{kind}\n" in page, page
