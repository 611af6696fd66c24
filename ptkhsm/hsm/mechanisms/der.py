"""The DER the mechanisms read and write with asn1crypto, imported at first use.

Importing asn1crypto took 20 of a cold C_Initialize's 144 ms (median of 9 starts;
its util module brings socket, decimal and datetime along), and most processes that load
the module never make an EC or DH key nor wrap a private key: so no module imports
it at load time, and `asn1()` gives it, with this package's own specifications,
the first time one is needed.
"""

import functools
import types


@functools.cache
def asn1():
    """-> namespace of asn1crypto's core, algos and keys, and the specifications below."""
    from asn1crypto import algos, core, keys

    class Algorithm(core.Sequence):
        _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]

    class PrivateKeyInfo(core.Sequence):
        """RFC 5208 PrivateKeyInfo of any algorithm (asn1crypto's own knows no DH)."""
        _fields = [("version", core.Integer), ("algorithm", Algorithm), ("private_key", core.OctetString),
                   ("attributes", core.Any, {"implicit": 0, "optional": True})]

    class DhAlgorithm(core.Sequence):
        """AlgorithmIdentifier of PKCS #3 dhKeyAgreement with its DHParameter (asn1crypto's
        "dh" algorithm is X9.42's dhpublicnumber, which CKK_DH keys are not)."""
        _fields = [("algorithm", core.ObjectIdentifier), ("parameters", algos.DHParameters)]

    class DhPublicKeyInfo(core.Sequence):
        _fields = [("algorithm", DhAlgorithm), ("public_key", core.OctetBitString)]

    return types.SimpleNamespace(core=core, algos=algos, keys=keys, PrivateKeyInfo=PrivateKeyInfo,
                                 DhPublicKeyInfo=DhPublicKeyInfo)
