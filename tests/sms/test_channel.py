"""The SMS channel alone (ptkhsm.sms.channel): handshake, records, tampering, rollover.

Byte-level attacks are made on the records themselves, as a tap on any
transport would see and change them.
"""

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ptkhsm import constants as C
from ptkhsm.errors import CKRError, ConfigError
from ptkhsm.sms import channel as S
from ptkhsm.sms import groups, policy

FIRMWARE_NEW, FIRMWARE_OLD = (5, 10, 0), (5, 0, 9)
IDENTITY = S.new_identity()


def _open(mode=S.ADH2, firmware=FIRMWARE_NEW, pinned=None, identity=IDENTITY, **client_args):
    client = S.ClientHandshake(mode, pinned=pinned, **client_args)
    server = S.ServerHandshake(identity, "PTK0000001", firmware, C.CKF_NO_CLEAR_PINS,
                               blocks=client_args.get("blocks", 1 << 32))
    accept = server.accept(client.hello())
    finished, hsm_side = server.confirm(client.finish(accept))
    return client.confirm(finished), hsm_side, client


def _rv(call, *args):
    with pytest.raises(CKRError) as info:
        call(*args)
    return info.value.rv


@pytest.mark.parametrize("mode,firmware", [(S.ADH2, FIRMWARE_NEW), (S.ADH, FIRMWARE_OLD)])
def test_round_trip_in_both_modes_and_every_protection(mode, firmware):
    client, hsm, shake = _open(mode, firmware)
    assert shake.hsm["serial"] == "PTK0000001" and shake.hsm["flags"] == C.CKF_NO_CLEAR_PINS
    for protection in (0, S.SIGNED, S.ENCRYPTED, S.ENCRYPTED | S.SIGNED):
        request = client.seal(b"C_Login 1234", protection)
        kind, got, payload = hsm.unseal(request)
        assert (kind, payload) == (S.DATA, b"C_Login 1234")
        assert got == (protection | S.SIGNED if protection & S.ENCRYPTED else protection)
        assert (b"1234" in request) == (not protection & S.ENCRYPTED)
        _, _, answer = client.unseal(hsm.seal(b"CKR_OK", protection))
        assert answer == b"CKR_OK"


def test_legacy_adh_does_not_warn():
    """cryptography deprecates FFDH and warns at each name taken from its dh module: a
    legacy ADH channel (made, used) must print nothing on the application's stderr, even
    under a host that turns that warning into an error."""
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    groups.modp2048.cache_clear()  # the group is made at first use: that use is in the test
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        client, hsm, _ = _open(S.ADH, FIRMWARE_OLD)
        assert hsm.unseal(client.seal(b"C_Login 1234", S.ENCRYPTED))[2] == b"C_Login 1234"


def test_keys_differ_per_channel_and_per_direction():
    a, _, _ = _open()
    b, _, _ = _open()
    keys = {a.channel.out.enc, a.channel.inc.enc, b.channel.out.enc, b.channel.inc.enc,
            a.channel.out.mac, a.channel.inc.mac}
    assert len(keys) == 6


@pytest.mark.parametrize("where", [0, 3, 10, 20, 25, -1, -33])
def test_any_altered_byte_is_refused_and_ends_the_channel(where):
    client, hsm, _ = _open()
    record = bytearray(client.seal(b"secret attribute value", S.ENCRYPTED))
    record[where] ^= 0x01
    assert _rv(hsm.unseal, bytes(record)) in (C.CKR_BAD_REQ_SIGNATURE, C.CKR_SMS_ERROR)
    assert _rv(hsm.unseal, client.seal(b"next", S.SIGNED)) == C.CKR_NO_SESSION_KEYS


def test_replayed_reordered_and_truncated_records_are_refused():
    client, hsm, _ = _open()
    first, second = client.seal(b"one", S.SIGNED), client.seal(b"two", S.SIGNED)
    assert _rv(hsm.unseal, second) == C.CKR_SMS_ERROR          # reordered
    client, hsm, _ = _open()
    first = client.seal(b"one", S.SIGNED)
    hsm.unseal(first)
    assert _rv(hsm.unseal, first) == C.CKR_SMS_ERROR           # replayed
    client, hsm, _ = _open()
    assert _rv(hsm.unseal, client.seal(b"one", S.SIGNED)[:-5]) == C.CKR_SMS_ERROR  # cut short


