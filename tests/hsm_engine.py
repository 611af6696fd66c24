"""The HSM engine driven by plain Python calls in tests (no .so): a configuration with
cheap PIN hashing, an initialised token, and the small steps tests repeat."""

import pytest

from ptkhsm import constants as C
from ptkhsm.config import Config
from ptkhsm.errors import CKRError
from ptkhsm.hsm.core import HSM

SO, USER = b"12345678", b"1234"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION
RO = C.CKF_SERIAL_SESSION


def hsm_config(path, **items):
    env = {"ET_PTKC_SW_DATAPATH": str(path), "HOME": str(path), "ET_PTKC_SW_PIN_KDF_ITERATIONS": "1000"}
    env.update({k: str(v) for k, v in items.items()})
    return Config(env)


def make_hsm(path, **items):
    return HSM(hsm_config(path, **items)).application()


def rv_of(call, *args):
    with pytest.raises(CKRError) as info:
        call(*args)
    return info.value.rv


def ready_hsm(path, label=b"engine", **items):
    """An HSM whose slot-0 token is initialised, with the user PIN set."""
    hsm = make_hsm(path, **items)
    hsm.init_token(0, SO, label.ljust(32))
    s = hsm.open_session(0, RW)
    hsm.login(s, C.CKU_SO, SO)
    hsm.init_pin(s, USER)
    hsm.close_session(s)
    return hsm


@pytest.fixture
def hsm(tmp_path):
    return ready_hsm(tmp_path)


def user_session(hsm, flags=RW):
    s = hsm.open_session(0, flags)
    hsm.login(s, C.CKU_USER, USER)
    return s


def aes_key(hsm, s, token=True, private=True, extra=None):
    template = dict([(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_AES), (C.CKA_TOKEN, token),
                     (C.CKA_PRIVATE, private), (C.CKA_VALUE, bytes(range(32))), (C.CKA_LABEL, b"k")])
    template.update(extra or {})
    template = list(template.items())
    return hsm.create_object(s, template)


def find(hsm, s, template=()):
    hsm.find_init(s, list(template))
    found = hsm.find(s, 1000)
    hsm.find_final(s)
    return found
