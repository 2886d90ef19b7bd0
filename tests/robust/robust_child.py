#!/usr/bin/env python3
"""Child process for the robustness tests: runs libpsv (through the ctypes binding) under
conditions the test process must not put itself in (SIGKILL, rlimits, dropped privileges).

Every result is printed as one JSON line on stdout, flushed at once, so that a parent that
kills this process still sees everything reported before the kill.

    robust_child.py kill-loop DATADIR TARGET START COUNT
        Saves dataset (seq % 2) of DATADIR over TARGET with a stamp [MAGIC, seq, seq % 2, pid]
        for seq = START, START+1, ... (COUNT saves; 0 = until killed). Prints {"op": "ready"}
        before the first save and {"op": "saved", "seq": s, "seconds": t} after each one.

    robust_child.py save TARGET --mb N [--fsize BYTES] [--as-headroom BYTES] [--threads N]
                                  [--drop-privileges] [--retry-target PATH]
        Saves N MiB (one uint64 array "data" = arange * 2654435761 plus a few small arrays)
        over TARGET under the given limits; prints {"op": "save", "status": ..., "message": ...}.
        With --retry-target, then lifts the rlimits and saves again there ("save-retry").

    robust_child.py restore PATH [--as-headroom BYTES] [--then PATH2] [--mmap] [--warm PATH0]
        Restores PATH (with --mmap: the mmap option) under RLIMIT_AS = current VmSize + BYTES
        and prints {"op": "restore"}; with --then, restores PATH2 under the same limit and
        prints its arrays' CRC-32s ("restore-then"). With --warm, first restores PATH0 without
        the limit ("warm"), so that the worker pool already exists when the limited one runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
import zlib
from pathlib import Path
from typing import Dict

import numpy as np

import parallel_saver as ps

MAGIC = 0x5053562D4B494C4C  # "PSV-KILL"


def emit(**record) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def crc_of(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1))


def vm_size() -> int:
    """This process's address-space size in bytes (what RLIMIT_AS limits)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def limit_address_space(headroom: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = vm_size() + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def lift_limits() -> None:
    for which in (resource.RLIMIT_AS, resource.RLIMIT_FSIZE):
        _, hard = resource.getrlimit(which)
        resource.setrlimit(which, (hard, hard))


def attempt(op: str, fn, **extra) -> None:
    """Runs fn() and prints its outcome: status 0 or the PsvError's status and message."""
    t0 = time.perf_counter()
    try:
        value = fn()
    except ps.PsvError as exc:
        emit(op=op, status=exc.status, name=exc.status_name, message=exc.message,
             seconds=time.perf_counter() - t0, **extra)
        return
    emit(op=op, status=0, name="PSV_OK", message="", seconds=time.perf_counter() - t0,
         value=value, **extra)


# -- kill-loop -------------------------------------------------------------------------------
def load_dataset(datadir: Path, ds: int) -> Dict[str, np.ndarray]:
    """Dataset `ds` as written by test_kill.py: memory-mapped .npy files, small arrays as rows."""
    d = datadir / f"ds{ds}"
    arrays: Dict[str, np.ndarray] = {}
    for f in sorted(d.glob("*.npy")):
        a = np.load(f, mmap_mode="r")
        if f.stem == "small":
            for i in range(a.shape[0]):
                arrays[f"small_{i:03d}"] = a[i]
        else:
            arrays[f.stem] = a
    return arrays


def kill_loop(args: argparse.Namespace) -> int:
    datadir = Path(args.datadir)
    savers = []
    stamps = []
    for ds in (0, 1):
        arrays = load_dataset(datadir, ds)
        stamp = np.zeros(4, dtype=np.int64)
        arrays["stamp"] = stamp
        savers.append(ps.ParallelSaver(arrays))
        stamps.append(stamp)
    emit(op="ready", pid=os.getpid())
    seq = args.start
    n = 0
    while args.count == 0 or n < args.count:
        ds = seq % 2
        stamps[ds][:] = [MAGIC, seq, ds, os.getpid()]
        t0 = time.perf_counter()
        savers[ds].save(args.target)
        emit(op="saved", seq=seq, seconds=time.perf_counter() - t0)
        seq += 1
        n += 1
    return 0


# -- save / restore under limits -------------------------------------------------------------
def payload(mb: int) -> Dict[str, np.ndarray]:
    n = mb * (1 << 20) // 8
    return {
        "data": np.arange(n, dtype=np.uint64) * np.uint64(2654435761),
        "small": np.arange(100, dtype=np.float32),
        "scalar": np.array(7.5),
    }