def test_a_reply_cannot_be_reflected_as_a_request():
    client, hsm, _ = _open()
    hsm.unseal(client.seal(b"request", S.SIGNED))
    reply = hsm.seal(b"reply", S.SIGNED)
    assert _rv(hsm.unseal, reply) == C.CKR_BAD_REQ_SIGNATURE


def test_removing_the_mac_is_refused_for_encrypted_records():
    client, hsm, _ = _open()
    record = bytearray(client.seal(b"pin", S.ENCRYPTED))
    record[2] = S.ENCRYPTED   # claim "encrypted, not signed"
    assert _rv(hsm.unseal, bytes(record)) == C.CKR_SMS_ERROR


def test_legacy_adh_is_refused_by_new_firmware():
    client = S.ClientHandshake(S.ADH)
    server = S.ServerHandshake(IDENTITY, "PTK0000001", FIRMWARE_NEW, 0)
    with pytest.raises(CKRError) as info:
        server.accept(client.hello())
    assert info.value.rv == C.CKR_CANNOT_DERIVE_KEYS and "5.01.00" in str(info.value)


def test_downgrade_to_adh_is_refused_by_the_client():
    """A man in the middle answers an ADH2 HELLO with an old HSM's ADH ACCEPT."""
    client = S.ClientHandshake(S.ADH2)
    legacy = S.ClientHandshake(S.ADH)
    old_hsm = S.ServerHandshake(IDENTITY, "PTK0000001", FIRMWARE_OLD, 0)
    assert _rv(client.finish, old_hsm.accept(legacy.hello())) == C.CKR_CANNOT_DERIVE_KEYS


def test_a_pinned_client_refuses_another_hsm_and_a_man_in_the_middle():
    pin = S.fingerprint(S.spki(IDENTITY))
    _open(pinned=pin)   # the real HSM passes
    # The attacker terminates the client's channel with a key of its own.
    impostor = S.new_identity()
    client = S.ClientHandshake(S.ADH2, pinned=pin)
    mitm = S.ServerHandshake(impostor, "PTK0000001", FIRMWARE_NEW, 0)
    with pytest.raises(CKRError) as info:
        client.finish(mitm.accept(client.hello()))
    assert info.value.rv == C.CKR_CANNOT_DERIVE_KEYS and "pinned" in str(info.value)
    # Or forwards the real HSM's ACCEPT with its own DH value spliced in: the signature breaks.
    client = S.ClientHandshake(S.ADH2, pinned=pin)
    real = S.ServerHandshake(IDENTITY, "PTK0000001", FIRMWARE_NEW, 0)
    accept = real.accept(client.hello())
    fields = S._parse_fields(S.unframe(accept)[5], 8)
    evil = ec.generate_private_key(groups.ADH2_CURVE())
    fields[2] = S.Suite(S.ADH2).public_bytes(evil)
    assert _rv(client.finish, S.frame(S.ACCEPT, S._fields(*fields))) == C.CKR_CANNOT_DERIVE_KEYS


def test_without_a_pin_an_anonymous_channel_is_what_ptkc_gives():
    """Documented, not a defect: an unpinned client accepts any identity (PTK-C's ADH)."""
    _open(identity=S.new_identity())


def test_rollover_after_the_block_limit_keeps_every_message_correct():
    client, hsm, _ = _open(blocks=10_000)
    payload = bytes(range(256)) * 64   # 16 KiB = 1,024 AES blocks per message
    for i in range(40):
        kind, _, got = hsm.unseal(client.seal(payload + bytes([i]), S.ENCRYPTED))
        assert got == payload + bytes([i])
        _, _, back = client.unseal(hsm.seal(got, S.ENCRYPTED))
        assert back == got
    counters = client.counters
    assert counters["rollovers"] >= 3 and counters["epoch"] == counters["rollovers"]
    assert hsm.channel.out.epoch == counters["epoch"]


def test_rollover_after_the_hour_limit_with_a_clock_the_test_moves():
    now = [1000.0]
    client, hsm, _ = _open(hours=4, clock=lambda: now[0])
    hsm.unseal(client.seal(b"a", S.SIGNED))
    now[0] += 4 * 3600 - 1
    hsm.unseal(client.seal(b"b", S.SIGNED))
    assert client.counters["rollovers"] == 0
    now[0] += 2
    old_key = client.channel.out.mac
    hsm.unseal(client.seal(b"c", S.SIGNED))
    assert client.counters["rollovers"] == 1 and client.channel.out.mac != old_key
    assert client.unseal(hsm.seal(b"d", S.SIGNED))[2] == b"d"


