"""Where the libptkhsm.so under test is: shared by tests/ and conformance/.

PTKHSM_MODULE selects the library (development: the one `make inplace` builds
in the source tree); otherwise the installed one, as `ptkhsm module` of this
interpreter's environment prints it.
"""

import os
import subprocess
import sys
from pathlib import Path


def module_path():
    path = os.environ.get("PTKHSM_MODULE")
    if not path:
        ptkhsm = Path(sys.executable).parent / "ptkhsm"
        path = subprocess.run([str(ptkhsm), "module"], check=True, capture_output=True, text=True).stdout.strip()
    return path
