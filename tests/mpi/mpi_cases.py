"""The MPI side of tests/mpi/test_mpi.py: run under ``mpirun -np N python mpi_cases.py OUTDIR``.

Every rank runs every case for this rank count; failures are gathered to rank 0, which writes
``OUTDIR/result-N.json`` ({"ok": bool, "errors": [...], "files": {case: path}}) for the driver,
which then checks the files against single-process saves, numpy, zipfile and ``unzip -t``.

``arrays_for(case, nranks, rank)`` is imported by the driver too: it rebuilds every rank's
arrays to make the reference file.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

import numpy as np

#: Alignment of each case's save.
ALIGNMENT = {"mixed": 64, "aligned": 1 << 20, "zip64": 64}

BIG = (4 << 20) + 12  # bytes: more than one 4 MiB piece


def _data(n: int, seed: int, dtype: Any) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=n, dtype=np.uint8).view(np.uint8).astype(dtype)


def arrays_for(case: str, nranks: int, rank: int) -> Dict[str, np.ndarray]:
    """Rank ``rank``'s arrays for ``case`` (in add order)."""
    out: Dict[str, np.ndarray] = {}
    if case == "zip64":
        # 65600 members in all (> 65535: ZIP64 end records), tiny and of few shapes.
        per = 65600 // nranks + (1 if rank < 65600 % nranks else 0)
        base = np.arange(per, dtype=np.uint16)
        for i in range(per):
            out[f"z{rank}_{i}"] = base[i : i + 1]
        return out
    if nranks >= 3 and rank == 1:
        return out  # an empty rank
    count = 1 + (rank * 2) % 5  # uneven splits: 1, 3, 5, 2 arrays
    for i in range(count):
        seed = 1000 * rank + i
        kind = (rank + i) % 4
        if kind == 0:
            a = _data(3, seed, np.uint8)  # tiny
        elif kind == 1:
            a = _data(70_000, seed, np.float32).reshape(100, 700)
        elif kind == 2:
            a = _data(5, seed, np.int64)
        else:
            a = np.asfortranarray(_data(BIG // 16 * 2, seed, np.float64).reshape(-1, 2))
        out[f"r{rank}/{case}{i}"] = a
    if rank == nranks - 1 or rank == 0:
        out[f"r{rank}/big"] = _data(BIG, 7 + rank, np.uint8)  # > 4 MiB
    return out


class _Reorder:
    """A communicator whose first allgather (the manifests) comes back reversed on one rank:
    that rank plans with the blobs in another order."""

    def __init__(self, comm: Any, bad_rank: int) -> None:
        self.comm, self.bad_rank, self.first = comm, bad_rank, True

    def Get_rank(self) -> int:
        return self.comm.Get_rank()

    def Get_size(self) -> int:
        return self.comm.Get_size()

    def allgather(self, obj: Any) -> List[Any]:
        got = self.comm.allgather(obj)
        if self.first and self.comm.Get_rank() == self.bad_rank:
            got = got[::-1]
        self.first = False
        return got

    def gather(self, obj: Any, root: int = 0) -> Any:
        return self.comm.gather(obj, root=root)


def main() -> None:
    from mpi4py import MPI

    import parallel_saver as ps
    from parallel_saver import _collective

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    outdir = sys.argv[1]
    errors: List[str] = []
    files: Dict[str, str] = {}

    def check(cond: bool, what: str) -> None:
        if not cond:
            errors.append(f"rank {rank}: {what}")

    cases = ["mixed", "aligned"] + (["zip64"] if size == 4 else [])
    for case in cases:
        mine = arrays_for(case, size, rank)
        path = ps.collective_save(comm, mine, os.path.join(outdir, f"{case}-{size}"), alignment=ALIGNMENT[case])
        files[case] = path
        if case == "zip64":
            continue
        # Each rank restores only its own keys.
        if mine:
            got = ps.restore(path, keys=list(mine))
            check(list(got) == list(mine), f"{case}: restored keys {list(got)[:3]}")
            for k, v in mine.items():
                check(np.array_equal(got[k], v) and got[k].dtype == v.dtype, f"{case}: {k} differs")
                check(got[k].flags.f_contiguous == v.flags.f_contiguous or v.ndim < 2, f"{case}: {k} order")

    # The 4-rank checkpoint restored on fewer ranks: rank r takes old ranks r, r + size, ...
    old = os.path.join(outdir, "mixed-4.npz")
    if size < 4 and os.path.exists(old):
        for old_rank in range(rank, 4, size):
            theirs = arrays_for("mixed", 4, old_rank)
            if theirs:
                got = ps.restore(old, keys=list(theirs))
                for k, v in theirs.items():
                    check(np.array_equal(got[k], v), f"4 -> {size}: {k} differs")
        files["restored_from_4"] = old

    if size >= 2:
        # Duplicate keys across ranks: an error on every rank, naming both ranks, nothing written.
        dup_path = os.path.join(outdir, f"dup-{size}")
        mine = {"shared": np.zeros(3)} if rank in (0, size - 1) else {}
        try:
            ps.collective_save(comm, mine, dup_path)
            check(False, "duplicate keys were accepted")
        except ps.PsvError as e:
            check(f"rank 0 and rank {size - 1}" in str(e), f"duplicate message: {e}")
            check(e.status_name == "PSV_ERR_INVALID_ARG", f"duplicate status {e.status_name}")
        check(not os.path.exists(dup_path + ".npz"), "a failed save left its target")

        # Blobs in another order on one rank: the plan ids differ, detected before any write.
        order_path = os.path.join(outdir, f"order-{size}")
        mine = {f"o{rank}": np.arange(rank + 1)}
        try:
            ps.collective_save(_Reorder(comm, size - 1), mine, order_path)
            check(False, "a rank with another plan was not detected")
        except ps.PsvError as e:
            check("plan id" in str(e) or "differs" in str(e), f"order message: {e}")
        check(not os.path.exists(order_path + ".npz"), "order: target written")
        leftovers = [f for f in os.listdir(outdir) if f.endswith(".psv-tmp")]
        check(not leftovers, f"temporary files left: {leftovers}")

    # A rank whose arrays changed shape since its manifest: INVALID_ARG from the write.
    fns = _collective._functions()
    a = np.arange(12, dtype=np.float32)
    saver = ps.ParallelSaver(w=a)
    changed = ps.ParallelSaver(w=a.reshape(3, 4))
    import ctypes

    buf = _collective._BufferP()
    fns.psv_saver_manifest(saver._handle, ctypes.byref(buf))
    blob = _collective.take_buffer(buf)
    ptrs, lens, keep = _collective._blob_array([blob])
    handle = _collective._CollectiveP()
    shape_dir = os.path.join(outdir, f"shape-{rank}")  # not the shared directory: no races
    os.makedirs(shape_dir, exist_ok=True)
    fns.psv_collective_new(os.path.join(shape_dir, "s").encode(), ptrs, lens, 1, 0, None, ctypes.byref(handle))
    fns.psv_collective_create(handle)
    try:
        fns.psv_collective_write(handle, changed._handle, ctypes.byref(buf))
        check(False, "a changed shape was written")
    except ps.PsvError as e:
        check(e.status_name == "PSV_ERR_INVALID_ARG" and '"w"' in e.message, f"shape: {e}")
    temp = fns.psv_collective_temp_path(handle).decode()
    check(os.path.exists(temp), "shape: the temporary file is missing")
    fns.psv_collective_abort(handle)
    check(not os.path.exists(temp), "abort left the temporary file")
    fns.psv_collective_free(handle)
    saver.close()
    changed.close()
    del keep

    all_errors = comm.gather(errors, root=0)
    if rank == 0:
        flat = [e for errs in all_errors for e in errs]
        with open(os.path.join(outdir, f"result-{size}.json"), "w") as f:
            json.dump({"ok": not flat, "errors": flat, "files": files}, f)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        # A broken test must not leave the other ranks waiting in a collective.
        import traceback

        from mpi4py import MPI

        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
