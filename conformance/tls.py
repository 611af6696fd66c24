"""For the TLS runners (OpenVPN, curl, nginx): a throw-away CA, and OpenSSL's pkcs11 engine.

The CA and the peers' keys that are not under test are software keys; the
certificate of a token key is issued for the public key read back from the
token, so the certificate and the token's private key belong together.
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class CA:
    def __init__(self, directory, name="ptkhsm conformance CA"):
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                    critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.write("ca.crt", self.cert)

    def write(self, name, cert):
        path = self.dir / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(self, public_key, common_name, *, server):
        """A certificate for `public_key`: a TLS server (with DNS name common_name) or client."""
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self.name)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   # Python 3.13's ssl verifies strictly (VERIFY_X509_STRICT): a certificate needs its AKI
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]),
                                            critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def software_pair(self, stem, common_name, *, server):
        """A software key and its certificate, as PEM files: (key path, certificate path)."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_path = self.dir / f"{stem}.key"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return key_path, self.write(f"{stem}.crt", self.issue(key.public_key(), common_name, server=server))


ENGINE = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"  # libp11's engine (libengine-pkcs11-openssl)


def engine_config(path, module, init=False):
    """An openssl.cnf that loads libp11's pkcs11 engine with `module` (for OPENSSL_CONF).

    `init`: initialise the engine when OpenSSL reads its configuration, for
    programs that load `engine:` keys without ENGINE_init (nginx).
    """
    path.write_text(
        "openssl_conf = openssl_init\n\n"
        "[openssl_init]\nengines = engine_section\n\n"
        "[engine_section]\npkcs11 = pkcs11_section\n\n"
        f"[pkcs11_section]\nengine_id = pkcs11\ndynamic_path = {ENGINE}\n"
        f"MODULE_PATH = {module}\ninit = {int(init)}\n")
    return path
