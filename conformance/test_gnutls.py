"""GnuTLS: p11tool lists tokens and objects by URI and generates keys; certtool signs with a token key.

Both tools load the module directly (`--provider`), without p11-kit; the
PIN comes from GNUTLS_PIN.
"""

import re

import pytest

from .harness import SO_PIN, TOKEN_LABEL, USER_PIN

CLIENT = "GnuTLS"


class GnuTLS:
    def __init__(self, token):
        self.token = token
        self.env = dict(token.env, GNUTLS_PIN=USER_PIN, GNUTLS_SO_PIN=SO_PIN)
        self._url = None

    def p11tool(self, *args, **kw):
        return self.token.run(["p11tool", "--provider", self.token.module.path, *args], env=self.env, **kw)

    def certtool(self, *args, **kw):
        return self.token.run(["certtool", "--provider", self.token.module.path, *args], env=self.env, **kw)

    @property
    def url(self):
        """The token's URL, as p11tool --list-token-urls gives it."""
        if self._url is None:
            urls = self.p11tool("--list-token-urls").stdout.split()
            mine = [u for u in urls if f"token={TOKEN_LABEL}" in u.split(";")]
            assert len(mine) == 1, urls
            self._url = mine[0]
        return self._url

    def generate(self, kind, label):
        """A key pair generated with p11tool in the token; returns the private key's URL."""
        args = ["--generate-privkey=rsa", "--bits=2048"] if kind == "rsa" else \
            ["--generate-privkey=ecdsa", "--curve=secp256r1"]
        pem = self.token.dir / f"{label}.pub.pem"
        self.p11tool("--login", *args, f"--label={label}", f"--id={self.token.new_id()}",
                     f"--outfile={pem}", self.url)
        return f"{self.url};object={label};type=private"  # by label: p11tool URLs also carry the id


@pytest.fixture(scope="module")
def gnutls(token):
    return GnuTLS(token)


def test_list_tokens(gnutls):
    """p11tool --list-tokens shows the token with its RFC 7512 URL, label and flags"""
    out = gnutls.p11tool("--list-tokens").stdout
    block = [b for b in out.split("Token ") if f"Label: {TOKEN_LABEL}\n" in b]
    assert block, out
    assert f"URL: {gnutls.url}" in block[0] and "Flags:" in block[0] and "Serial:" in block[0], out


def test_list_mechanisms(gnutls):
    """p11tool --list-mechanisms on the token URL"""
    out = gnutls.p11tool("--list-mechanisms", gnutls.url).stdout
    for name in ["CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_RSA_PKCS", "CKM_ECDSA", "CKM_SHA256"]:
        assert re.search(rf"\b{name}\b", out), f"{name} missing:\n{out}"


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_generate_privkey(gnutls, kind):
    """p11tool --generate-privkey in the token; --list-all then shows the private and public key by URL"""
    label = f"gnutls-gen-{kind}"
    gnutls.generate(kind, label)
    out = gnutls.p11tool("--login", "--list-all", gnutls.url).stdout
    types = {re.search(r"type=(\w+)", b).group(1): re.search(r"Type: (.*)", b).group(1)
             for b in out.split("Object ")[1:] if f"object={label};" in b}
    algorithm = "RSA-2048" if kind == "rsa" else "EC/ECDSA-SECP256R1"
    assert types == {"public": f"Public key ({algorithm})", "private": f"Private key ({algorithm})"}, out
    keys = gnutls.p11tool("--login", "--list-privkeys", gnutls.url).stdout
    assert f"object={label};type=private" in keys, keys


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_certtool_self_signed(gnutls, kind):
    """certtool --generate-self-signed with the token key; the certificate verifies and is stored back with p11tool"""
    label = f"gnutls-ca-{kind}"
    private = gnutls.generate(kind, label)
    template = gnutls.token.dir / "gnutls.tmpl"
    template.write_text('cn = "ptkhsm conformance CA"\nexpiration_days = 2\nca\ncert_signing_key\nsigning_key\n')
    cert = gnutls.token.dir / f"{label}.crt"
    gnutls.certtool("--generate-self-signed", "--load-privkey", private, "--template", template,
                    "--outfile", cert)
    out = gnutls.certtool("--verify", "--load-ca-certificate", cert, "--infile", cert).stdout
    assert "Chain verification output: Verified." in out, out
    # the certificate goes back into the token next to its key
    gnutls.p11tool("--login", "--write", f"--load-certificate={cert}", f"--label={label}", gnutls.url)
    listed = gnutls.p11tool("--login", "--list-all-certs", gnutls.url).stdout
    assert f"object={label};type=cert" in listed, listed
    exported = gnutls.p11tool("--login", "--export", f"{gnutls.url};object={label};type=cert").stdout
    assert exported.strip() == _pem_block(cert.read_text())


def _pem_block(text):
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return text[start:end]
