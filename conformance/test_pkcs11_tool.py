"""OpenSC pkcs11-tool against the module: listing, key generation, every operation, its self-tests.

Results are checked twice where possible: by the module itself (pkcs11-tool
--verify / --decrypt) and independently with `cryptography` on the public
key (or the key value) read back from the token.
"""

import datetime
import hashlib
import hmac
import os
import re

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from cryptography.hazmat.primitives.padding import PKCS7
from cryptography import x509
from cryptography.x509.oid import NameOID

from .harness import SO_PIN, TOKEN_LABEL, not_supported
from .keys import Keys

CLIENT = "pkcs11-tool"
DATA = b"The quick brown fox jumps over the lazy dog. " * 3
HASHES = {"SHA-1": hashes.SHA1(), "SHA1": hashes.SHA1(), "SHA224": hashes.SHA224(), "SHA256": hashes.SHA256(),
          "SHA384": hashes.SHA384(), "SHA512": hashes.SHA512(), "SHA3-256": hashes.SHA3_256()}


@pytest.fixture(scope="module")
def keys(token):
    made = Keys(token, "p11tool")
    yield made
    # libp11 0.4.12 (the OpenSSL engine) cannot enumerate the private keys of a
    # token that holds an EdDSA private key: leave none behind for the other runners.
    made.remove("EC:edwards25519")


def write(token, name, data):
    path = token.dir / name
    path.write_bytes(data)
    return path


# -- listing --------------------------------------------------------------

def test_list_slots(token):
    """-L lists the slots and shows the initialised token"""
    out = token.tool("-L", login=False).stdout
    assert re.search(r"token label\s*:\s*" + TOKEN_LABEL, out), out


def test_list_token_slots(token):
    """-T lists only slots with a token"""
    out = token.tool("-T", login=False).stdout
    assert re.search(r"token label\s*:\s*" + TOKEN_LABEL, out), out
    assert "token flags" in out and "PIN initialized" in out, out


def test_show_info(token):
    """-I shows the Cryptoki library information"""
    out = token.tool("-I", login=False).stdout
    assert "Cryptoki version" in out and "Manufacturer" in out, out


def test_list_mechanisms(token):
    """-M lists the mechanisms with their flags"""
    out = token.tool("-M", login=False).stdout
    for name in ["RSA-PKCS-KEY-PAIR-GEN", "RSA-PKCS", "SHA256-RSA-PKCS", "ECDSA-KEY-PAIR-GEN", "ECDSA",
                 "AES-KEY-GEN", "AES-CBC-PAD", "SHA256"]:
        assert re.search(rf"^  {re.escape(name)},", out, re.M), f"{name} missing:\n{out}"


def test_list_interfaces(token):
    """--list-interfaces shows the PKCS #11 3.0 interfaces (C_GetInterfaceList)"""
    result = token.run(["pkcs11-tool", "--module", token.module.path, "--list-interfaces"], check=False)
    if token.module.control and "only in PKCS #11 3.0" in result.stderr:
        not_supported("a PKCS #11 2.40 module (no C_GetInterfaceList)")
    out = result.stdout
    assert result.returncode == 0, token.describe(result)
    assert "Interface 'PKCS 11'" in out and "version: 3.0" in out, out


def test_list_objects(token, keys):
    """-O lists the token's objects after a login"""
    key = keys.pair("rsa:2048")
    out = token.tool("-O").stdout
    assert f"label:      {key.label}" in out and f"ID:         {key.id}" in out, out


# -- key generation ---------------------------------------------------------

KEYGEN = {
    "rsa:2048": "RSA-PKCS-KEY-PAIR-GEN", "rsa:3072": "RSA-PKCS-KEY-PAIR-GEN", "rsa:4096": "RSA-PKCS-KEY-PAIR-GEN",
    "EC:prime256v1": "ECDSA-KEY-PAIR-GEN", "EC:secp384r1": "ECDSA-KEY-PAIR-GEN",
    "EC:secp521r1": "ECDSA-KEY-PAIR-GEN", "EC:secp256k1": "ECDSA-KEY-PAIR-GEN",
    "EC:edwards25519": "EC-EDWARDS-KEY-PAIR-GEN",
}
CURVES = {"prime256v1": ec.SECP256R1, "secp384r1": ec.SECP384R1, "secp521r1": ec.SECP521R1,
          "secp256k1": ec.SECP256K1}


