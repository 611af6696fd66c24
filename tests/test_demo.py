"""`make demo`'s script end to end: pkcs11-tool makes keys and signatures, openssl verifies them."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_demo_signatures_verified_by_openssl():
    env = dict(os.environ, VENV=str(Path(sys.executable).parent.parent))
    env.pop("ET_PTKC_SW_DATAPATH", None)  # the demo makes its own
    result = subprocess.run([str(ROOT / "tools" / "demo.sh")], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("Verified OK") == 2
