#!/usr/bin/env bash
# Run a C test binary under valgrind memcheck; fail on any memory error or leak.
#
#   tests/c/run_valgrind.sh BINARY SCRATCHDIR
#
# Definite and indirect leaks are errors; "possibly lost" and "still reachable"
# blocks are not (Rust's lazily built thread pools and thread-locals live until
# exit by design). Suppressions, if any are ever needed, go in
# tests/c/valgrind.supp next to this script, each with a comment saying why.
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 BINARY SCRATCHDIR" >&2
  exit 2
fi
binary=$1
scratch=$2
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v valgrind >/dev/null 2>&1; then
  echo "run_valgrind.sh: valgrind not found, installing it" >&2
  if ! { apt-get update -qq && apt-get install -y -qq valgrind; }; then
    echo "run_valgrind.sh: FAILED to install valgrind; cannot run the memcheck tests" >&2
    exit 1
  fi
fi

supp=()
if [ -f "$here/valgrind.supp" ]; then
  supp=(--suppressions="$here/valgrind.supp")
fi

mkdir -p "$scratch"
log="$scratch/valgrind.log"
set +e
valgrind --tool=memcheck --error-exitcode=99 \
  --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite,indirect \
  --num-callers=40 --log-file="$log" "${supp[@]}" \
  "$binary" "$scratch"
rc=$?
set -e

if [ "$rc" -ne 0 ]; then
  cat "$log" >&2
  if [ "$rc" -eq 99 ]; then
    echo "run_valgrind.sh: FAILED: valgrind found memory errors or leaks in $binary (log: $log)" >&2
  else
    echo "run_valgrind.sh: FAILED: $binary exited with status $rc under valgrind (log: $log)" >&2
  fi
  exit 1
fi
grep -E "ERROR SUMMARY|definitely lost|indirectly lost" "$log" || true
echo "run_valgrind.sh: $binary is clean under valgrind memcheck"
