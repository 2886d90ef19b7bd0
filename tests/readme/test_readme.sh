#!/bin/sh
# tests/readme/test_readme.sh WORKDIR — the README's programs, compiled and run as the README shows.
#
# In WORKDIR, whose `include` and `target` are the repository's (so that the README's relative
# paths hold), writes the programs named in README.md (prog.c, prog.cpp, prog.py, prog_cffi.py,
# prog.lua) and runs the README's own build lines (blocks c-build, cpp-build) verbatim; the
# Python programs run with $PYTHON (the venv of the installed wheel, which has cffi and numpy),
# the Lua one with $LUAJIT. The install, pkg-config and CMake blocks run in test_install.sh.
#
# Environment (set by mk/readme.mk): PYTHON, LUAJIT, CC, CXX (the README says cc and c++; both
# are put first on PATH as those names when set). The library must be built (cargo build --release).
set -eu

work=${1:?usage: test_readme.sh WORKDIR}
: "${PYTHON:?}" "${LUAJIT:=luajit}"
repo=$(cd "$(dirname "$0")/../.." && pwd)
blocks="$repo/tests/readme/readme_blocks.py"

fail() {
    echo "test-readme: FAIL: $*" >&2
    exit 1
}

rm -rf "$work"
mkdir -p "$work/bin"
ln -s "$repo/include" "$work/include"
ln -s "$repo/target" "$work/target"
# `cc` and `c++` in the README are the compilers make uses.
if [ -n "${CC:-}" ]; then ln -s "$(command -v "$CC")" "$work/bin/cc"; fi
if [ -n "${CXX:-}" ]; then ln -s "$(command -v "$CXX")" "$work/bin/c++"; fi
PATH="$work/bin:$PATH"
export PATH

block() { # NAME FILE
    python3 "$blocks" "$repo/README.md" "$1" > "$2" || fail "README.md has no block $1"
}

run() { # WHAT COMMAND...
    echo "test-readme: $1"
    shift
    (cd "$work" && "$@") > "$work/log.txt" 2>&1 || { cat "$work/log.txt"; fail "$*"; }
    sed 's/^/    /' "$work/log.txt"
}

for f in prog.c prog.cpp prog.py shm.py async.py prog_cffi.py prog.lua; do
    block "$f" "$work/$f"
done
block c-build "$work/c-build.sh"
block cpp-build "$work/cpp-build.sh"

run "C: prog.c with the README's build lines" sh -eu c-build.sh
grep -q '^weights <f4 ndim=2 v\[5\]=5$' "$work/log.txt" || fail "prog.c printed something else"
readelf -d "$work/prog" | grep -q 'Shared library: \[libpsv.so' || fail "prog does not link libpsv.so"
run "C++: prog.cpp with the README's build lines" sh -eu cpp-build.sh
grep -q '^w: 6 floats, w\[5\] = 5$' "$work/log.txt" || fail "prog.cpp printed something else"
run "Python: prog.py with the installed package" "$PYTHON" prog.py
grep -qx '(1000, 1000)' "$work/log.txt" || fail "prog.py printed something else"
run "Python: shm.py (restore into shared memory) with the installed package" "$PYTHON" shm.py
run "Python: async.py (a save in the background) with the installed package" "$PYTHON" async.py
run "cffi: prog_cffi.py" "$PYTHON" prog_cffi.py
grep -qx 'cffi: f.npz restored' "$work/log.txt" || fail "prog_cffi.py printed something else"
run "LuaJIT: prog.lua" "$LUAJIT" prog.lua
grep -q '^1.5.*4.5$' "$work/log.txt" || fail "prog.lua printed something else"

# Everything each program saved is an ordinary .npz that numpy reads.
(cd "$work" && "$PYTHON" -c '
import numpy as np
for f in ["model.npz", "model_cpp.npz", "output.npz", "f.npz", "f_lua.npz"]:
    with np.load(f) as z:
        assert z.files, f
') || fail "numpy cannot read what the README programs saved"
echo "test-readme: the README's C, C++, Python, cffi and LuaJIT programs build, run and agree with numpy"
