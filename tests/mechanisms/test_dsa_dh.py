"""DSA, PKCS #3 DH and AES-MAC through the real .so, with python-pkcs11.

Known answers: NIST FIPS 186-3 DSA SigVer vectors; the RFC 5114 DH groups with
their published static key pairs and shared secrets; signatures and shared
secrets checked against `cryptography`; CBC-MAC against
`cryptography`'s AES-CBC under a zero IV. Then domain parameter objects
(created and generated) and the errors for wrong keys, bad parameters and
incomplete templates. Parameter generation is slow: only DSA 1024 is generated.
"""

import struct
import warnings
from collections import defaultdict

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.utils import CryptographyDeprecationWarning
from pkcs11 import DEFAULT, Attribute, KeyType, Mechanism, ObjectClass

from ptkhsm import constants as C

from . import raw, symkeys
from .conftest import b, public_key_info, raw_rv
from .vectors import load_nist

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    from cryptography.hazmat.primitives.asymmetric.dh import DHParameterNumbers, DHPrivateNumbers, DHPublicNumbers

DSA_MECHS = {"SHA-1": Mechanism.DSA_SHA1, "SHA-224": Mechanism.DSA_SHA224, "SHA-256": Mechanism.DSA_SHA256,
             "SHA-384": Mechanism.DSA_SHA384, "SHA-512": Mechanism.DSA_SHA512}


def _int(raw_bytes):
    return int.from_bytes(raw_bytes, "big")


# -- DSA ----------------------------------------------------------------------------
def dsa_public(session, p, q, g, y):
    return session.create_object({
        Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.DSA, Attribute.TOKEN: False,
        Attribute.PRIME: b(p), Attribute.SUBPRIME: b(q), Attribute.BASE: b(g), Attribute.VALUE: b(y),
        Attribute.VERIFY: True})


def dsa_private(session, private_key, extra=None):
    numbers = private_key.private_numbers()
    params = numbers.public_numbers.parameter_numbers
    return session.create_object({
        Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.DSA, Attribute.TOKEN: False,
        Attribute.PRIME: b(params.p), Attribute.SUBPRIME: b(params.q), Attribute.BASE: b(params.g),
        Attribute.VALUE: b(numbers.x), Attribute.SIGN: True, **(extra or {})})


def _sigver_vectors(per_section=2):
    """FIPS 186-3 SigVer.rsp, the first records of each (L, N, hash) section, with their P, Q, G."""
    out, domain, taken = [], None, defaultdict(int)
    for record in load_nist("asymmetric", "DSA", "FIPS_186-3", "SigVer.rsp"):
        if "Msg" not in record:
            domain = record
            continue
        section = record["[mod]"]
        if section.startswith("L=3072") or taken[section] >= per_section:
            continue
        taken[section] += 1
        out.append(pytest.param({**domain, **record}, id=f"{section}-{taken[section]}"))
    return out


@pytest.mark.parametrize("vector", _sigver_vectors())
def test_dsa_fips_186_3_sigver(s, vector):
    p, q, g, y = (int(vector[k], 16) for k in "PQGY")
    n = (q.bit_length() + 7) // 8
    signature = int(vector["R"], 16).to_bytes(n, "big") + int(vector["S"], 16).to_bytes(n, "big")
    key = dsa_public(s, p, q, g, y)
    mechanism = DSA_MECHS[vector["[mod]"].rsplit(", ", 1)[1]]
    expected = vector["Result"].startswith("P")
    assert key.verify(bytes.fromhex(vector["Msg"]), signature, mechanism=mechanism) is expected


@pytest.fixture(scope="module")
def dsa_key():
    return dsa.generate_private_key(2048)


