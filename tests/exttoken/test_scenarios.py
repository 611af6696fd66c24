"""The same object scenarios on slot 0 (the external token) and slot 1 (an ordinary token),
through the real .so: python-pkcs11 in this process, pkcs11-tool in its own processes.
Results must be identical; slot 0's objects are read back by later processes (a restart)."""

import re
import shutil
import subprocess

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from conftest import MODULE, TOKEN_LABEL, USER_PIN, init_token

SLOT1_LABEL = "exttoken-compare"


@pytest.fixture(scope="module")
def tokens(lib):
    init_token(slot=1, label=SLOT1_LABEL)
    return lib.get_token(token_label=TOKEN_LABEL), lib.get_token(token_label=SLOT1_LABEL)


def _outcome(call):
    try:
        return ("ok", call())
    except pkcs11.PKCS11Error as exc:
        return ("error", type(exc).__name__)


def scenario(session):
    """Objects made, used, found, changed, copied and destroyed -> what an application sees."""
    out = []
    readable = {Attribute.EXTRACTABLE: True}
    aes = session.generate_key(KeyType.AES, 256, store=True, label="sc-aes", id=b"\x01", template=readable)
    out.append(("aes", aes[Attribute.TOKEN], aes[Attribute.LABEL], aes[Attribute.ID], aes[Attribute.VALUE_LEN],
                aes[Attribute.SENSITIVE], aes[Attribute.LOCAL]))
    iv = bytes(16)
    out.append(("aes-roundtrip", aes.decrypt(aes.encrypt(b"x" * 32, mechanism_param=iv), mechanism_param=iv)))
    domain = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
    public, private = domain.generate_keypair(store=True, label="sc-ec", id=b"\x02",
                                              private_template=readable)
    signature = private.sign(b"message", mechanism=Mechanism.ECDSA_SHA256)
    out.append(("ec", public.verify(b"message", signature, mechanism=Mechanism.ECDSA_SHA256),
                private[Attribute.TOKEN], public[Attribute.EC_PARAMS]))
    data = session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True,
                                  Attribute.LABEL: "sc-data", Attribute.VALUE: b"hello",
                                  Attribute.APPLICATION: "sc"})
    out.append(("data", data[Attribute.VALUE], data[Attribute.PRIVATE]))
    out.append(("find-label", len(list(session.get_objects({Attribute.LABEL: "sc-aes"})))))
    out.append(("find-class", sorted(o[Attribute.LABEL] for o in session.get_objects(
        {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: True}))))
    out.append(("find-keytype", sorted(str(o.object_class) for o in session.get_objects(
        {Attribute.KEY_TYPE: KeyType.EC}))))
    out.append(("find-slow", sorted(o[Attribute.LABEL] for o in session.get_objects(
        {Attribute.SIGN: True, Attribute.TOKEN: True}))))
    out.append(("find-session", len(list(session.get_objects({Attribute.TOKEN: False, Attribute.LABEL: "sc-aes"})))))
    aes[Attribute.LABEL] = "sc-aes2"
    out.append(("relabel", len(list(session.get_objects({Attribute.LABEL: "sc-aes"}))),
                len(list(session.get_objects({Attribute.LABEL: "sc-aes2"})))))
    out.append(("token-false", _outcome(lambda: aes.__setitem__(Attribute.TOKEN, False))))
    copy = aes.copy({Attribute.LABEL: "sc-copy"})
    out.append(("copy", copy[Attribute.TOKEN], copy[Attribute.LABEL]))
    kek = session.generate_key(KeyType.AES, 256, store=True, label="sc-kek", template=readable,
                               capabilities=pkcs11.MechanismFlag.WRAP | pkcs11.MechanismFlag.UNWRAP)
    wrapped = kek.wrap_key(aes, mechanism=Mechanism.AES_KEY_WRAP_PAD)
    unwrapped = kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, wrapped, store=True, label="sc-unwrapped",
                               mechanism=Mechanism.AES_KEY_WRAP_PAD, template=readable)
    out.append(("unwrap", unwrapped[Attribute.TOKEN], unwrapped.decrypt(aes.encrypt(b"y" * 16, mechanism_param=iv),
                                                                        mechanism_param=iv)))
    session_key = session.generate_key(KeyType.AES, 128, store=False, label="sc-session")
    out.append(("session-object", session_key[Attribute.TOKEN]))
    for obj in (aes, public, private, data, copy, kek, unwrapped, session_key):
        obj.destroy()
    out.append(("destroyed", len(list(session.get_objects({Attribute.TOKEN: True})))))
    out.append(("handle-gone", _outcome(lambda: aes[Attribute.LABEL])))
    return out


