"""ExtToken, the external key store of slot 0 (docs/exttoken.md): a layer on the
client interface, stacked by `stack` when ET_PTKC_EXTTOKEN_ENABLE is on."""

from .layer import ExtToken


def stack(library):
    """Put the ExtToken layer on top of a client library (`Cryptoki`) -> the library."""
    if library.config.get("ET_PTKC_EXTTOKEN_ENABLE"):
        library.api = ExtToken(library.api, library.config)
    return library
