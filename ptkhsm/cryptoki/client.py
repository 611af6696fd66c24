"""The client library: configuration and the transport to the HSM.

`api` is the object the upper layers call PKCS#11 functions on. With the
in-process transport (the default) it is the HSM itself; a network or
secure-messaging transport will put a proxy with the same methods here.
"""

from ..config import Config
from ..hsm.core import HSM


class Cryptoki:
    def __init__(self, config=None):
        self.config = (config or Config()).validate()
        self.api = HSM(self.config)

    def finalize(self):
        self.api.close_everything()
