"""HA mode through the proxy itself: what a replay recovers and what it cannot."""

import signal

import pytest

from ptkhsm import constants as C
from ptkhsm.config import Config
from ptkhsm.cryptoki.netclient import CKR_HA_NO_HSM, CKR_HA_OBJECT_LOST, NetClient
from ptkhsm.errors import CKRError
from ptkhsm.mechparams import Mechanism

from netserver import Server

SO, USER = b"12345678", b"1234"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION


def client(*servers, **items):
    env = {"ET_HSM_NETCLIENT_SERVERLIST": " ".join(s.address for s in servers), "HOME": "/nonexistent",
           "ET_PTKC_GENERAL_LIBRARY_MODE": "HA", "ET_PTKC_HA_RECOVER_DELAY": "0", **items}
    config = Config(env)
    return NetClient(config, config.get("ET_HSM_NETCLIENT_SERVERLIST"))


@pytest.fixture
def servers(tmp_path):
    """Two servers of one data directory (TCP, unix socket), slot 0 initialised through an HA
    client: -> (first, second, api, session). Both are killed at the end."""
    data = tmp_path / "data"
    first, second = Server(data, "tcp"), Server(data, "unix")
    try:
        api = client(first, second)
        api.init_token(0, SO, b"ha".ljust(32))
        yield first, second, api, api.open_session(0, RW)
    finally:
        first.stop(signal.SIGKILL)
        second.stop(signal.SIGKILL)


def test_replay_recovers_made_objects_and_loses_random_keys(servers):
    first, second, api, s = servers
    api.login(s, C.CKU_SO, SO)
    api.init_pin(s, USER)
    api.logout(s)
    api.login(s, C.CKU_USER, USER)
    made = api.create_object(s, [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_AES),
                                 (C.CKA_VALUE, bytes(16)), (C.CKA_ENCRYPT, True)])
    copied = api.copy_object(s, made, [(C.CKA_LABEL, b"copy")])
    random_key = api.generate_key(s, Mechanism(C.CKM_AES_KEY_GEN), [(C.CKA_VALUE_LEN, 16)])
    expected = api.get_attributes(s, copied, [C.CKA_KEY_TYPE, C.CKA_LABEL])
    first.stop(signal.SIGKILL)
    assert api.get_attributes(s, copied, [C.CKA_KEY_TYPE, C.CKA_LABEL]) == expected  # replayed, same handle
    assert api.session_info(s)[1] == C.CKS_RW_USER_FUNCTIONS                     # login replayed
    with pytest.raises(CKRError) as info:
        api.encrypt_init(s, Mechanism(C.CKM_AES_ECB), random_key)
    assert info.value.rv == CKR_HA_OBJECT_LOST
    api.encrypt_init(s, Mechanism(C.CKM_AES_ECB), copied)
    # AES-128 of a zero block under the zero key (FIPS-197 style known answer)
    assert api.encrypt(s, bytes(16), 16) == bytes.fromhex("66e94bd4ef8a2c3b884cfa59ca342b2e")
    second.stop(signal.SIGKILL)
    with pytest.raises(CKRError) as info:   # RECOVER_DELAY 0: the first is never tried again
        api.session_info(s)
    assert info.value.rv == CKR_HA_NO_HSM


def test_find_all_answers_as_a_find_does_in_handles_of_ours_across_a_fail_over(servers):
    first, _, api, s = servers
    template = [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_LABEL, b"found")]
    made = [api.create_object(s, template + [(C.CKA_VALUE, bytes([i]))]) for i in range(3)]
    api.create_object(s, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_LABEL, b"other")])
    api.find_init(s, template)
    assert api.find_all(s, template) == made          # the active find is left as it was
    assert api.find(s, 10) == made
    api.find_final(s)
    first.stop(signal.SIGKILL)
    assert api.find_all(s, template) == made          # replayed objects, the same handles
    with pytest.raises(CKRError) as info:
        api.find_all(s + 1000, template)
    assert info.value.rv == C.CKR_SESSION_HANDLE_INVALID
