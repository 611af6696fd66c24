"""python-pkcs11 0.10.1's own test suite (from its source distribution) against the module.

`make install` fetches the sdist into .cache/; the suite runs in a subprocess
with its own data directory. Done when: 0 failed, at least 140 passed
(SoftHSMv2 2.6.1 passes 145 with 18 skipped on this machine).
"""

import re
import subprocess
import sys

from conftest import MODULE, ROOT, SO_PIN, USER_PIN, fresh_env, init_token

SUITE = ROOT / ".cache" / "python-pkcs11-0.10.1-tests"


def test_upstream_suite():
    assert (SUITE / "tests").is_dir(), f"{SUITE} missing: run `make install` (it downloads the sdist)"
    env = fresh_env(PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="upstream", PKCS11_TOKEN_PIN=USER_PIN,
                    PKCS11_TOKEN_SO_PIN=SO_PIN)
    init_token(env, label="upstream")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=SUITE, env=env, capture_output=True, text=True, timeout=1200)
    summary = result.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
    print(summary)
    assert counts.get("failed", 0) == 0 and counts.get("errors", counts.get("error", 0)) == 0, result.stdout[-5000:]
    assert counts.get("passed", 0) >= 140, summary
