"""The client library: configuration and the transport to the HSM.

`api` is the object the upper layers call PKCS#11 functions on: with the
in-process transport (the default) an application of the embedded HSM,
called directly; with `ET_HSM_NETCLIENT_SERVERLIST` set, a proxy with the
same methods that forwards every call to `ptkhsm serve`.
"""

from ..config import Config


class Cryptoki:
    def __init__(self, config=None):
        self.config = (config or Config()).validate()
        servers = self.config.get("ET_HSM_NETCLIENT_SERVERLIST")
        if servers:
            from .netclient import connect
            self.api = connect(self.config, servers)
        else:
            from ..hsm.core import HSM
            hsm = HSM(self.config)
            from ..transport.smslink import ClientSettings
            sms = ClientSettings(self.config)
            if sms.needed(hsm.serial, hsm.security_mode):
                # SMS flags or SMPR: the calls cross as sealed frames (ptkhsm/transport/local.py)
                from ..transport.local import LocalApi, LocalChannel
                self.api = LocalApi(LocalChannel(hsm, sms))
            else:
                self.api = hsm.application()  # the fast path: direct calls

    def finalize(self):
        self.api.finalize()
