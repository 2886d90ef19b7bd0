#!/bin/sh
# tests/install/test_install.sh WORKDIR — the install test behind `make test-install` (STYLE rule 38).
#
# Installs libpsv into a scratch prefix, checks the file list, SONAME and symlinks, then builds the
# C example dynamically and statically and the C++ example with nothing but
# `pkg-config ... psv` (no -I/-L into the source tree) and runs all three. Also checks that DESTDIR
# stages the same files under a foreign PREFIX and that `make uninstall` removes exactly them.
#
# Environment (set by mk/install.mk): MAKE, CC, CXX, PSV_VERSION (e.g. 0.1.0), PSV_SOVER (e.g. 0.1).
set -eu

work=${1:?usage: test_install.sh WORKDIR}
: "${MAKE:=make}" "${CC:=cc}" "${CXX:=c++}"
: "${PSV_VERSION:?}" "${PSV_SOVER:?}"
repo=$(cd "$(dirname "$0")/../.." && pwd)

fail() {
    echo "test-install: FAIL: $*" >&2
    exit 1
}
step() {
    echo "test-install: $*"
}

rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"
cd "$repo"

# Files `make install` must produce, relative to the prefix, and nothing else.
expected_files() {
    {
        echo "include/psv.h"
        echo "include/psv.hpp"
        echo "lib/libpsv.a"
        echo "lib/libpsv.so"
        echo "lib/libpsv.so.$PSV_SOVER"
        echo "lib/libpsv.so.$PSV_VERSION"
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
check_empty() { # ROOT WHAT
    left=$(cd "$1" && find . \( -type f -o -type l \) | head -n 20)
    [ -z "$left" ] || fail "$2 left files behind: $left"
}

# --- install into the scratch prefix --------------------------------------------------------
step "make install PREFIX=$prefix"
$MAKE --no-print-directory -s install PREFIX="$prefix" > "$work/install.log" 2>&1 \
    || { cat "$work/install.log"; fail "make install"; }
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

# --- pkg-config -------------------------------------------------------------------------------
PKG_CONFIG_PATH="$lib/pkgconfig"
export PKG_CONFIG_PATH
unset PKG_CONFIG_SYSROOT_DIR 2>/dev/null || true
[ "$(pkg-config --modversion psv)" = "$PSV_VERSION" ] || fail "pkg-config --modversion psv"
cflags=$(pkg-config --cflags psv)
libs=$(pkg-config --cflags --libs psv)
static_libs=$(pkg-config --static --libs psv)
step "pkg-config --cflags --libs psv: $libs"
step "pkg-config --static --libs psv: $static_libs"
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

# --- static: pkg-config --static; -lpsv becomes -l:libpsv.a so ld takes the archive, not the .so --
step "C example, static"
static_link=$(printf '%s\n' "$static_libs" | sed 's/\(^\|[[:space:]]\)-lpsv\([[:space:]]\|$\)/\1-l:libpsv.a\2/')
case " $static_link " in *" -l:libpsv.a "*) ;; *) fail "no -lpsv in: $static_libs" ;; esac
# shellcheck disable=SC2086
$CC -std=c99 $strict $cflags "$work/example.c" -o "$work/example_static" $static_link
if readelf -d "$work/example_static" | grep -q 'Shared library: \[libpsv'; then
    fail "example_static still needs libpsv.so"
fi
env -u LD_LIBRARY_PATH "$work/example_static" "$work/out_static" > "$work/example_static.log" 2>&1 \
    || { cat "$work/example_static.log"; fail "static C example"; }

# --- C++: psv.hpp from the prefix ---------------------------------------------------------------
step "C++ example (psv.hpp), dynamic"
# shellcheck disable=SC2086
$CXX -std=c++17 $strict "$work/example.cpp" -o "$work/example_cpp" $libs
LD_LIBRARY_PATH="$lib" "$work/example_cpp" "$work/out_cpp" > "$work/example_cpp.log" 2>&1 \
    || { cat "$work/example_cpp.log"; fail "C++ example"; }

# --- uninstall removes exactly what install put there -------------------------------------------
step "make uninstall PREFIX=$prefix"
$MAKE --no-print-directory -s uninstall PREFIX="$prefix" > "$work/uninstall.log" 2>&1 \
    || { cat "$work/uninstall.log"; fail "make uninstall"; }
check_empty "$prefix" "make uninstall"

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
echo "test-install: install, SONAME, pkg-config (dynamic and static C, C++), uninstall and DESTDIR OK"