def save_cmd(args: argparse.Namespace) -> int:
    saver = ps.ParallelSaver(payload(args.mb))
    if args.drop_privileges:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    if args.fsize is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize, hard))
    if args.as_headroom is not None:
        limit_address_space(args.as_headroom)
    attempt("save", lambda: saver.save(args.target, threads=args.threads),
            uid=os.getuid())
    if args.retry_target:
        lift_limits()
        attempt("save-retry", lambda: saver.save(args.retry_target, threads=args.threads))
    return 0


def raw_lib():
    """A private ctypes handle on the same libpsv, with the few prototypes these tests call
    directly (declared here so that the binding's own prototypes are never changed)."""
    import ctypes

    lib = ctypes.CDLL(str(ps.library_path()))
    vp, st, b = ctypes.c_void_p, ctypes.c_int32, ctypes.c_bool
    protos = {
        "psv_restore_options_new": (vp, []),
        "psv_restore_options_free": (None, [vp]),
        "psv_restore_options_set_mmap": (st, [vp, b]),
        "psv_restore_options_set_metadata_only": (st, [vp, b]),
        "psv_restore": (st, [ctypes.c_char_p, vp, ctypes.POINTER(vp)]),
        "psv_archive_count": (ctypes.c_size_t, [vp]),
        "psv_archive_nbytes": (ctypes.c_size_t, [vp, ctypes.c_size_t]),
        "psv_archive_key": (ctypes.c_char_p, [vp, ctypes.c_size_t]),
        "psv_free": (None, [vp]),
        "psv_status_str": (ctypes.c_char_p, [st]),
        "psv_last_error_message": (ctypes.c_size_t, [ctypes.c_char_p, ctypes.c_size_t]),
    }
    for name, (res, args) in protos.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def raw_restore(path: str, *, mmap: bool = False, metadata_only: bool = False):
    """psv_restore through raw_lib(): returns (lib, archive handle) or raises PsvError
    (after checking that *out was set to NULL). The caller frees the handle with lib.psv_free."""
    import ctypes

    lib = raw_lib()
    opts = lib.psv_restore_options_new()
    arch = ctypes.c_void_p(12345)  # *out must be overwritten, with NULL on failure
    try:
        st = lib.psv_restore_options_set_mmap(opts, mmap)
        if st == 0:
            st = lib.psv_restore_options_set_metadata_only(opts, metadata_only)
        if st == 0:
            st = lib.psv_restore(path.encode(), opts, ctypes.byref(arch))
        if st != 0:
            buf = ctypes.create_string_buffer(4096)
            lib.psv_last_error_message(buf, len(buf))
            msg = buf.value.decode("utf-8", "replace")
            if arch.value is not None:
                raise RuntimeError(
                    f"psv_restore failed ({st}) but *out is {arch.value:#x}, not NULL"
                )
            raise ps.PsvError(st, lib.psv_status_str(st).decode(), msg, "psv_restore")
    finally:
        lib.psv_restore_options_free(opts)
    return lib, arch


def restore_mapped(path: str) -> int:
    """psv_restore with the mmap option: returns the array count."""
    lib, arch = raw_restore(path, mmap=True)
    try:
        return int(lib.psv_archive_count(arch))
    finally:
        lib.psv_free(arch)


def restore_cmd(args: argparse.Namespace) -> int:
    ps._lib()  # load libpsv before any limit: the limit is for the library's work, not dlopen
    if args.warm:
        attempt("warm", lambda: len(ps.restore(args.warm)))  # starts the worker pool
    if args.as_headroom is not None:
        limit_address_space(args.as_headroom)
    if args.mmap:
        attempt("restore", lambda: restore_mapped(args.path))
    else:
        attempt("restore", lambda: len(ps.restore(args.path)))
    if args.then:
        attempt("restore-then",
                lambda: {k: crc_of(v) for k, v in ps.restore(args.then).items()})
    return 0


def main(argv) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kill-loop")
    k.add_argument("datadir")
    k.add_argument("target")
    k.add_argument("start", type=int)
    k.add_argument("count", type=int)
    s = sub.add_parser("save")
    s.add_argument("target")
    s.add_argument("--mb", type=int, required=True)
    s.add_argument("--fsize", type=int)
    s.add_argument("--as-headroom", type=int)
    s.add_argument("--threads", type=int)
    s.add_argument("--drop-privileges", action="store_true")
    s.add_argument("--retry-target")
    r = sub.add_parser("restore")
    r.add_argument("path")
    r.add_argument("--as-headroom", type=int)
    r.add_argument("--then")
    r.add_argument("--mmap", action="store_true")
    r.add_argument("--warm")
    args = p.parse_args(argv)
    return {"kill-loop": kill_loop, "save": save_cmd, "restore": restore_cmd}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
