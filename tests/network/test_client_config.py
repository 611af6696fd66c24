"""The client's configuration items: the server list's forms, the modes, clear errors."""

import pytest

from ptkhsm.config import Config
from ptkhsm.errors import ConfigError


def get(name, text):
    return Config({name: text, "HOME": "/nonexistent"}).get(name)


def test_server_list_forms():
    servers = get("ET_HSM_NETCLIENT_SERVERLIST", "hsm1 hsm2:1234 [::1]:99 ::1 /run/p.sock unix:/tmp/q.sock")
    assert servers == (("tcp", "hsm1", 12396), ("tcp", "hsm2", 1234), ("tcp", "::1", 99), ("tcp", "::1", 12396),
                       ("unix", "/run/p.sock"), ("unix", "/tmp/q.sock"))
    assert [str(s) for s in servers[:2]] == ["hsm1:12396", "hsm2:1234"]
    assert get("ET_HSM_NETCLIENT_SERVERLIST", "  ") == ()


@pytest.mark.parametrize("name, text", [("ET_HSM_NETCLIENT_SERVERLIST", "host:http"),
                                        ("ET_HSM_NETCLIENT_SERVERLIST", "host:70000"),
                                        ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
                                        ("ET_PTKC_GENERAL_LIBRARY_MODE", "fast"),
                                        ("ET_PTKC_HA_RECOVER_DELAY", "soon"),
                                        ("ET_HSM_NETSERVER_SOCKET_MODE", "rw")])
def test_bad_values_name_their_item(name, text):
    with pytest.raises(ConfigError, match=name):
        get(name, text)


def test_modes_and_octal_socket_mode():
    assert get("ET_PTKC_GENERAL_LIBRARY_MODE", "ha") == "HA"
    assert get("ET_PTKC_HA_RECOVER_DELAY", "0.5") == 0.5
    assert get("ET_HSM_NETSERVER_SOCKET_MODE", "660") == get("ET_HSM_NETSERVER_SOCKET_MODE", "0o660") == 0o660


@pytest.mark.parametrize("servers", ["", "127.0.0.1:1"], ids=["embedded", "server-list"])
def test_wld_mode_is_refused_at_c_initialize(tmp_path, servers):
    """WLD (Work Load Distribution) is not built: C_Initialize fails with CKR_GENERAL_ERROR and
    a log line naming the item, whether or not servers are listed; never another mode silently."""
    import os
    import subprocess
    import sys

    from conftest import MODULE
    env = dict(os.environ, ET_PTKC_GENERAL_LIBRARY_MODE="WLD", ET_HSM_NETCLIENT_SERVERLIST=servers,
               ET_PTKC_SW_DATAPATH=str(tmp_path))
    program = ("import sys, pkcs11\n"
               "try:\n    pkcs11.lib(sys.argv[1])\nexcept pkcs11.exceptions.GeneralError:\n    print('refused')\n")
    run = subprocess.run([sys.executable, "-c", program, MODULE], env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.stdout.strip() == "refused", run.stdout + run.stderr
    assert "ET_PTKC_GENERAL_LIBRARY_MODE='WLD'" in run.stderr and "WLD is not supported" in run.stderr
    assert not list(tmp_path.iterdir())  # nothing was opened or made
