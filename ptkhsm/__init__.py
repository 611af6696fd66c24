"""ptkhsm: a PKCS#11 provider with an HSM written in Python."""

__version__ = "0.1.0"
