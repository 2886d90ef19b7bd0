"""Build of the `parallel-saver` wheel: the Python package plus libpsv built by cargo.

setuptools-rust builds the library as a plain cdylib (Binding.NoBinding: no Python extension
module, the package loads it with ctypes) and copies it to parallel_saver/libpsv.so, stripped
of debug info. Everything else is declared in pyproject.toml.

Three adjustments, each because the library is not a CPython extension module:
- the file keeps its plain name `libpsv.so` (not `libpsv.cpython-311-x86_64-linux-gnu.so`):
  the package looks it up by that name, and any Python 3 loads it;
- the wheel is tagged `py3-none-<platform>` (any Python 3 on this platform) instead of
  `cp3XX-cp3XX-<platform>`;
- cargo is asked for the crate types of Cargo.toml's [lib] (cdylib, staticlib, rlib) rather
  than setuptools-rust's default `--crate-type cdylib`, so the build is the very one
  `cargo build --release` (`make lib`) makes: in a checkout that already built it, nothing
  is compiled again, and `cargo build --release` afterwards recompiles nothing either.
"""

import os
import re
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools_rust import Binding, RustExtension, Strip

try:
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # setuptools < 70.1 keeps it in the wheel package
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel

HERE = Path(__file__).resolve().parent
LIB_MODULE = "parallel_saver.libpsv"
LIB_FILE = {"darwin": "libpsv.dylib", "win32": "psv.dll"}.get(sys.platform, "libpsv.so")


def cargo_version() -> str:
    """The version in the [package] table of Cargo.toml (one version for crate and wheel)."""
    package = False
    for line in (HERE / "Cargo.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            package = line.strip() == "[package]"
        elif package:
            m = re.match(r'\s*version\s*=\s*"([^"]+)"', line)
            if m:
                return m.group(1)
    raise RuntimeError("no version in the [package] table of Cargo.toml")


class build_ext(_build_ext):
    """Names the bundled library by its plain file name."""

    def get_ext_filename(self, fullname: str) -> str:
        if fullname in (LIB_MODULE, LIB_MODULE.rsplit(".", 1)[-1]):
            return os.path.join(*fullname.split(".")[:-1], LIB_FILE)
        return super().get_ext_filename(fullname)


class bdist_wheel(_bdist_wheel):
    """Tags the wheel for any Python 3 on this platform: the library has no Python ABI."""

    def get_tag(self):
        _python, _abi, plat = super().get_tag()
        return "py3", "none", plat


setup(
    version=cargo_version(),
    rust_extensions=[
        RustExtension(
            LIB_MODULE,
            path="Cargo.toml",
            binding=Binding.NoBinding,
            args=["--crate-type", "cdylib,staticlib,rlib"],
            strip=Strip.Debug,
            py_limited_api=False,
        )
    ],
    cmdclass={"build_ext": build_ext, "bdist_wheel": bdist_wheel},
    # setuptools' scratch space, apart from the build/ files of the Makefile.
    options={"build": {"build_base": "build/python"}},
    zip_safe=False,
)
