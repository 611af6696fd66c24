"""Java 17 SunPKCS11: keytool against the token, and conformance/java/Sign.java signing with a token key."""

import re
from pathlib import Path

import pytest

from .harness import TOKEN_LABEL, USER_PIN

CLIENT = "Java"
HERE = Path(__file__).resolve().parent
KEYPAIRS = {"RSA": ["-keyalg", "RSA", "-keysize", "2048"], "EC": ["-keyalg", "EC", "-groupname", "secp256r1"]}


class Java:
    def __init__(self, token):
        self.token = token
        listing = token.tool("-L", login=False).stdout
        slot = re.search(r"^Slot \d+ \((0x[0-9a-f]+)\):.*\n\s+token label\s*:\s*" + TOKEN_LABEL, listing, re.M)
        assert slot, listing
        self.config = token.dir / "sunpkcs11.cfg"
        # keytool makes its key pair as session objects, then copies them to the token. On
        # ptkhsm's slot 0 (an external token, docs/exttoken.md) only extractable keys can be
        # stored, as on PTK-C: SunPKCS11's usual setting for such a token.
        self.config.write_text(f"name = {token.module.name}\nlibrary = {token.module.path}\n"
                               f"slot = {int(slot.group(1), 16)}\n"
                               "attributes(generate, CKO_PRIVATE_KEY, *) = {\n  CKA_EXTRACTABLE = true\n}\n")
        self.classes = token.dir / "java-classes"
        self._made = set()

    def keytool(self, *args, **kw):
        return self.token.run(["keytool", "-keystore", "NONE", "-storetype", "PKCS11", "-addprovider", "SunPKCS11",
                               "-providerArg", self.config, "-storepass", USER_PIN, *args], **kw)

    def keypair(self, kind):
        alias = f"java-{kind.lower()}"
        if alias not in self._made:
            self.keytool("-genkeypair", "-alias", alias, *KEYPAIRS[kind], "-dname", f"CN={alias}", "-validity", "2")
            self._made.add(alias)
        return alias

    def sign(self, alias, algorithm):
        if not self.classes.exists():
            self.token.run(["javac", "-d", self.classes, HERE / "java" / "Sign.java"])
        return self.token.run(["java", "-cp", self.classes, "Sign", self.config, USER_PIN, alias, algorithm])


@pytest.fixture(scope="module")
def java(token):
    return Java(token)


def test_keytool_list(java):
    """keytool -list -storetype PKCS11 logs in and lists the token as a keystore"""
    out = java.keytool("-list").stdout
    assert "Keystore type: PKCS11" in out and f"Keystore provider: SunPKCS11-{java.token.module.name}" in out, out


@pytest.mark.parametrize("kind", list(KEYPAIRS))
def test_keytool_genkeypair(java, kind):
    """keytool -genkeypair makes a key pair and its self-signed certificate in the token"""
    alias = java.keypair(kind)
    out = java.keytool("-list", "-alias", alias, "-v").stdout
    assert "Entry type: PrivateKeyEntry" in out and f"Owner: CN={alias}" in out, out


@pytest.mark.parametrize("kind,algorithm", [("RSA", "SHA256withRSA"), ("RSA", "SHA512withRSA"),
                                            ("EC", "SHA256withECDSA")])
def test_sign(java, kind, algorithm):
    """Sign.java signs with the token's private key (SunPKCS11) and verifies in software"""
    out = java.sign(java.keypair(kind), algorithm).stdout
    assert out.startswith(f"ok: {algorithm} signature") and f"SunPKCS11-{java.token.module.name}" in out, out