def test_dsa_imported_key_against_cryptography(s, dsa_key):
    private = dsa_private(s, dsa_key)
    public_numbers = dsa_key.public_key().public_numbers()
    params = public_numbers.parameter_numbers
    public = dsa_public(s, params.p, params.q, params.g, public_numbers.y)
    spki = dsa_key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    assert public_key_info(s, public) == spki and public_key_info(s, private) == spki
    data = b"message to sign" * 7

    # Multi-part signing with the hash inside the token, verified by cryptography.
    signature = private.sign((data[:10], data[10:50], data[50:]), mechanism=Mechanism.DSA_SHA256)
    assert len(signature) == 64  # r || s, 32 bytes each for N = 256
    der = utils.encode_dss_signature(_int(signature[:32]), _int(signature[32:]))
    dsa_key.public_key().verify(der, data, hashes.SHA256())

    # CKM_DSA signs a digest; the same signature verifies as CKM_DSA_SHA384 over the data.
    digest = hashes.Hash(hashes.SHA384())
    digest.update(data)
    signature = private.sign(digest.finalize(), mechanism=Mechanism.DSA)
    assert public.verify(data, signature, mechanism=Mechanism.DSA_SHA384)

    # cryptography's signature verifies in the token, a tampered one does not.
    r, s_ = utils.decode_dss_signature(dsa_key.sign(data, hashes.SHA512()))
    theirs = r.to_bytes(32, "big") + s_.to_bytes(32, "big")
    assert public.verify(data, theirs, mechanism=Mechanism.DSA_SHA512)
    assert not public.verify(data + b"!", theirs, mechanism=Mechanism.DSA_SHA512)
    assert not public.verify(data, theirs[:-1], mechanism=Mechanism.DSA_SHA512)
    with raw_rv(C.CKR_DATA_LEN_RANGE):
        raw.sign(s, C.CKM_DSA, None, private.handle, b"\1" * 21)


def test_dsa_domain_parameters_created_and_generated(s, dsa_key):
    params = dsa_key.parameters().parameter_numbers()
    created = s.create_domain_parameters(
        KeyType.DSA, {Attribute.PRIME: b(params.p), Attribute.SUBPRIME: b(params.q), Attribute.BASE: b(params.g)})
    assert isinstance(created, pkcs11.DomainParameters)
    assert created[Attribute.PRIME_BITS] == 2048 and created[Attribute.LOCAL] is False
    assert created[Attribute.KEY_TYPE] == KeyType.DSA and created[Attribute.CLASS] == ObjectClass.DOMAIN_PARAMETERS

    public, private = created.generate_keypair()
    assert public[Attribute.PRIME] == b(params.p) and private[Attribute.SUBPRIME] == b(params.q)
    assert private[Attribute.LOCAL] and private[Attribute.KEY_GEN_MECHANISM] == Mechanism.DSA_KEY_PAIR_GEN
    signature = private.sign(b"data", mechanism=Mechanism.DSA_SHA224)
    y = _int(public[Attribute.VALUE])
    theirs = dsa.DSAPublicNumbers(y, params).public_key()
    theirs.verify(utils.encode_dss_signature(_int(signature[:32]), _int(signature[32:])), b"data", hashes.SHA224())

    generated = s.generate_domain_parameters(KeyType.DSA, 1024)
    assert generated[Attribute.PRIME_BITS] == 1024 and generated[Attribute.LOCAL] is True
    assert _int(generated[Attribute.SUBPRIME]).bit_length() == 160
    public, private = generated.generate_keypair()
    assert public.verify(b"x", private.sign(b"x", mechanism=Mechanism.DSA_SHA1), mechanism=Mechanism.DSA_SHA1)


# -- DH -----------------------------------------------------------------------------
def _rfc5114_groups():
    """RFC 5114's three groups, each with a static key pair on both sides and their shared Z."""
    merged = defaultdict(dict)
    for record in load_nist("asymmetric", "DH", "RFC5114.txt"):
        merged[record["section"]].update(record)
    return [pytest.param({k: int(v, 16) for k, v in fields.items() if k in
                          ("P", "G", "XstatIUT", "YstatIUT", "YstatCAVS", "XstatCAVS", "Z")},
                         id=section.split()[0].rstrip(".")) for section, fields in merged.items()]


def _dh_spki_numbers(der):
    """CKA_PUBLIC_KEY_INFO of a PKCS #3 key, read by cryptography -> (p, g, y)."""
    assert bytes.fromhex("06092a864886f70d010301") in der  # dhKeyAgreement, not X9.42's dhpublicnumber
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        numbers = serialization.load_der_public_key(der).public_numbers()
    return numbers.parameter_numbers.p, numbers.parameter_numbers.g, numbers.y


def dh_private(session, p, g, x, extra=None):
    return session.create_object({
        Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.DH, Attribute.TOKEN: False,
        Attribute.PRIME: b(p), Attribute.BASE: b(g), Attribute.VALUE: b(x), Attribute.DERIVE: True, **(extra or {})})


def _derive(private, peer_y, key_type=KeyType.GENERIC_SECRET, length=None):
    return private.derive_key(key_type, length, mechanism=Mechanism.DH_PKCS_DERIVE, mechanism_param=b(peer_y),
                              template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})


