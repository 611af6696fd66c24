"""Which of ptkhsm.gate's openings an operation asks for (shim/share.h, shim/gate.h): a
private-key operation of RSA waits long outside the GIL, ECDSA's is brief, EdDSA's keeps the
gate shut (docs/performance-profile.md: opening it cost find-then-sign), HMAC's never leaves
the GIL."""

import tempfile

import pytest

from ptkhsm import constants as C
from ptkhsm import gate
from ptkhsm.config import Config
from ptkhsm.cryptoki.client import Cryptoki
from ptkhsm.mechparams import Mechanism

P256 = bytes.fromhex("06082a8648ce3d030107")
ED25519 = bytes.fromhex("06032b6570")


@pytest.fixture
def api():
    datapath = tempfile.mkdtemp(prefix="ptkhsm-gate-")
    api = Cryptoki(Config({"ET_PTKC_SW_DATAPATH": datapath, "HOME": datapath,
                           "ET_PTKC_SW_PIN_KDF_ITERATIONS": "1000"})).api
    api.init_token(1, b"12345678", b"gate".ljust(32))
    return api


@pytest.fixture
def openings(monkeypatch):
    asked = []
    monkeypatch.setattr(gate, "let_others_in", lambda: asked.append("let_others_in"))
    monkeypatch.setattr(gate, "share_cores", lambda: asked.append("share_cores"))
    return asked


def _pair(api, s, mechanism, public, private):
    return api.generate_key_pair(s, Mechanism(mechanism), public, private)


@pytest.mark.parametrize("kind, sign_mechanism, want", [
    ("ec", C.CKM_ECDSA, ["share_cores"]),
    ("ed25519", C.CKM_EDDSA, []),
    ("rsa", C.CKM_SHA256_RSA_PKCS, ["let_others_in"]),
])
def test_a_private_key_operation_opens_the_gate_as_it_pays(api, openings, kind, sign_mechanism, want):
    s = api.open_session(1, C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION)
    private_template = [(C.CKA_SIGN, True), (C.CKA_PRIVATE, False)]
    if kind == "ec":
        public, private = _pair(api, s, C.CKM_EC_KEY_PAIR_GEN, [(C.CKA_EC_PARAMS, P256), (C.CKA_VERIFY, True)],
                                private_template)
    elif kind == "ed25519":
        public, private = _pair(api, s, C.CKM_EC_EDWARDS_KEY_PAIR_GEN,
                                [(C.CKA_EC_PARAMS, ED25519), (C.CKA_VERIFY, True)], private_template)
    else:
        public, private = _pair(api, s, C.CKM_RSA_PKCS_KEY_PAIR_GEN,
                                [(C.CKA_MODULUS_BITS, 2048), (C.CKA_VERIFY, True)], private_template)
    del openings[:]     # key-pair generation opens it too (RSA's)
    api.sign_init(s, Mechanism(sign_mechanism), private)
    signature = api.sign(s, bytes(32), 512)
    assert openings == want
    del openings[:]
    api.verify_init(s, Mechanism(sign_mechanism), public)
    api.verify(s, bytes(32), signature)
    assert openings == []   # public-key operations keep the gate shut


def test_a_secret_key_operation_keeps_the_gate_shut(api, openings):
    s = api.open_session(1, C.CKF_SERIAL_SESSION)
    key = api.generate_key(s, Mechanism(C.CKM_GENERIC_SECRET_KEY_GEN), [(C.CKA_VALUE_LEN, 32), (C.CKA_SIGN, True), (C.CKA_PRIVATE, False)])
    api.sign_init(s, Mechanism(C.CKM_SHA256_HMAC), key)
    api.sign(s, b"data", 32)
    assert openings == []
