"""Builds libptkhsm.so (shim/build_shim.py) into the package next to its Python code."""

import re
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithShim(build_py):
    def run(self):
        super().run()
        sys.path.insert(0, str(ROOT / "shim"))
        from build_ctperf import build as build_ctperf
        from build_shim import build

        version = re.search(r'__version__ = "([^"]+)"', (ROOT / "ptkhsm" / "__init__.py").read_text()).group(1)
        tmp = Path(self.build_lib).parent / "shim-tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        build(Path(self.build_lib).resolve() / "ptkhsm", version, tmp)
        build_ctperf(Path(self.build_lib).resolve() / "ptkhsm")


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildPyWithShim}, distclass=BinaryDistribution)