@pytest.mark.parametrize("group", _rfc5114_groups())
def test_dh_rfc5114_shared_secret(s, group):
    p, g = group["P"], group["G"]
    size = (p.bit_length() + 7) // 8
    z = group["Z"].to_bytes(size, "big")
    ours = dh_private(s, p, g, group["XstatIUT"])
    # The whole Z as a generic secret (PKCS #3: as long as the prime) ...
    secret = _derive(ours, group["YstatCAVS"], length=size * 8)
    assert secret[Attribute.VALUE] == z
    # ... and an AES key from its trailing bytes: truncation removes the leading end.
    aes = _derive(ours, group["YstatCAVS"], KeyType.AES, 256)
    assert aes[Attribute.VALUE] == z[-32:]
    # The other side agrees, and so does cryptography's exchange.
    theirs = dh_private(s, p, g, group["XstatCAVS"])
    assert _derive(theirs, group["YstatIUT"], length=size * 8)[Attribute.VALUE] == z
    numbers = DHParameterNumbers(p, g)
    crypto_private = DHPrivateNumbers(group["XstatIUT"], DHPublicNumbers(group["YstatIUT"], numbers)).private_key()
    assert crypto_private.exchange(DHPublicNumbers(group["YstatCAVS"], numbers).public_key()).rjust(size, b"\0") == z
    assert ours[Attribute.VALUE_BITS] == group["XstatIUT"].bit_length()
    assert _dh_spki_numbers(public_key_info(s, ours)) == (p, g, group["YstatIUT"])


def test_dh_generated_pair_against_cryptography(s):
    group = _rfc5114_groups()[2].values[0]  # 2048-bit group, known to OpenSSL (no slow prime check)
    p, g = group["P"], group["G"]
    domain = s.create_domain_parameters(KeyType.DH, {Attribute.PRIME: b(p), Attribute.BASE: b(g)}, store=True)
    try:
        assert domain[Attribute.PRIME_BITS] == 2048 and domain[Attribute.KEY_TYPE] == KeyType.DH
        found = list(s.get_objects({Attribute.CLASS: ObjectClass.DOMAIN_PARAMETERS, Attribute.KEY_TYPE: KeyType.DH,
                                    Attribute.TOKEN: True}))
        assert [o.handle for o in found] == [domain.handle] and found[0][Attribute.PRIME] == b(p)
        public, private = domain.generate_keypair(private_template={Attribute.VALUE_BITS: 256})
    finally:
        domain.destroy()
    assert private[Attribute.VALUE_BITS] == 256
    assert private[Attribute.KEY_GEN_MECHANISM] == Mechanism.DH_PKCS_KEY_PAIR_GEN

    peer = DHParameterNumbers(p, g).parameters().generate_private_key()
    expected = peer.exchange(DHPublicNumbers(_int(public[Attribute.VALUE]), DHParameterNumbers(p, g)).public_key())
    derived = _derive(private, peer.public_key().public_numbers().y, KeyType.AES, 128)
    assert derived[Attribute.VALUE] == expected.rjust(256, b"\0")[-16:]
    assert _dh_spki_numbers(public_key_info(s, public)) == (p, g, _int(public[Attribute.VALUE]))


# -- AES-MAC ------------------------------------------------------------------------
def cbc_mac(key, data, length):
    """CBC-MAC with cryptography: AES-CBC, zero IV, zero padding to whole blocks (at least one)."""
    padded = data + bytes(-len(data) % 16) if data else bytes(16)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
    return (encryptor.update(padded) + encryptor.finalize())[-16:][:length]


@pytest.fixture(scope="module")
def aes_key(s):
    value = bytes(range(32))
    return value, s.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                                   Attribute.VALUE: value, Attribute.SIGN: True, Attribute.VERIFY: True,
                                   Attribute.TOKEN: False})


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 48, 100])
def test_aes_mac_against_cbc(aes_key, size):
    value, key = aes_key
    data = bytes((7 * i + 3) % 256 for i in range(size))
    mac = key.sign(data, mechanism=Mechanism.AES_MAC)
    assert mac == cbc_mac(value, data, 8)
    chunks = (data[:5], data[5:21], data[21:])
    assert key.sign(chunks, mechanism=Mechanism.AES_MAC) == mac
    for length in (1, 12, 16):
        general = key.sign(data, mechanism=Mechanism.AES_MAC_GENERAL, mechanism_param=struct.pack("L", length))
        assert general == cbc_mac(value, data, length)
        assert key.verify(chunks, general, mechanism=Mechanism.AES_MAC_GENERAL,
                          mechanism_param=struct.pack("L", length))
    assert key.verify(data, mac, mechanism=Mechanism.AES_MAC)
    assert not key.verify(data + b"\1", mac, mechanism=Mechanism.AES_MAC)
    assert not key.verify(data, mac[:7], mechanism=Mechanism.AES_MAC)


