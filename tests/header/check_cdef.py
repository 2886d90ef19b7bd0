"""check_cdef.py PREPROCESSED HEADER LIBRARY VERSION — cffi can read psv.h (STYLE rule 35).

PREPROCESSED is `cc -std=c99 -E -P include/psv.h` (what `make test-header` writes), HEADER the
plain include/psv.h, LIBRARY the built libpsv.so and VERSION Cargo.toml's package version.

Checks that cffi's cdef() parses the preprocessed header as it is; that every function psv.h
declares is declared by it and resolves in the library (ABI mode, ffi.dlopen); that the
#define constants, which the preprocessor removes, parse into Python ints and can be handed to
cdef() as well; that the types have the widths the bindings rely on; and that the library
reports the version and ABI of the header.
"""

import re
import sys

import cffi

DEFINE = re.compile(r"^\s*#\s*define\s+(PSV_[A-Z0-9_]+)\s+(-?\d+)\s*$", re.MULTILINE)
FUNCTION = re.compile(r"\b(psv_[a-z0-9_]+)\s*\(")


def main(argv):
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    preprocessed, header, library, version = argv[1:]
    with open(preprocessed, encoding="utf-8") as f:
        cdef_text = f.read()
    with open(header, encoding="utf-8") as f:
        header_text = f.read()

    ffi = cffi.FFI()
    ffi.cdef(cdef_text)  # the whole preprocessed header, system typedefs included

    # Every psv_ function declared in the plain header (outside comments) is declared for cffi.
    code = re.sub(r"/\*.*?\*/", "", header_text, flags=re.DOTALL)
    code = re.sub(r"//[^\n]*", "", code)
    declared = sorted(set(FUNCTION.findall(code)))
    if len(declared) < 30:
        raise SystemExit(f"check_cdef: found only {len(declared)} functions in {header}")
    lib = ffi.dlopen(library)
    missing = [name for name in declared if not hasattr(lib, name)]
    if missing:
        raise SystemExit(f"check_cdef: not declared or not exported: {missing}")

    # The constants: parsed into ints, and accepted by cdef() as integer #defines.
    constants = {name: int(value) for name, value in DEFINE.findall(header_text)}
    for name in ("PSV_OK", "PSV_ERR_NULL_ARG", "PSV_DTYPE_INVALID", "PSV_DTYPE_F64", "PSV_ABI_VERSION"):
        if name not in constants:
            raise SystemExit(f"check_cdef: no integer #define {name} in {header}")
    ffi_consts = cffi.FFI()
    ffi_consts.cdef("\n".join(f"#define {k} {v}" for k, v in constants.items()))
    lib_consts = ffi_consts.dlopen(library)
    for k, v in constants.items():
        if getattr(lib_consts, k) != v:
            raise SystemExit(f"check_cdef: cffi reads {k} as {getattr(lib_consts, k)}, expected {v}")

    # Widths and signedness the bindings (ctypes, cffi, LuaJIT, Julia) assume.
    widths = {"psv_status": 4, "psv_dtype": 4, "size_t": ffi.sizeof("void *"), "int64_t": 8, "bool": 1}
    for ctype, size in widths.items():
        if ffi.sizeof(ctype) != size:
            raise SystemExit(f"check_cdef: sizeof({ctype}) is {ffi.sizeof(ctype)}, expected {size}")
    if ffi.cast("psv_status", -1) != -1:
        raise SystemExit("check_cdef: psv_status is not signed")

    # The library matches the header it was generated with.
    lib_version = ffi.string(lib.psv_version()).decode()
    if lib_version != version:
        raise SystemExit(f"check_cdef: psv_version() is {lib_version}, Cargo.toml says {version}")
    header_version = "{PSV_VERSION_MAJOR}.{PSV_VERSION_MINOR}.{PSV_VERSION_PATCH}".format(**constants)
    if header_version != version:
        raise SystemExit(f"check_cdef: header version {header_version}, Cargo.toml says {version}")
    if lib.psv_abi_version() != constants["PSV_ABI_VERSION"]:
        raise SystemExit(f"check_cdef: psv_abi_version() {lib.psv_abi_version()} != PSV_ABI_VERSION")
    for name, code in constants.items():
        if name == "PSV_OK" or name.startswith("PSV_ERR_"):
            got = ffi.string(lib.psv_status_str(code)).decode()
            if got != name:
                raise SystemExit(f"check_cdef: psv_status_str({code}) is {got}, expected {name}")

    print(
        f"check_cdef: cffi parsed {preprocessed}: {len(declared)} functions resolved, "
        f"{len(constants)} constants, version {lib_version}, ABI {lib.psv_abi_version()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
