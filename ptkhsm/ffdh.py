"""`cryptography`'s finite-field Diffie-Hellman, fetched once, for PKCS #3 DH
(ptkhsm/hsm/mechanisms/dh.py) and Secure Messaging's legacy ADH mode (ptkhsm/sms).

`cryptography` 50 deprecates FFDH: every name taken from its dh module warns.
CKM_DH_PKCS_* and PTK-C's legacy ADH are FFDH by definition, and a warning on an
application's stderr, from a library it loaded, at its first DH call helps nobody.
So the names are taken here once, at import, with that one warning silenced (never
at a call: warnings.catch_warnings swaps the filters of the whole interpreter, which
a Python host shares). The day `cryptography` removes FFDH, this import fails and
says so; the pin in pyproject.toml keeps that day a decision.
"""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    from cryptography.hazmat.primitives.asymmetric.dh import (  # noqa: F401 (the names this module gives)
        DHParameterNumbers, DHPrivateNumbers, DHPublicNumbers, generate_parameters)