@pytest.mark.parametrize("spec", list(KEYGEN))
def test_keygen_pair(token, keys, spec):
    """--keypairgen makes a key pair; its public key reads back with the right size or curve"""
    token.require(KEYGEN[spec])
    key = keys.pair(spec)
    kind, _, param = spec.partition(":")
    if kind == "rsa":
        assert isinstance(key.public, rsa.RSAPublicKey) and key.public.key_size == int(param)
    elif param == "edwards25519":
        assert isinstance(key.public, ed25519.Ed25519PublicKey)
    else:
        assert isinstance(key.public, ec.EllipticCurvePublicKey)
        assert isinstance(key.public.curve, CURVES[param])


SECRET_KEYGEN = {"AES:16": ("AES-KEY-GEN", "AES length 16"), "AES:24": ("AES-KEY-GEN", "AES length 24"),
                 "AES:32": ("AES-KEY-GEN", "AES length 32"), "DES3:24": ("DES3-KEY-GEN", "DES3"),
                 "GENERIC:32": ("GENERIC-SECRET-KEY-GEN", "Generic secret length 32")}


@pytest.mark.parametrize("spec", list(SECRET_KEYGEN))
def test_keygen_secret(token, spec):
    """--keygen makes a secret key of the requested type and length"""
    mechanism, shown = SECRET_KEYGEN[spec]
    token.require(mechanism)
    key_id = token.new_id()
    with token.known_failure("pkcs11-tool puts CKA_VALUE_LEN in the DES3 template; SoftHSMv2 rejects it "
                             "(CKR_ATTRIBUTE_TYPE_INVALID)", "CKR_ATTRIBUTE_TYPE_INVALID",
                             when=spec.startswith("DES3")):
        out = token.tool("--keygen", "--key-type", spec, "--id", key_id, "--label", f"keygen-{key_id}").stdout
    assert f"Secret Key Object; {shown}" in out, out


# -- signatures ---------------------------------------------------------------

def _ecdsa_der(raw):
    half = len(raw) // 2
    return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))


def _pss(hash_):
    return padding.PSS(mgf=padding.MGF1(hash_), salt_length=hash_.digest_size)


# id -> (mechanism, key spec, extra pkcs11-tool args, input transform, independent check)
SIGN = {
    "RSA-PKCS": ("RSA-PKCS", "rsa:2048", [], lambda d: hashlib.sha256(d).digest(),
                 lambda pub, sig, msg: pub.recover_data_from_signature(sig, padding.PKCS1v15(), None) == msg),
    "SHA1-RSA-PKCS": ("SHA1-RSA-PKCS", "rsa:2048", [], None,
                      lambda pub, sig, msg: pub.verify(sig, msg, padding.PKCS1v15(), hashes.SHA1())),
    "SHA256-RSA-PKCS": ("SHA256-RSA-PKCS", "rsa:2048", [], None,
                        lambda pub, sig, msg: pub.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())),
    "SHA384-RSA-PKCS": ("SHA384-RSA-PKCS", "rsa:3072", [], None,
                        lambda pub, sig, msg: pub.verify(sig, msg, padding.PKCS1v15(), hashes.SHA384())),
    "SHA512-RSA-PKCS": ("SHA512-RSA-PKCS", "rsa:4096", [], None,
                        lambda pub, sig, msg: pub.verify(sig, msg, padding.PKCS1v15(), hashes.SHA512())),
    "RSA-PKCS-PSS": ("RSA-PKCS-PSS", "rsa:2048", ["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"],
                     lambda d: hashlib.sha256(d).digest(),
                     lambda pub, sig, msg: pub.verify(sig, msg, _pss(hashes.SHA256()),
                                                      utils.Prehashed(hashes.SHA256()))),
    "SHA256-RSA-PKCS-PSS": ("SHA256-RSA-PKCS-PSS", "rsa:2048", [], None,
                            lambda pub, sig, msg: pub.verify(sig, msg, _pss(hashes.SHA256()), hashes.SHA256())),
    "SHA512-RSA-PKCS-PSS": ("SHA512-RSA-PKCS-PSS", "rsa:3072", [], None,
                            lambda pub, sig, msg: pub.verify(sig, msg, _pss(hashes.SHA512()), hashes.SHA512())),
    "ECDSA-P256": ("ECDSA", "EC:prime256v1", [], lambda d: hashlib.sha256(d).digest(),
                   lambda pub, sig, msg: pub.verify(_ecdsa_der(sig), msg,
                                                    ec.ECDSA(utils.Prehashed(hashes.SHA256())))),
    "ECDSA-secp256k1": ("ECDSA", "EC:secp256k1", [], lambda d: hashlib.sha256(d).digest(),
                        lambda pub, sig, msg: pub.verify(_ecdsa_der(sig), msg,
                                                         ec.ECDSA(utils.Prehashed(hashes.SHA256())))),
    "ECDSA-SHA256": ("ECDSA-SHA256", "EC:prime256v1", [], None,
                     lambda pub, sig, msg: pub.verify(_ecdsa_der(sig), msg, ec.ECDSA(hashes.SHA256()))),
    "ECDSA-SHA384": ("ECDSA-SHA384", "EC:secp384r1", [], None,
                     lambda pub, sig, msg: pub.verify(_ecdsa_der(sig), msg, ec.ECDSA(hashes.SHA384()))),
    "ECDSA-SHA512": ("ECDSA-SHA512", "EC:secp521r1", [], None,
                     lambda pub, sig, msg: pub.verify(_ecdsa_der(sig), msg, ec.ECDSA(hashes.SHA512()))),
    "EDDSA-Ed25519": ("EDDSA", "EC:edwards25519", [], None, lambda pub, sig, msg: pub.verify(sig, msg)),
}