# python-pkcs11's unwrap_key sets every usage attribute; these do not apply to private keys.
PUBLIC_ONLY = {Attribute.ENCRYPT: DEFAULT, Attribute.VERIFY: DEFAULT, Attribute.WRAP: DEFAULT}


def test_private_keys_wrap_and_unwrap(s, dsa_key):
    """PKCS#8 inside AES key wrap: the unwrapped keys work as the originals did."""
    kek = s.generate_key(KeyType.AES, 256, template={Attribute.WRAP: True, Attribute.UNWRAP: True})
    group = _rfc5114_groups()[1].values[0]
    unwrapped = {}
    for key_type, key, usage in (
            (KeyType.DSA, dsa_private(s, dsa_key, {Attribute.EXTRACTABLE: True}), Attribute.SIGN),
            (KeyType.DH, dh_private(s, group["P"], group["G"], group["XstatIUT"], {Attribute.EXTRACTABLE: True}),
             Attribute.DERIVE)):
        wrapped = kek.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        unwrapped[key_type] = kek.unwrap_key(ObjectClass.PRIVATE_KEY, key_type, wrapped,
                                             mechanism=Mechanism.AES_KEY_WRAP_PAD,
                                             template={**PUBLIC_ONLY, usage: True, Attribute.TOKEN: False})
        assert public_key_info(s, unwrapped[key_type]) == public_key_info(s, key)
    signature = unwrapped[KeyType.DSA].sign(b"data", mechanism=Mechanism.DSA_SHA256)
    dsa_key.public_key().verify(utils.encode_dss_signature(_int(signature[:32]), _int(signature[32:])),
                                b"data", hashes.SHA256())
    z = group["Z"].to_bytes(256, "big")
    assert _derive(unwrapped[KeyType.DH], group["YstatCAVS"], KeyType.AES, 128)[Attribute.VALUE] == z[-16:]


def test_domain_parameters_wrapped_whole(s):
    """CKM_WRAPKEY_DES3_CBC (how ExtToken keeps slot 0's objects) carries a domain parameter object."""
    group = _rfc5114_groups()[1].values[0]
    kek = s.generate_key(KeyType.DES2, template={Attribute.WRAP: True, Attribute.UNWRAP: True})
    domain = s.create_domain_parameters(KeyType.DH, {Attribute.PRIME: b(group["P"]), Attribute.BASE: b(group["G"])})
    wrapped = raw.wrap(s, C.CKM_WRAPKEY_DES3_CBC, None, kek.handle, domain.handle)
    handle = symkeys.unwrap(s, C.CKM_WRAPKEY_DES3_CBC, None, kek.handle, wrapped)
    assert raw.attribute(s, handle, C.CKA_PRIME) == b(group["P"])
    assert raw.attribute(s, handle, C.CKA_PRIME_BITS) == struct.pack("L", 2048)


# -- bad keys, parameters and templates -----------------------------------------------
def test_wrong_key_type(s, aes_key, dsa_key):
    _, aes = aes_key
    with pytest.raises(pkcs11.KeyTypeInconsistent):
        aes.sign(b"data", mechanism=Mechanism.DSA_SHA1)
    dsa_key_obj = dsa_private(s, dsa_key)
    with pytest.raises(pkcs11.KeyTypeInconsistent):
        dsa_key_obj.sign(b"data", mechanism=Mechanism.AES_MAC)
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.derive(s, C.CKM_DH_PKCS_DERIVE, b"\2", dsa_key_obj.handle,
                   {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                    Attribute.VALUE_LEN: 16})
    # A domain parameter object for a key type that has none.
    with pytest.raises(pkcs11.TemplateInconsistent):
        s.create_object({Attribute.CLASS: ObjectClass.DOMAIN_PARAMETERS, Attribute.KEY_TYPE: KeyType.AES,
                         Attribute.TOKEN: False})


def test_bad_mac_length(aes_key):
    _, key = aes_key
    for length in (0, 17):
        with pytest.raises(pkcs11.MechanismParamInvalid):
            key.sign(b"data", mechanism=Mechanism.AES_MAC_GENERAL, mechanism_param=struct.pack("L", length))
    with pytest.raises(pkcs11.MechanismParamInvalid):  # CK_MAC_GENERAL_PARAMS missing
        key.sign(b"data", mechanism=Mechanism.AES_MAC_GENERAL)
    with pytest.raises(pkcs11.MechanismParamInvalid):  # CKM_AES_MAC takes none
        key.sign(b"data", mechanism=Mechanism.AES_MAC, mechanism_param=struct.pack("L", 8))


