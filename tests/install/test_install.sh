#!/bin/sh
# tests/install/test_install.sh WORKDIR — the install test behind `make test-install` (STYLE rule 38).
#
# Runs the README's install blocks exactly as written (README.md: install, install-use,
# install-cmake, uninstall; extracted by tests/readme/readme_blocks.py) with HOME set to a scratch
# directory, so that `make install PREFIX=$HOME/.local` installs there: pkg-config builds of the
# README's prog.c, dynamic and static (psv-static), and examples/cpp through find_package(psv).
# Then checks the installed tree: the file list, SONAME and symlinks, debug info stripped with the
# symbols kept, the static program free of libpsv.so, the C and C++ examples built with nothing
# but pkg-config. Also checks that the README's uninstall removes exactly those files and that
# DESTDIR stages the same files under a foreign PREFIX.
#
# Environment (set by mk/install.mk): MAKE, CC, CXX, PSV_VERSION (e.g. 0.1.0), PSV_SOVER (e.g. 0.1).
set -eu

work=${1:?usage: test_install.sh WORKDIR}
: "${MAKE:=make}" "${CC:=cc}" "${CXX:=c++}"
: "${PSV_VERSION:?}" "${PSV_SOVER:?}"
repo=$(cd "$(dirname "$0")/../.." && pwd)
blocks="$repo/tests/readme/readme_blocks.py"

fail() {
    echo "test-install: FAIL: $*" >&2
    exit 1
}
step() {
    echo "test-install: $*"
}

rm -rf "$work"
mkdir -p "$work"
cd "$repo"

# Files `make install` must produce, relative to the prefix, and nothing else.
expected_files() {
    {
        echo "include/psv.h"
        echo "include/psv.hpp"
        echo "lib/cmake/psv/psvConfig.cmake"
        echo "lib/cmake/psv/psvConfigVersion.cmake"
        echo "lib/libpsv.a"
        echo "lib/libpsv.so"
        echo "lib/libpsv.so.$PSV_SOVER"
        echo "lib/libpsv.so.$PSV_VERSION"
        echo "lib/pkgconfig/psv-static.pc"
        echo "lib/pkgconfig/psv.pc"
        if [ -f target/release/psv ]; then echo "bin/psv"; fi
    } | LC_ALL=C sort
}
installed_files() { # ROOT: every file and symlink under ROOT, relative to it
    (cd "$1" && find . \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort)
}
check_file_list() { # ROOT WHAT
    expected_files > "$work/expected.txt"
    installed_files "$1" > "$work/installed.txt"
    diff -u "$work/expected.txt" "$work/installed.txt" || fail "$2 installed a different set of files"
}
check_empty() { # ROOT WHAT: no file or symlink left under ROOT
    left=$(cd "$1" && find . \( -type f -o -type l \) | head -n 20)
    [ -z "$left" ] || fail "$2 left files behind: $left"
}
block() { # NAME: the README block NAME
    python3 "$blocks" "$repo/README.md" "$1" || fail "README.md has no block $1"
}

# --- the README's lines, verbatim, with HOME in the scratch directory ----------------------------
# HOME moves, so cargo and rustup are told where they live.
home="$work/home"
use="$work/use"
mkdir -p "$home" "$use"
block prog.c > "$use/prog.c"
ln -s "$repo/examples" "$use/examples"
{
    echo "set -eux"
    echo "export HOME='$home'"
    echo "export CARGO_HOME='${CARGO_HOME:-$HOME/.cargo}' RUSTUP_HOME='${RUSTUP_HOME:-$HOME/.rustup}'"
    echo "unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR LD_LIBRARY_PATH"
    echo "cd '$repo'"
    block install
    echo "cd '$use'"
    block install-use
    block install-cmake
} > "$work/readme-install.sh"
step "README blocks install, install-use, install-cmake (HOME=$home)"
env -u MAKE -u MAKEFLAGS -u MFLAGS -u MAKELEVEL bash "$work/readme-install.sh" > "$work/readme-install.log" 2>&1 \
    || { cat "$work/readme-install.log"; fail "the README's install lines"; }
grep '^+ \(make\|cc\|cmake\|\./\|build/\)' "$work/readme-install.log" | sed 's/^/    /'
prefix="$home/.local"
check_file_list "$prefix" "make install"