def test_the_hsm_ends_a_channel_whose_client_never_rolls_over():
    client, hsm, _ = _open(blocks=100)
    client.limit_blocks = 1 << 40   # a client that ignores the limit
    with pytest.raises(CKRError) as info:
        for _ in range(10):
            hsm.unseal(client.seal(b"x" * 1024, S.ENCRYPTED))
    assert info.value.rv == C.CKR_KEY_ROLLOVER


def test_either_side_may_end_the_channel():
    client, hsm, _ = _open()
    kind, _, _ = hsm.unseal(client.close())
    assert kind == S.CLOSE and not hsm.channel.open
    assert _rv(client.seal, b"late", S.SIGNED) == C.CKR_NO_SESSION_KEYS


def test_the_legacy_group_is_rfc_3526_group_14():
    p = groups.modp2048().parameter_numbers().p
    text = f"{p:X}"
    assert text.startswith("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1")
    assert text.endswith("15728E5A8AACAA68FFFFFFFFFFFFFFFF") and p.bit_length() == 2048
    for witness in (2, 3, 5, 7, 11, 13):   # Fermat on p and (p-1)/2: a safe prime
        assert pow(witness, p - 1, p) == 1
        q = (p - 1) // 2
        assert pow(witness, q - 1, q) == 1


# -- policy: the seed's table ----------------------------------------------------------------


@pytest.mark.parametrize("flags,sensitive,expected", [
    (0, True, (0, 0)),
    (C.CKF_NO_CLEAR_PINS, True, (S.ENCRYPTED, 0)),
    (C.CKF_NO_CLEAR_PINS, False, (0, 0)),
    (C.CKF_AUTH_PROTECTION, False, (S.SIGNED, 0)),
    (policy.AUTH_REPLIES, False, (0, S.SIGNED)),
    (C.CKF_FULL_SMS_ENC, False, (S.ENCRYPTED, S.ENCRYPTED)),
    (C.CKF_FULL_SMS_SIGN, False, (S.SIGNED, S.SIGNED)),
])
def test_each_flag_protects_what_the_seed_says(flags, sensitive, expected):
    assert policy.protection(flags, True, sensitive) == expected
    assert policy.protection(flags, False, sensitive) == (0, 0)   # no session handle: never


def test_smpr_letters_and_a_bad_one():
    assert policy.parse_smpr("ET_PTKC_X_SMPR", "sr") == C.CKF_AUTH_PROTECTION | policy.AUTH_REPLIES
    assert policy.parse_smpr("ET_PTKC_X_SMPR", "E") == C.CKF_NO_CLEAR_PINS
    with pytest.raises(ConfigError, match="ET_PTKC_X_SMPR.*'Q'"):
        policy.parse_smpr("ET_PTKC_X_SMPR", "EQ")


def test_the_hsm_refuses_requests_protected_less_than_its_flags():
    policy.check_request(C.CKF_AUTH_PROTECTION, True, False, S.SIGNED)
    policy.check_request(C.CKF_NO_CLEAR_PINS, True, False, 0)
    assert _rv(policy.check_request, C.CKF_NO_CLEAR_PINS, True, True, S.SIGNED) == C.CKR_BAD_PROTECTION
    assert _rv(policy.check_request, C.CKF_FULL_SMS_SIGN, True, False, 0) == C.CKR_BAD_PROTECTION


def test_adh2_encryption_is_one_aes256_ctr_keystream_per_direction_and_epoch():
    """docs/sms.md: AES-256-CTR from counter block 0, the keystream running on across the
    records in sequence order (no byte of it used twice); a new key and keystream per epoch."""
    import os
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from ptkhsm.sms import channel as chan
    d = chan._Direction(chan.Suite(chan.ADH2), os.urandom(64), b"t", b"request")
    first, second = os.urandom(1000), os.urandom(37)
    ctr = Cipher(algorithms.AES256(d.enc), modes.CTR(bytes(16))).encryptor()
    assert d.encrypt(first) + d.encrypt(second) == ctr.update(first + second)
    assert d.encrypt(first) != d.encrypt(first)       # the same plaintext never meets the same keystream
    key = d.enc
    d.rekey(1)
    ctr = Cipher(algorithms.AES256(d.enc), modes.CTR(bytes(16))).encryptor()
    assert d.enc != key and d.encrypt(first) == ctr.update(first)

