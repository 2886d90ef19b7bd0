"""The command line: ``python -m parallel_saver ls|verify|cp`` and the ``psv-py`` console
script (both run :func:`main`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from ._api import ParallelSaver, _descr_of, ls, restore
from ._binding import PsvError


def _prog() -> str:
    """The program name for usage lines: ``psv-py`` as a console script, else the module."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("__main__.py", "-c") else "python -m parallel_saver"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_prog(), description="Inspect and copy .npz archives with libpsv.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_ls = sub.add_parser("ls", help="list arrays: key, dtype, shape, bytes (headers only)")
    p_ls.add_argument("file")
    p_verify = sub.add_parser("verify", help="restore every array and check CRC-32s")
    p_verify.add_argument("file")
    p_verify.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p_verify.add_argument("--progress", action="store_true", help="progress bar on stderr (if a terminal)")
    p_cp = sub.add_parser(
        "cp",
        help="rewrite any .npz (e.g. numpy's) as a psv file (data 64-byte aligned)",
        description="Restores SRC and saves every array, with its dtype, shape and order, to DST "
        "(.npz appended if missing). Members of SRC that are not arrays are not copied (a warning "
        "names them).",
    )
    p_cp.add_argument("src")
    p_cp.add_argument("dst")
    p_cp.add_argument("--compress", type=int, default=0, metavar="LEVEL", help="0 stores (default); 1-9 deflates")
    p_cp.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p_cp.add_argument("--progress", action="store_true", help="progress bars on stderr (if a terminal)")
    return parser


def _cp(src: str, dst: str, *, compress: int, threads: Optional[int], progress: bool) -> str:
    """Copy ``src`` to ``dst`` as a psv file; returns the summary line."""
    got = restore(src, threads=threads, progress=progress or None)
    for name in got.skipped:
        print(f"{_prog()}: warning: {src}: member {name!r} is not an array; not copied", file=sys.stderr)
    with ParallelSaver(dict(got)) as saver:
        written = saver.save(dst, threads=threads, compress=compress, progress=progress or None)
    total = sum(a.nbytes for a in got.values())
    return f"copied {src} -> {os.fsdecode(written)}: {len(got)} arrays, {total} bytes"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line: ``ls FILE`` lists arrays, ``verify FILE`` restores with CRC checks,
    ``cp SRC DST`` rewrites an archive as a psv file.

    ``ls`` prints one tab-separated line per array: key, dtype (numpy descr), shape, bytes.
    ``verify`` prints ``OK ...`` and returns 0 if every array restores and every CRC-32
    matches; otherwise prints the error (naming the member) to stderr and returns 1.
    ``cp`` prints ``copied SRC -> DST: ...`` and returns 0, or prints the error and returns 1.
    Returns 2 for usage errors (argparse) and when libpsv cannot be loaded.
    """
    args = _parser().parse_args(argv)
    file = args.src if args.command == "cp" else args.file
    try:
        if args.command == "ls":
            for key, info in ls(args.file).items():
                print(f"{key}\t{_descr_of(info.dtype)}\t{info.shape}\t{info.nbytes}")
            return 0
        if args.command == "cp":
            print(_cp(args.src, args.dst, compress=args.compress, threads=args.threads, progress=args.progress))
            return 0
        got = restore(args.file, threads=args.threads, verify=True, progress=args.progress or None)
        total = sum(a.nbytes for a in got.values())
        extra = f", {len(got.skipped)} non-array members skipped" if got.skipped else ""
        print(f"OK {args.file}: {len(got)} arrays, {total} bytes, CRC-32 verified{extra}")
        return 0
    except PsvError as exc:
        print(f"{file}: {exc}", file=sys.stderr)
        return 1
    except (TypeError, ValueError) as exc:  # bad option values (e.g. --compress 12)
        print(f"{_prog()}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # libpsv not loadable
        print(f"{_prog()}: {exc}", file=sys.stderr)
        return 2


__all__: List[str] = ["main"]
