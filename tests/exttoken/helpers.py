"""An in-process client stack (HSM + ExtToken layer) on a data directory of its own."""

import os
import tempfile

from ptkhsm import constants as C
from ptkhsm.config import Config
from ptkhsm.cryptoki.client import Cryptoki
from ptkhsm.exttoken import stack
from ptkhsm.mechparams import Mechanism

SO_PIN, USER_PIN = b"12345678", b"1234"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION


def environ(datapath, **extra):
    env = {"ET_PTKC_SW_DATAPATH": datapath, "ET_PTKC_SW_PIN_KDF_ITERATIONS": "1000",
           "HOME": datapath, **extra}
    return env


def library(datapath, **extra):
    return stack(Cryptoki(Config(environ(datapath, **extra))))


def fresh(**extra):
    """A new data directory with slot 0 initialised -> (datapath, library)."""
    datapath = tempfile.mkdtemp(prefix="ptkhsm-ext-")
    lib = library(datapath, **extra)
    api = lib.api
    api.init_token(0, SO_PIN, b"ext".ljust(32))
    s = api.open_session(0, RW)
    api.login(s, C.CKU_SO, SO_PIN)
    api.init_pin(s, USER_PIN)
    api.close_session(s)
    return datapath, lib


def user_session(api, slot=0):
    s = api.open_session(slot, RW)
    api.login(s, C.CKU_USER, USER_PIN)
    return s


def find(api, s, template):
    api.find_init(s, list(template))
    out = api.find(s, 1_000_000)
    api.find_final(s)
    return out


def data_object(api, s, label, value=b"v", token=True, private=False):
    return api.create_object(s, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, token), (C.CKA_PRIVATE, private),
                                 (C.CKA_LABEL, label), (C.CKA_VALUE, value)])


def aes_key(api, s, label, value=None, token=True, **attrs):
    template = [(C.CKA_TOKEN, token), (C.CKA_LABEL, label)] + [(getattr(C, "CKA_" + k), v) for k, v in attrs.items()]
    if value is None:
        return api.generate_key(s, Mechanism(C.CKM_AES_KEY_GEN), template + [(C.CKA_VALUE_LEN, 32)])
    return api.create_object(s, template + [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_AES),
                                            (C.CKA_VALUE, value)])


def files(datapath):
    directory = os.path.join(datapath, "exttoken")
    return {name: os.path.join(directory, name) for name in os.listdir(directory)}