@pytest.mark.parametrize("case", list(SIGN))
def test_sign_verify(token, keys, case):
    """--sign, then --verify in the token and an independent verification of the signature"""
    mechanism, spec, extra, transform, check = SIGN[case]
    token.require(mechanism, KEYGEN[spec])
    key = keys.pair(spec)
    message = transform(DATA) if transform else DATA
    data = write(token, f"sign-{case}.in", message)
    sig = token.dir / f"sign-{case}.sig"
    token.tool("--sign", "-m", mechanism, "--id", key.id, "-i", data, "-o", sig, *extra)
    out = token.tool("--verify", "-m", mechanism, "--id", key.id, "-i", data, "--signature-file", sig, *extra)
    assert "Signature is valid" in out.stdout, out.stdout
    assert check(key.public, sig.read_bytes(), message) is not False


# pkcs11-tool 0.23 signs with a secret key only for HMAC mechanisms (AES-CMAC: "Private key not found").
MACS = {"SHA256-HMAC": ("GENERIC:32", lambda k, m: hmac.new(k, m, hashlib.sha256).digest()),
        "SHA384-HMAC": ("GENERIC:48", lambda k, m: hmac.new(k, m, hashlib.sha384).digest()),
        "SHA512-HMAC": ("GENERIC:64", lambda k, m: hmac.new(k, m, hashlib.sha512).digest())}


@pytest.mark.parametrize("mechanism", list(MACS))
def test_mac(token, keys, mechanism):
    """--sign/--verify with a MAC; the MAC is recomputed from the key value read back"""
    spec, compute = MACS[mechanism]
    token.require(mechanism)
    key = keys.secret(spec, "--extractable")
    data = write(token, f"mac-{mechanism}.in", DATA)
    mac = token.dir / f"mac-{mechanism}.mac"
    token.tool("--sign", "-m", mechanism, "--id", key.id, "-i", data, "-o", mac)
    out = token.tool("--verify", "-m", mechanism, "--id", key.id, "-i", data, "--signature-file", mac)
    assert "Signature is valid" in out.stdout, out.stdout
    value_file = token.dir / f"mac-{mechanism}.key"
    token.tool("--read-object", "--type", "secrkey", "--id", key.id, "-o", value_file)
    assert mac.read_bytes() == compute(value_file.read_bytes(), DATA)


# -- encryption -------------------------------------------------------------

DECRYPT = {
    "RSA-PKCS": ("RSA-PKCS", [], lambda pub, m: pub.encrypt(m, padding.PKCS1v15())),
    "RSA-PKCS-OAEP-SHA1": ("RSA-PKCS-OAEP", ["--hash-algorithm", "SHA-1", "--mgf", "MGF1-SHA1"],
                           lambda pub, m: pub.encrypt(m, padding.OAEP(padding.MGF1(hashes.SHA1()),
                                                                     hashes.SHA1(), None))),
    "RSA-PKCS-OAEP-SHA256": ("RSA-PKCS-OAEP", ["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"],
                             lambda pub, m: pub.encrypt(m, padding.OAEP(padding.MGF1(hashes.SHA256()),
                                                                       hashes.SHA256(), None))),
    "RSA-X-509": ("RSA-X-509", [], None),
}