def test_python_pkcs11_same_results_on_slot_0_and_slot_1(tokens):
    results = []
    for token in tokens:
        with token.open(rw=True, user_pin=USER_PIN) as session:
            for obj in session.get_objects({Attribute.TOKEN: True}):   # what other modules left
                obj.destroy()
            results.append(scenario(session))
    assert results[0] == results[1]
    assert ("destroyed", 0) in results[0]


def _tool(slot, *args, data=None):
    result = subprocess.run(["pkcs11-tool", "--module", MODULE, "--slot", str(slot), "--login", "--pin", USER_PIN,
                             *args], capture_output=True, timeout=120, input=data)
    text = (result.stdout + result.stderr).decode(errors="replace")
    # What differs by design between two tokens: keys, slot numbers, random values.
    text = re.sub(r"(EC_POINT|VALUE):\s+[0-9a-f]+", r"\1: <random>", text)
    text = re.sub(r"Unique ID:\s+[0-9a-f]+", "Unique ID: <random>", text)  # CKA_UNIQUE_ID, per object
    text = re.sub(r"slot \d+|Slot \d+|0x[0-9a-f]+\)", "<slot>", text)
    text = re.sub(r"Data object \d+", "Data object <handle>", text)
    text = re.sub(r"(uri:\s+pkcs11:\S*)token=[^;\s]*", r"\1token=<label>", text)  # OpenSC 0.26 prints URIs
    return result.returncode, text


@pytest.mark.skipif(not shutil.which("pkcs11-tool"), reason="needs pkcs11-tool")
def test_pkcs11_tool_same_results_on_slot_0_and_slot_1(tokens, tmp_path):
    message = tmp_path / "message"
    message.write_bytes(b"sign me")
    value = tmp_path / "value"
    value.write_bytes(b"data object value")
    runs = []
    for slot in (0, 1):
        steps = [
            ("--keypairgen", "--key-type", "EC:prime256v1", "--label", "pt-ec", "--id", "0a", "--extractable"),
            ("--keygen", "--key-type", "AES:32", "--label", "pt-aes", "--id", "0b", "--extractable"),
            ("--write-object", str(value), "--type", "data", "--label", "pt-data"),
            ("--list-objects",),
            ("--sign", "--mechanism", "ECDSA-SHA256", "--id", "0a", "--input-file", str(message),
             "--output-file", str(tmp_path / f"sig{slot}")),
            ("--verify", "--mechanism", "ECDSA-SHA256", "--id", "0a", "--input-file", str(message),
             "--signature-file", str(tmp_path / f"sig{slot}")),
            ("--read-object", "--type", "data", "--label", "pt-data"),
            ("--delete-object", "--type", "privkey", "--id", "0a"),
            ("--delete-object", "--type", "pubkey", "--id", "0a"),
            ("--delete-object", "--type", "secrkey", "--id", "0b"),
            ("--delete-object", "--type", "data", "--label", "pt-data"),
            ("--list-objects",),
        ]
        runs.append([_tool(slot, *step) for step in steps])   # each step its own process: a restart
    for step0, step1 in zip(*runs):
        assert step0 == step1
    assert all(code == 0 for code, _ in runs[0]), runs[0]
    assert "pt-ec" in runs[0][3][1] and "pt-aes" in runs[0][3][1] and "data object value" in runs[0][6][1]
    assert "pt-" not in runs[0][-1][1]