lib="$prefix/lib"
[ -f "$lib/libpsv.so.$PSV_VERSION" ] && [ ! -L "$lib/libpsv.so.$PSV_VERSION" ] \
    || fail "lib/libpsv.so.$PSV_VERSION is not a regular file"
[ "$(readlink "$lib/libpsv.so.$PSV_SOVER")" = "libpsv.so.$PSV_VERSION" ] \
    || fail "libpsv.so.$PSV_SOVER does not point at libpsv.so.$PSV_VERSION"
[ "$(readlink "$lib/libpsv.so")" = "libpsv.so.$PSV_SOVER" ] \
    || fail "libpsv.so does not point at libpsv.so.$PSV_SOVER"
soname=$(readelf -d "$lib/libpsv.so.$PSV_VERSION" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ "$soname" = "libpsv.so.$PSV_SOVER" ] || fail "SONAME is '$soname', expected libpsv.so.$PSV_SOVER"
step "SONAME $soname, symlinks libpsv.so -> libpsv.so.$PSV_SOVER -> libpsv.so.$PSV_VERSION"
cmp -s include/psv.h "$prefix/include/psv.h" || fail "installed psv.h differs from include/psv.h"

# --- stripped: no debug sections, symbols kept (backtraces name functions) -----------------------
for f in "lib/libpsv.so.$PSV_VERSION" lib/libpsv.a bin/psv; do
    [ -e "$prefix/$f" ] || continue
    case $f in lib/libpsv.a) built=target/release/libpsv.a ;; bin/psv) built=target/release/psv ;;
        *) built=target/release/libpsv.so ;; esac
    # (.debug_gdb_scripts is allocated, loaded with the program: strip keeps it, and so do we)
    if readelf -S -W "$prefix/$f" 2>/dev/null | grep -Eq ' \.debug_(info|line|str|abbrev|ranges|loc)'; then
        fail "$f still has debug info"
    fi
    readelf -S -W "$prefix/$f" 2>/dev/null | grep -q ' \.symtab ' || fail "$f lost its symbol table"
    step "$f stripped of debug info: $(du -k "$built" | cut -f1) KiB built -> $(du -k "$prefix/$f" | cut -f1) KiB installed"
done
nm "$lib/libpsv.so.$PSV_VERSION" | grep -q ' t .*psv.*restore' || fail "libpsv.so lost its local symbols"

# --- what the README's lines built -------------------------------------------------------------
readelf -d "$use/prog" | grep -q "Shared library: \[libpsv.so.$PSV_SOVER\]" \
    || fail "the README's dynamic prog does not record NEEDED libpsv.so.$PSV_SOVER"
readelf -d "$use/prog" | grep -q "R.*PATH.*\[$lib\]" || fail "the README's dynamic prog has no rpath to $lib"
if readelf -d "$use/prog-static" | grep -q 'Shared library: \[libpsv'; then
    fail "the README's static prog-static needs libpsv.so"
fi
(cd "$use" && env -u LD_LIBRARY_PATH ./prog-static > /dev/null) || fail "prog-static does not run"
[ -x "$use/build/cpp/psv_example" ] || fail "the README's CMake lines built no build/cpp/psv_example"
readelf -d "$use/build/cpp/psv_example" | grep -q "Shared library: \[libpsv.so.$PSV_SOVER\]" \
    || fail "the CMake-built example does not link libpsv.so.$PSV_SOVER (psv::psv)"
step "README: dynamic prog (rpath), static prog-static (no libpsv.so), CMake find_package(psv) OK"

# --- pkg-config ---------------------------------------------------------------------------------
PKG_CONFIG_PATH="$lib/pkgconfig"
export PKG_CONFIG_PATH
unset PKG_CONFIG_SYSROOT_DIR 2>/dev/null || true
[ "$(pkg-config --modversion psv)" = "$PSV_VERSION" ] || fail "pkg-config --modversion psv"
[ "$(pkg-config --modversion psv-static)" = "$PSV_VERSION" ] || fail "pkg-config --modversion psv-static"
libs=$(pkg-config --cflags --libs psv)
static_libs=$(pkg-config --static --libs psv)
step "pkg-config --cflags --libs psv: $libs"
step "pkg-config --static --cflags --libs psv-static: $(pkg-config --static --cflags --libs psv-static)"
case " $static_libs " in
    *" -lpthread "* | *" -lm "* | *" -ldl "*) ;;
    *) fail "Libs.private (native-static-libs) is missing from psv.pc" ;;