@pytest.mark.parametrize("case", list(DECRYPT))
def test_decrypt_rsa(token, keys, case):
    """--decrypt with the private key what was encrypted outside with the public key"""
    mechanism, extra, encrypt = DECRYPT[case]
    token.require(mechanism)
    key = keys.pair("rsa:2048")
    message = os.urandom(32)
    if encrypt is None:  # raw RSA: m^e mod n, the result is the full modulus length
        numbers = key.public.public_numbers()
        m = int.from_bytes(message, "big")
        ciphertext = pow(m, numbers.e, numbers.n).to_bytes(256, "big")
        expected = message.rjust(256, b"\0")
    else:
        ciphertext, expected = encrypt(key.public, message), message
    enc = write(token, f"dec-{case}.in", ciphertext)
    out = token.dir / f"dec-{case}.out"
    with token.known_failure("SoftHSMv2 implements RSA-OAEP with SHA-1 only (CKR_ARGUMENTS_BAD for SHA-256)",
                             "CKR_ARGUMENTS_BAD", when=case == "RSA-PKCS-OAEP-SHA256"):
        token.tool("--decrypt", "-m", mechanism, "--id", key.id, "-i", enc, "-o", out, *extra)
    assert out.read_bytes() == expected


IV = bytes(range(16))
# pkcs11-tool 0.23 --encrypt knows the AES ECB/CBC mechanisms only (not CTR, GCM or DES3).
CIPHERS = {
    "AES-ECB": (16, lambda: modes.ECB(), None, False),
    "AES-CBC": (24, lambda: modes.CBC(IV), IV, False),
    "AES-CBC-PAD": (32, lambda: modes.CBC(IV), IV, True),
}


@pytest.mark.parametrize("mechanism", list(CIPHERS))
def test_encrypt_decrypt(token, keys, mechanism):
    """--encrypt with a key of known value matches the cipher computed outside; --decrypt inverts it"""
    size, mode, iv, pad = CIPHERS[mechanism]
    token.require(mechanism)
    value = os.urandom(size)
    key = keys.imported(f"AES:{size}", value)
    algorithm = algorithms.AES
    plain = DATA[:64] if not pad else DATA[:61]
    data = write(token, f"enc-{mechanism}.in", plain)
    enc, dec = token.dir / f"enc-{mechanism}.enc", token.dir / f"enc-{mechanism}.dec"
    iv_args = ["--iv", iv.hex()] if iv else []
    token.tool("--encrypt", "-m", mechanism, "--id", key.id, "-i", data, "-o", enc, *iv_args)
    token.tool("--decrypt", "-m", mechanism, "--id", key.id, "-i", enc, "-o", dec, *iv_args)
    if pad:
        padder = PKCS7(algorithm.block_size).padder()
        padded = padder.update(plain) + padder.finalize()
    else:
        padded = plain
    encryptor = Cipher(algorithm(value), mode()).encryptor()
    assert enc.read_bytes() == encryptor.update(padded) + encryptor.finalize()
    assert dec.read_bytes() == plain


# -- digests ------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", ["SHA-1", "SHA224", "SHA256", "SHA384", "SHA512", "SHA3-256"])
def test_digest(token, mechanism):
    """--hash matches hashlib"""
    token.require(mechanism)
    data = write(token, "digest.in", DATA)
    out = token.dir / f"digest-{mechanism}.out"
    token.tool("--hash", "-m", mechanism, "-i", data, "-o", out, login=False)
    digest = hashes.Hash(HASHES[mechanism])
    digest.update(DATA)
    assert out.read_bytes() == digest.finalize()


# -- derive, wrap/unwrap ----------------------------------------------------

