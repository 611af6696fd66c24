"""Build ctperf-driver, the C program `ptkhsm ctperf` runs, with the system C compiler.

The driver (ctperf/driver.c) is plain C99 + pthreads + dlopen and includes the
OASIS headers in shim/include; it links nothing of Python, so it measures any
PKCS#11 module the same way.

build(target_dir) -> path of the built program (target_dir/ctperf-driver).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "ctperf" / "driver.c"
NAME = "ctperf-driver"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-pthread"]


def compiler():
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RuntimeError("ctperf-driver needs a C compiler (gcc): none found on PATH")
    return cc


def build(target_dir, source=SOURCE):
    """Compile the driver into target_dir; written under a temporary name, then renamed,
    so a concurrent user never sees a half-written program."""
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / NAME
    partial = target_dir / f".{NAME}.{os.getpid()}"
    command = [compiler(), *CFLAGS, "-I", str(HERE / "include"), str(source), "-o", str(partial), "-ldl"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"building {NAME} failed:\n{' '.join(command)}\n{result.stderr}")
    os.replace(partial, target)
    return target


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else HERE.parent / "ptkhsm"))
