"""The `ptkhsm` logger. All cffi-made libraries in a process share one
interpreter, so we configure only our own logger, never the root one.

PTKHSM_LOG_LEVEL (DEBUG, INFO, WARNING...) sets the level of stderr; failures
of the module itself (CKR_GENERAL_ERROR, init failures) are logged at ERROR
and shown on stderr by default. PTKHSM_LOG_FILE names a file that every
process using the module appends its log to as well (created 0600), at
PTKHSM_LOG_FILE_LEVEL (default DEBUG), whatever stderr's level. Messages never
carry PINs or key material.
"""

import logging
import os
import sys

logger = logging.getLogger("ptkhsm")


def set_stderr_level(level):
    """stderr's level; the logger passes the lower of it and the file's level."""
    _stderr.setLevel(level)
    logger.setLevel(min(h.level for h in logger.handlers))


def _file_handler(path):
    # O_APPEND: lines of several processes sharing the file do not overwrite each other
    stream = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a")
    handler = logging.StreamHandler(stream)
    handler.setLevel(os.environ.get("PTKHSM_LOG_FILE_LEVEL", "DEBUG").upper())
    return handler


if not logger.handlers:
    _format = logging.Formatter("ptkhsm[%(process)d] %(levelname)s: %(message)s")
    _stderr = logging.StreamHandler(sys.stderr)
    logger.addHandler(_stderr)
    if os.environ.get("PTKHSM_LOG_FILE"):
        logger.addHandler(_file_handler(os.environ["PTKHSM_LOG_FILE"]))
    for _handler in logger.handlers:
        _handler.setFormatter(_format)
    logger.propagate = False
    set_stderr_level(os.environ.get("PTKHSM_LOG_LEVEL", "ERROR").upper())
else:
    _stderr = logger.handlers[0]