@pytest.mark.parametrize("curve", ["prime256v1", "secp384r1", "secp521r1"])
def test_derive_ecdh(token, keys, curve):
    """--derive ECDH1-DERIVE with a peer's public key gives the same secret as the peer computes"""
    token.require("ECDH1-DERIVE", "ECDSA-KEY-PAIR-GEN")
    key = keys.pair(f"EC:{curve}")
    peer = ec.generate_private_key(CURVES[curve]())
    peer_file = write(token, f"ecdh-{curve}.peer", peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    out = token.dir / f"ecdh-{curve}.secret"
    token.tool("--derive", "-m", "ECDH1-DERIVE", "--id", key.id, "-i", peer_file, "-o", out)
    assert out.read_bytes() == peer.exchange(ec.ECDH(), key.public)


def _aes_ecb(key, block):
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def _encrypt_block(token, key_id, name):
    block = write(token, f"{name}.block", bytes(16))
    out = token.dir / f"{name}.enc"
    token.tool("--encrypt", "-m", "AES-ECB", "--id", key_id, "-i", block, "-o", out)
    return out.read_bytes()


def test_wrap_unwrap_aes_key_wrap(token, keys):
    """--wrap/--unwrap AES-KEY-WRAP (RFC 3394) under a KEK of known value, checked against RFC 3394 outside"""
    token.require("AES-KEY-WRAP", "AES-ECB")
    kek_value = os.urandom(32)
    kek = keys.imported("AES:32", kek_value, "--usage-wrap")
    target = keys.secret("AES:16", "--extractable")
    wrapped = token.dir / "kw.wrapped"
    token.tool("--wrap", "-m", "AES-KEY-WRAP", "--id", kek.id, "--application-id", target.id, "-o", wrapped)
    value = aes_key_unwrap(kek_value, wrapped.read_bytes())
    assert _encrypt_block(token, target.id, "kw-target") == _aes_ecb(value, bytes(16))
    # and the other way: a key wrapped outside, unwrapped into the token
    secret = os.urandom(16)
    blob = write(token, "kw.outside", aes_key_wrap(kek_value, secret))
    new_id = token.new_id()
    token.tool("--unwrap", "-m", "AES-KEY-WRAP", "--id", kek.id, "-i", blob, "--key-type", "AES:",
               "--application-id", new_id, "--application-label", f"unwrapped-{new_id}")
    assert _encrypt_block(token, new_id, "kw-unwrapped") == _aes_ecb(secret, bytes(16))


def test_wrap_unwrap_rsa_pkcs(token, keys):
    """--wrap an AES key with an RSA public key, --unwrap it with the private key: the same key comes back"""
    token.require("RSA-PKCS", "AES-ECB")
    rsa_key = keys.pair("rsa:2048")
    target = keys.secret("AES:32", "--extractable")
    wrapped = token.dir / "rsa.wrapped"
    token.tool("--wrap", "-m", "RSA-PKCS", "--id", rsa_key.id, "--application-id", target.id, "-o", wrapped)
    assert len(wrapped.read_bytes()) == 256
    new_id = token.new_id()
    token.tool("--unwrap", "-m", "RSA-PKCS", "--id", rsa_key.id, "-i", wrapped, "--key-type", "AES:",
               "--application-id", new_id, "--application-label", f"unwrapped-{new_id}")
    assert _encrypt_block(token, new_id, "rsa-unwrapped") == _encrypt_block(token, target.id, "rsa-target")


# -- objects --------------------------------------------------------------------

def test_data_object(token):
    """--write-object/--read-object/--delete-object on a data object"""
    label = f"data-{token.new_id()}"
    content = os.urandom(100)
    path = write(token, f"{label}.bin", content)
    token.tool("--write-object", path, "--type", "data", "--label", label, "--application-label", "conformance")
    out = token.dir / f"{label}.read"
    token.tool("--read-object", "--type", "data", "--label", label, "-o", out)
    assert out.read_bytes() == content
    token.tool("--delete-object", "--type", "data", "--label", label)
    assert f"'{label}'" not in token.tool("-O", "--type", "data").stdout


def _self_signed_der(common_name):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_certificate_object(token):
    """--write-object/--read-object/--delete-object on an X.509 certificate"""
    cert_id = token.new_id()
    label = f"cert-{cert_id}"
    der = _self_signed_der(label)
    path = write(token, f"{label}.der", der)
    token.tool("--write-object", path, "--type", "cert", "--id", cert_id, "--label", label)
    listing = token.tool("-O", "--type", "cert").stdout
    assert f"label:      {label}" in listing and f"subject:    DN: CN={label}" in listing, listing
    out = token.dir / f"{label}.read"
    token.tool("--read-object", "--type", "cert", "--id", cert_id, "-o", out)
    assert out.read_bytes() == der
    token.tool("--delete-object", "--type", "cert", "--id", cert_id)
    assert f"label:      {label}" not in token.tool("-O", "--type", "cert").stdout


def test_generate_random(token):
    """--generate-random returns the bytes asked for"""
    out = token.dir / "random.bin"
    token.tool("--generate-random", "64", "-o", out, login=False)
    assert len(out.read_bytes()) == 64 and out.read_bytes() != bytes(64)


def test_token_lifecycle(token):
    """--init-token and --init-pin on a free slot, --change-pin, then a login with the new PIN"""
    listing = token.tool("-L", login=False).stdout
    free = re.findall(r"^Slot \d+ \((0x[0-9a-f]+)\): .*\n\s+token state:\s+uninitialized", listing, re.M)
    assert free, listing
    slot = str(int(free[0], 16))
    base = ["pkcs11-tool", "--module", token.module.path]
    token.run(base + ["--slot", slot, "--init-token", "--label", "second", "--so-pin", SO_PIN])
    second = base + ["--token-label", "second"]
    token.run(second + ["--init-pin", "--login", "--so-pin", SO_PIN, "--pin", "1111"])
    token.run(second + ["--change-pin", "--login", "--pin", "1111", "--new-pin", "2222"])
    bad = token.run(second + ["--login", "--pin", "1111", "-O"], check=False)
    assert bad.returncode != 0 and "CKR_PIN_INCORRECT" in bad.stderr, token.describe(bad)
    token.run(second + ["--login", "--pin", "2222", "-O"])


# -- pkcs11-tool's own tests ------------------------------------------------------

def test_self_test(token):
    """--test: pkcs11-tool's own test of digests, signatures, decryption, wrapping, random"""
    with token.known_failure("SoftHSMv2 implements RSA-OAEP with SHA-1 only: --test's OAEP-SHA256 decryption "
                             "gets CKR_ARGUMENTS_BAD", "CKR_ARGUMENTS_BAD"):
        out = token.tool("--test").stdout
    assert "No errors" in out, out


def test_self_test_ec(token):
    """--test-ec: EC key pair generation, ECDSA-SHA1 signature, attribute changes, deletion"""
    token.require("ECDSA-KEY-PAIR-GEN", "ECDSA-SHA1")
    out = token.tool("--test-ec", "--session-rw", "--id", token.new_id(), "--key-type", "EC:prime256v1").stdout
    assert "==> OK" in out, out


THREAD_CRASH = ("SoftHSMv2's C_Initialize is not thread-safe: when the race is hit, both concurrent "
                "C_Initialize calls return CKR_OK, then the process crashes (SIGSEGV, SIGABRT) or hangs")


@pytest.mark.parametrize("commands", ["IN", "ILGISLT0"])
def test_threads(token, commands):
    """--test-threads <commands> -L: a thread initialises and queries while the main thread lists slots

    pkcs11-tool sleeps 30 s before C_Finalize when the thread is still busy
    at the end, so a run takes 0.1 s or 30 s, depending on scheduling.
    """
    argv = ["pkcs11-tool", "--module", token.module.path, "--test-threads", commands, "-L"]
    with token.known_failure(THREAD_CRASH, r"exit status -\d+|no answer in|both returned CKR_OK", intermittent=True):
        result = token.run(argv, timeout=40 if token.module.control else 120)
        out = result.stdout + result.stderr
        initialised = re.findall(r"C_Initialize.*(?:returned|rv:)\s*(CKR_\w+)", out)
        if initialised.count("CKR_OK") > 1:
            pytest.fail(f"concurrent C_Initialize calls both returned CKR_OK\n{out}")
        assert re.search(r"token label\s*:\s*" + TOKEN_LABEL, out), out
        # OpenSC 0.23: "test_threads thread:0 state:1, rv:CKR_OK"; 0.26: "Test thread 0 returning rv:CKR_OK"
        states = re.findall(r"(?:test_threads thread:\d+ state:-?\d+, |Test thread \d+ returning )rv:(CKR_\w+)", out)
        assert states and set(states) <= {"CKR_OK", "CKR_CRYPTOKI_ALREADY_INITIALIZED"}, out


def test_fork(token):
    """--test-fork: the child of a fork calls C_Initialize again and uses the module"""
    with token.known_failure("SoftHSMv2 keeps its state across fork(): C_Initialize in the child returns "
                             "CKR_CRYPTOKI_ALREADY_INITIALIZED", "CKR_CRYPTOKI_ALREADY_INITIALIZED"):
        token.run(["pkcs11-tool", "--module", token.module.path, "--test-fork"])
