"""OpenSSL 3 with the libp11 pkcs11 engine: keys in the token named by RFC 7512 URIs.

pkeyutl signs, verifies and decrypts with token keys; `req -x509` makes a
self-signed certificate with a token key; `s_server` serves TLS on loopback
with its private key in the token and `s_client` verifies the handshake.
Keys are made with pkcs11-tool.

Where pkcs11-provider is installed (Debian 13 packages it, Debian 12 does not),
the `provider` scenarios sign and serve TLS through it too: OpenSSL 3's
provider that replaces the engine, loading the same module from openssl.cnf.
"""

import os
import re
import select
import subprocess
import time

import pytest

from .harness import USER_PIN
from .keys import Keys

CLIENT = "OpenSSL"
ENGINE = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"
PROVIDER = "/usr/lib/x86_64-linux-gnu/ossl-modules/pkcs11.so"
KEYS = {"rsa": "rsa:2048", "ec": "EC:prime256v1"}
SOFTHSM_PROVIDER_EXIT = ("SoftHSMv2 2.6.1 under pkcs11-provider: the program does its work, then dies with "
                         "SIGSEGV as it exits (C_CloseSession after SoftHSMv2's own teardown, softhsm/SoftHSMv2#780)")


class OpenSSL:
    def __init__(self, token):
        self.token = token
        self.conf = token.dir / "openssl-engine.cnf"
        self.conf.write_text(
            "openssl_conf = openssl_init\n\n"
            "[openssl_init]\nengines = engine_section\n\n"
            "[engine_section]\npkcs11 = pkcs11_section\n\n"
            f"[pkcs11_section]\nengine_id = pkcs11\ndynamic_path = {ENGINE}\n"
            f"MODULE_PATH = {token.module.path}\ninit = 0\n\n"
            "[req]\ndistinguished_name = req_dn\n[req_dn]\n")
        self.env = dict(token.env, OPENSSL_CONF=str(self.conf))
        self.keys = Keys(token, "openssl")

    def run(self, *args, **kw):
        return self.token.run(["openssl", *args], env=self.env, **kw)

    def provider_env(self):
        """OPENSSL_CONF loading pkcs11-provider with this module (beside the default provider)."""
        if not os.path.exists(PROVIDER):
            pytest.skip(f"pkcs11-provider is not installed ({PROVIDER}; Debian 13 packages it, Debian 12 does not)")
        conf = self.token.dir / "openssl-provider.cnf"
        conf.write_text(
            "openssl_conf = openssl_init\n\n"
            "[openssl_init]\nproviders = provider_section\n\n"
            "[provider_section]\ndefault = default_section\npkcs11 = pkcs11_section\n\n"
            "[default_section]\nactivate = 1\n\n"
            f"[pkcs11_section]\nmodule = {PROVIDER}\npkcs11-module-path = {self.token.module.path}\n"
            "activate = 1\n")
        return dict(self.token.env, OPENSSL_CONF=str(conf))

    def key(self, kind):
        return self.keys.pair(KEYS[kind])

    def private_uri(self, kind):
        return self.token.uri(object=self.key(kind).label, type="private", **{"pin-value": USER_PIN})

    def public_uri(self, kind):
        return self.token.uri(object=self.key(kind).label, type="public")

    def public_pem(self, kind):
        path = self.token.dir / f"openssl-{kind}.pub.pem"
        if not path.exists():
            self.run("pkey", "-pubin", "-inform", "DER", "-in", self.key(kind).public_der, "-out", path)
        return path

    def certificate(self, kind):
        """`openssl req -x509` with the token key: a self-signed certificate for localhost."""
        path = self.token.dir / f"openssl-{kind}.crt"
        if not path.exists():
            self.run("req", "-x509", "-new", "-engine", "pkcs11", "-keyform", "engine",
                     "-key", self.private_uri(kind), "-subj", "/CN=localhost", "-days", "2", "-sha256",
                     "-addext", "subjectAltName=DNS:localhost", "-out", path)
        return path


@pytest.fixture(scope="module")
def openssl(token):
    return OpenSSL(token)


def _digest(openssl):
    data = openssl.token.dir / "openssl.data"
    data.write_bytes(os.urandom(1000))
    digest = openssl.token.dir / "openssl.dgst"
    openssl.run("dgst", "-sha256", "-binary", "-out", digest, data)
    return digest


SIGN = {
    "rsa-pkcs1": ("rsa", ["-pkeyopt", "digest:sha256"]),
    "rsa-pss": ("rsa", ["-pkeyopt", "digest:sha256", "-pkeyopt", "rsa_padding_mode:pss",
                        "-pkeyopt", "rsa_pss_saltlen:digest"]),
    "ecdsa-p256": ("ec", []),
}


@pytest.mark.parametrize("case", list(SIGN))
def test_pkeyutl_sign_verify(openssl, case):
    """pkeyutl -sign with the token's private key; verified in software and with the token's public key"""
    kind, options = SIGN[case]
    digest = _digest(openssl)
    sig = openssl.token.dir / f"openssl-{case}.sig"
    openssl.run("pkeyutl", "-sign", "-engine", "pkcs11", "-keyform", "engine", "-inkey",
                openssl.private_uri(kind), "-in", digest, "-out", sig, *options)
    out = openssl.run("pkeyutl", "-verify", "-pubin", "-inkey", openssl.public_pem(kind),
                      "-in", digest, "-sigfile", sig, *options).stdout
    assert "Signature Verified Successfully" in out, out
    out = openssl.run("pkeyutl", "-verify", "-engine", "pkcs11", "-keyform", "engine", "-pubin",
                      "-inkey", openssl.public_uri(kind), "-in", digest, "-sigfile", sig, *options).stdout
    assert "Signature Verified Successfully" in out, out


