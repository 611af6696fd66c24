"""The HSM's long-term SMS identity key (ECDSA P-521), beyond PTK-C (docs/sms.md).

It signs every SMS handshake, so a client that pins its fingerprint
(`ET_PTKC_<serial>_SMS_IDENTITY`) recognises this HSM. Kept in the data
directory as `sms-identity.key` (PKCS#8 DER, mode 0600, written atomically like
the storage key: two processes starting together end up with one key), made on
first use; servers of one HSM group must share the file to show one identity.
"""

import os

from cryptography.hazmat.primitives import serialization

from ..sms import channel
from .store import files

FILE = "sms-identity.key"


def load(datapath):
    files.private_dir(datapath)
    path = os.path.join(datapath, FILE)
    der = files.read_key(path)
    if der is None:
        der = files.create_key(path, channel.new_identity().private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return serialization.load_der_private_key(der, None)