def test_missing_parameters(s, dsa_key):
    params = dsa_key.parameters().parameter_numbers()
    with pytest.raises(pkcs11.TemplateIncomplete):  # no CKA_SUBPRIME
        s.create_domain_parameters(KeyType.DSA, {Attribute.PRIME: b(params.p), Attribute.BASE: b(params.g)})
    with pytest.raises(pkcs11.TemplateIncomplete):
        s.create_domain_parameters(KeyType.DSA, {Attribute.PRIME: b(params.p), Attribute.BASE: b(params.g)},
                                   local=True).generate_keypair()
    with pytest.raises(pkcs11.TemplateIncomplete):
        s.create_domain_parameters(KeyType.DH, {Attribute.PRIME: b(params.p)}, local=True).generate_keypair()
    with pytest.raises(pkcs11.TemplateIncomplete):  # no CKA_PRIME_BITS
        s.generate_domain_parameters(KeyType.DSA, 1024, template={Attribute.PRIME_BITS: DEFAULT})
    with pytest.raises(pkcs11.KeySizeRange):
        s.generate_domain_parameters(KeyType.DSA, 1536)
    with pytest.raises(pkcs11.TemplateInconsistent):  # CKA_PRIME_BITS contradicts CKA_PRIME
        s.create_domain_parameters(KeyType.DSA, {Attribute.PRIME: b(params.p), Attribute.SUBPRIME: b(params.q),
                                                 Attribute.BASE: b(params.g), Attribute.PRIME_BITS: 1024})


def test_dh_derive_bad_input(s):
    group = _rfc5114_groups()[0].values[0]
    private = dh_private(s, group["P"], group["G"], group["XstatIUT"])
    with pytest.raises(pkcs11.MechanismParamInvalid):  # public value missing
        private.derive_key(KeyType.AES, 128, mechanism=Mechanism.DH_PKCS_DERIVE)
    with pytest.raises(pkcs11.MechanismParamInvalid):  # public value 1 is not in the group's range
        _derive(private, 1, KeyType.AES, 128)
    with pytest.raises(pkcs11.TemplateInconsistent):  # longer than Z
        _derive(private, group["YstatCAVS"], length=(129 + 1) * 8)


def test_dh_unwrap_leaves_the_warning_filters_alone(s, monkeypatch):
    """A DH private key unwraps without `cryptography` warning (its FFDH loader is not used) and
    without warnings.catch_warnings(), which swaps the process-wide filters that an interpreter
    shared with the host owns: the host's filters, even "error", stay as they are."""
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    entered = []

    class Recording(warnings.catch_warnings):
        def __enter__(self):
            entered.append(True)
            return super().__enter__()

    kek = s.generate_key(KeyType.AES, 256, template={Attribute.WRAP: True, Attribute.UNWRAP: True})
    group = _rfc5114_groups()[1].values[0]
    key = dh_private(s, group["P"], group["G"], group["XstatIUT"], {Attribute.EXTRACTABLE: True})
    wrapped = kek.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
    monkeypatch.setattr(warnings, "catch_warnings", Recording)
    with warnings.catch_warnings():  # the test's own: the host asks for warnings as errors
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        entered.clear()
        back = kek.unwrap_key(ObjectClass.PRIVATE_KEY, KeyType.DH, wrapped, mechanism=Mechanism.AES_KEY_WRAP_PAD,
                              template={**PUBLIC_ONLY, Attribute.DERIVE: True, Attribute.TOKEN: False})
        assert not entered, "the unwrap path entered warnings.catch_warnings()"
    assert public_key_info(s, back) == public_key_info(s, key)


def test_dh_derived_des_keys_have_odd_parity(s):
    """A DES key derived by DH is Z's trailing bytes with odd parity, as every derived DES key."""
    group = _rfc5114_groups()[0].values[0]
    size = (group["P"].bit_length() + 7) // 8
    z = group["Z"].to_bytes(size, "big")
    ours = dh_private(s, group["P"], group["G"], group["XstatIUT"])
    for key_type, length in ((KeyType.DES2, 16), (KeyType.DES3, 24)):
        handle = raw.derive(s, C.CKM_DH_PKCS_DERIVE, b(group["YstatCAVS"]), ours.handle,
                            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: key_type,
                             Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
        value = raw.attribute(s, handle, C.CKA_VALUE)
        assert len(value) == length and all(bin(x).count("1") % 2 for x in value)
        assert bytes(x & 0xFE for x in value) == bytes(x & 0xFE for x in z[-length:])