DECRYPT = {
    "rsa-pkcs1": [],
    "rsa-oaep": ["-pkeyopt", "rsa_padding_mode:oaep"],
    "rsa-oaep-sha256": ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
                        "-pkeyopt", "rsa_mgf1_md:sha256"],
}


@pytest.mark.parametrize("case", list(DECRYPT))
def test_pkeyutl_decrypt(openssl, case):
    """pkeyutl -decrypt with the token's RSA key what software encrypted with the public key"""
    options = DECRYPT[case]
    secret = openssl.token.dir / f"openssl-{case}.secret"
    secret.write_bytes(os.urandom(32))
    enc = openssl.token.dir / f"openssl-{case}.enc"
    openssl.run("pkeyutl", "-encrypt", "-pubin", "-inkey", openssl.public_pem("rsa"), "-in", secret,
                "-out", enc, *options)
    dec = openssl.token.dir / f"openssl-{case}.dec"
    openssl.run("pkeyutl", "-decrypt", "-engine", "pkcs11", "-keyform", "engine",
                "-inkey", openssl.private_uri("rsa"), "-in", enc, "-out", dec, *options)
    assert dec.read_bytes() == secret.read_bytes()


@pytest.mark.parametrize("kind", list(KEYS))
def test_req_x509(openssl, kind):
    """req -x509 signs a self-signed certificate with the token key; it verifies and holds the token's public key"""
    cert = openssl.certificate(kind)
    out = openssl.run("verify", "-CAfile", cert, cert).stdout
    assert f"{cert}: OK" in out, out
    cert_key = openssl.run("x509", "-in", cert, "-noout", "-pubkey").stdout
    assert cert_key == openssl.public_pem(kind).read_text()


def _wait_for_accept(server, deadline):
    """The port s_server listens on, from its `ACCEPT 127.0.0.1:<port>` line.

    Reads the pipe unbuffered (os.read): a buffered readline can take the
    ACCEPT line into its buffer with the line before it, where select() no
    longer sees it (a failure only under load).
    """
    seen = ""
    fd = server.stdout.fileno()
    while time.monotonic() < deadline:
        accept = re.search(r"^ACCEPT .*:(\d+)$", seen, re.M)
        if accept:
            return int(accept.group(1)), seen
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
        elif server.poll() is not None:
            break
    return None, seen


@pytest.mark.parametrize("kind", list(KEYS))
def test_tls_handshake(openssl, kind):
    """s_server with its key in the token (TLS 1.3 on a free loopback port); s_client verifies the server"""
    _handshake(openssl, kind, ["-engine", "pkcs11", "-keyform", "engine", "-key", openssl.private_uri(kind)],
               openssl.env)


@pytest.mark.parametrize("case", list(SIGN))
def test_provider_sign_verify(openssl, case):
    """pkcs11-provider: pkeyutl -sign with the token's private key by URI; verified in software"""
    env = openssl.provider_env()
    kind, options = SIGN[case]
    digest = _digest(openssl)
    sig = openssl.token.dir / f"openssl-provider-{case}.sig"
    with openssl.token.known_failure(SOFTHSM_PROVIDER_EXIT, r"exit status -11"):
        openssl.token.run(["openssl", "pkeyutl", "-sign", "-inkey", openssl.private_uri(kind), "-in", digest,
                           "-out", sig, *options], env=env)
    out = openssl.run("pkeyutl", "-verify", "-pubin", "-inkey", openssl.public_pem(kind),
                      "-in", digest, "-sigfile", sig, *options).stdout
    assert "Signature Verified Successfully" in out, out


@pytest.mark.parametrize("kind", list(KEYS))
def test_provider_tls_handshake(openssl, kind):
    """pkcs11-provider: s_server with its key in the token by URI (TLS 1.3); s_client verifies the server"""
    env = openssl.provider_env()
    with openssl.token.known_failure(SOFTHSM_PROVIDER_EXIT, r"assert -11 == 0"):
        _handshake(openssl, kind, ["-key", openssl.private_uri(kind)], env)


def _handshake(openssl, kind, key_options, env):
    cert = openssl.certificate(kind)
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-www", "-cert", str(cert),
         *key_options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=openssl.token.dir)
    try:
        port, seen = _wait_for_accept(server, time.monotonic() + 30)
        if port is None:
            server.kill()
            _, err = server.communicate(timeout=10)
            pytest.fail(f"s_server did not start:\n{seen}\n{err}")
        client = openssl.run("s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                             "-CAfile", cert, "-verify_return_error", "-verify_hostname", "localhost", "-brief",
                             input="GET / HTTP/1.0\r\n\r\n", timeout=30)
        report = client.stdout + client.stderr
        assert "CONNECTION ESTABLISHED" in report and "Verification: OK" in report, report
        assert "Protocol version: TLSv1.3" in report, report
        # OpenSSL 3.0 prints "ECDSA"/"RSA-PSS", 3.5 the TLS 1.3 scheme ("ecdsa_secp256r1_sha256", "rsa_pss_rsae_sha256")
        assert re.search(r"Signature type: (ECDSA|ecdsa_)" if kind == "ec" else r"Signature type: (RSA-PSS|rsa_pss_)",
                         report), report
        server.wait(timeout=30)
        assert server.returncode == 0, server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
