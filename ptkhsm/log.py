"""The `ptkhsm` logger. All cffi-made libraries in a process share one
interpreter, so we configure only our own logger, never the root one.

PTKHSM_LOG_LEVEL (DEBUG, INFO, WARNING...) sets the level; failures of the
module itself (CKR_GENERAL_ERROR, init failures) are logged at ERROR and
shown on stderr by default. Messages never carry PINs or key material.
"""

import logging
import os
import sys

logger = logging.getLogger("ptkhsm")

if not logger.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("ptkhsm[%(process)d] %(levelname)s: %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(os.environ.get("PTKHSM_LOG_LEVEL", "ERROR").upper())
    logger.propagate = False
