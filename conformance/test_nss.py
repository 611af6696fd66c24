"""NSS: modutil registers the module in a fresh NSS database; certutil lists the token, makes keys and certificates."""

import re

import pytest
from cryptography import x509

from .harness import TOKEN_LABEL, USER_PIN

CLIENT = "NSS"


class NSS:
    def __init__(self, token):
        self.token = token
        self.db = token.dir / "nssdb"
        self.db.mkdir()
        self.password = token.dir / "nss-pin.txt"
        self.password.write_text(USER_PIN + "\n")
        self.noise = token.dir / "nss-noise.bin"
        self.noise.write_bytes(bytes(range(256)))
        token.run(["certutil", "-N", "-d", f"sql:{self.db}", "--empty-password"])

    def modutil(self, *args, **kw):
        return self.token.run(["modutil", "-dbdir", f"sql:{self.db}", *args], **kw)

    def certutil(self, *args, **kw):
        return self.token.run(["certutil", "-d", f"sql:{self.db}", *args], **kw)

    def keys(self):
        result = self.certutil("-K", "-h", TOKEN_LABEL, "-f", self.password, check=False)
        out = result.stdout
        if result.returncode != 0 and "no keys found" not in out:
            pytest.fail(self.token.describe(result))
        return set(re.findall(r"^<\s*\d+>\s+(\w+)\s+(\S+)", out, re.M))


@pytest.fixture(scope="module")
def nss(token):
    db = NSS(token)
    db.modutil("-add", token.module.name, "-libfile", token.module.path, "-force")
    return db


def test_modutil_add(nss):
    """modutil -add registers the library; -list shows it loaded with its slots and the token"""
    out = nss.modutil("-list").stdout
    block = out[out.index(f". {nss.token.module.name}\n"):]
    assert f"library name: {nss.token.module.path}" in block, out
    assert "status: loaded" in block.split("\n\n")[0], out
    assert f"token: {TOKEN_LABEL}\n" in block, out


def test_certutil_list_token(nss):
    """certutil -L -h <token> logs in and lists the token's certificates"""
    out = nss.certutil("-L", "-h", TOKEN_LABEL, "-f", nss.password).stdout
    assert "Certificate Nickname" in out, out


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_certutil_generate_key(nss, kind):
    """certutil -G -h <token> generates a key pair in the token; -K lists it"""
    before = nss.keys()
    options = ["-g", "2048"] if kind == "rsa" else ["-q", "nistp256"]
    nss.certutil("-G", "-h", TOKEN_LABEL, "-k", kind, *options, "-f", nss.password, "-z", nss.noise)
    new = nss.keys() - before
    assert len(new) == 1 and next(iter(new))[0] == kind, (before, new)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_certutil_self_signed(nss, kind):
    """certutil -S -x -h <token>: key and self-signed certificate made in the token; -L shows and exports it"""
    nickname = f"nss-{kind}"
    options = ["-g", "2048"] if kind == "rsa" else ["-q", "nistp256"]
    nss.certutil("-S", "-x", "-n", nickname, "-s", f"CN=ptkhsm conformance {kind}", "-t", "CT,,",
                 "-h", TOKEN_LABEL, "-k", kind, *options, "-f", nss.password, "-z", nss.noise, "-v", "2")
    listed = nss.certutil("-L", "-h", TOKEN_LABEL, "-f", nss.password).stdout
    assert f"{TOKEN_LABEL}:{nickname}" in listed, listed
    pem = nss.certutil("-L", "-h", TOKEN_LABEL, "-n", f"{TOKEN_LABEL}:{nickname}", "-a", "-f", nss.password).stdout
    cert = x509.load_pem_x509_certificate(pem.encode())
    cert.verify_directly_issued_by(cert)
    assert cert.subject.rfc4514_string() == f"CN=ptkhsm conformance {kind}"