esac

# Build from a copy of the sources in the scratch directory, so that nothing in the source tree
# (include/, examples/c/) can be found by a relative #include.
cp examples/c/psv_example.c "$work/example.c"
cp examples/cpp/psv_example.cpp "$work/example.cpp"
strict="-Wall -Wextra -Wpedantic -Werror -O2"

# --- dynamic: only pkg-config's flags; the loader finds the prefix through LD_LIBRARY_PATH -------
step "C example, dynamic"
# shellcheck disable=SC2086
$CC -std=c99 $strict "$work/example.c" -o "$work/example_dyn" $libs
readelf -d "$work/example_dyn" | grep -q "Shared library: \[libpsv.so.$PSV_SOVER\]" \
    || fail "example_dyn does not record NEEDED libpsv.so.$PSV_SOVER"
LD_LIBRARY_PATH="$lib" ldd "$work/example_dyn" | grep -q "libpsv.so.$PSV_SOVER => $lib/" \
    || fail "example_dyn does not resolve libpsv from the prefix"
LD_LIBRARY_PATH="$lib" "$work/example_dyn" "$work/out_dyn" > "$work/example_dyn.log" 2>&1 \
    || { cat "$work/example_dyn.log"; fail "dynamic C example"; }
[ -s "$work/out_dyn.npz" ] || fail "dynamic C example wrote no $work/out_dyn.npz"

# --- C++: psv.hpp from the prefix ---------------------------------------------------------------
step "C++ example (psv.hpp), dynamic"
# shellcheck disable=SC2086
$CXX -std=c++17 $strict "$work/example.cpp" -o "$work/example_cpp" $libs
LD_LIBRARY_PATH="$lib" "$work/example_cpp" "$work/out_cpp" > "$work/example_cpp.log" 2>&1 \
    || { cat "$work/example_cpp.log"; fail "C++ example"; }

# --- the README's uninstall removes exactly what install put there ------------------------------
step "README block uninstall"
{
    echo "set -eux"
    echo "export HOME='$home'"
    echo "export CARGO_HOME='${CARGO_HOME:-$HOME/.cargo}' RUSTUP_HOME='${RUSTUP_HOME:-$HOME/.rustup}'"
    echo "cd '$repo'"
    block uninstall
} > "$work/readme-uninstall.sh"
env -u MAKE -u MAKEFLAGS -u MFLAGS -u MAKELEVEL bash "$work/readme-uninstall.sh" > "$work/readme-uninstall.log" 2>&1 \
    || { cat "$work/readme-uninstall.log"; fail "make uninstall"; }
check_empty "$prefix" "make uninstall"
[ ! -e "$prefix/lib/cmake/psv" ] || fail "make uninstall left lib/cmake/psv"

# --- DESTDIR stages under a foreign prefix; the .pc file names the final prefix ------------------
stage="$work/stage"
step "make install DESTDIR=$stage PREFIX=/opt/psv-test"
$MAKE --no-print-directory -s install DESTDIR="$stage" PREFIX=/opt/psv-test > "$work/install-destdir.log" 2>&1 \
    || { cat "$work/install-destdir.log"; fail "make install DESTDIR=..."; }
check_file_list "$stage/opt/psv-test" "make install DESTDIR=..."
[ -z "$(cd "$stage" && find . -mindepth 1 -maxdepth 1 ! -name opt)" ] || fail "DESTDIR install wrote outside \$DESTDIR/opt"
grep -qx 'prefix=/opt/psv-test' "$stage/opt/psv-test/lib/pkgconfig/psv.pc" || fail "psv.pc does not say prefix=/opt/psv-test"
grep -q "$stage" "$stage/opt/psv-test/lib/pkgconfig/psv.pc" && fail "psv.pc mentions DESTDIR"
$MAKE --no-print-directory -s uninstall DESTDIR="$stage" PREFIX=/opt/psv-test > "$work/uninstall-destdir.log" 2>&1 \
    || { cat "$work/uninstall-destdir.log"; fail "make uninstall DESTDIR=..."; }
check_empty "$stage" "make uninstall DESTDIR=..."

rm -f "$work"/out_*.npz
echo "test-install: the README's install, pkg-config (dynamic, static) and CMake lines; SONAME, stripping, C and C++ via pkg-config, uninstall and DESTDIR OK"
