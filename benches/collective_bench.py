"""The collective-save row of `make bench` (issue 15), called by benches/compare.py.

4 MPI ranks (examples/mpi/psv_mpi.c under ``mpirun --oversubscribe -np 4``, 1 psv thread per
rank) write ONE checkpoint of 4 x 64 MiB uint32 arrays per rank (1 GiB in all; --quick: 4 x
1 MiB per rank), against one process saving the same 1 GiB (16 arrays of the same sizes) with
``ParallelSaver(**arrays).save(path)`` on all cores. Timed for the collective: from the
manifest exchange to the rename (psv_mpi's "total_s"; the arrays already exist, as in a
training job); its per-rank write times and rank 0's commit time are reported too. Timed for
the single save: construction of the saver to the rename. Before every run: its output deleted,
os.sync(), and compare.py's touch_and_free of the file's size (the page cache the run fills). The two alternate; median of the runs.

The point on one machine: the page cache is the shared limit, so the collective should cost
almost nothing over the single save (issue 15 asks >= 0.85x).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

RANKS = 4
ARRAYS_PER_RANK = 4

ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
}


def _rm(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def collective_row(
    out: Path, quick: bool, runs: int, log: Callable[[str], None], touch_and_free: Callable[[int], None]
) -> Dict[str, Any]:
    """Runs the comparison; returns the row (or {"skipped": why}). ``touch_and_free(n)`` is
    compare.py's: it re-backs n bytes of freed memory before each run (on these VMs the first
    touch of memory the host took back costs ~20x: a 1 GiB save right after deleting the
    previous 1 GiB file measured 9-17 s instead of 0.6-1 s without it)."""
    exe = os.environ.get("PSV_MPI_EXAMPLE")
    mpirun = shutil.which("mpirun")
    if not exe or not Path(exe).exists() or not mpirun:
        return {"skipped": "no mpirun or PSV_MPI_EXAMPLE (make bench builds examples/mpi/psv_mpi.c)"}
    import numpy as np

    import parallel_saver as ps

    kib = 1024 if quick else 65536  # per array: kib KiB (+ a few elements)
    target = out / "collective"
    single = out / "collective_single"
    # The same arrays as psv_mpi (sizes and values): the two files must be byte-identical.
    arrays = {}
    for r in range(RANKS):
        for i in range(ARRAYS_PER_RANK):
            n = kib * 256 + 13 * i + 7 * r
            j = np.arange(n, dtype=np.uint32)
            arrays[f"rank{r}/a{i}"] = j * np.uint32(31) + np.uint32(i * 1000003 + r * 7)
    nbytes = sum(a.nbytes for a in arrays.values())
    cmd = ["timeout", "-s", "KILL", "900", mpirun, "--oversubscribe", "-np", str(RANKS), exe, str(target),
           "--arrays", str(ARRAYS_PER_RANK), "--kib", str(kib), "--threads", "1"]
    coll: List[Dict[str, Any]] = []
    singles: List[float] = []
    for k in range(runs + 1):  # the first round is a warm-up
        for which in ("collective", "single") if k % 2 == 0 else ("single", "collective"):
            _rm((target if which == "collective" else single).with_suffix(".npz"))
            os.sync()
            touch_and_free(nbytes + (64 << 20))  # the file's page cache
            if which == "collective":
                p = subprocess.run(cmd, env=dict(os.environ, **ENV), capture_output=True, text=True)
                if p.returncode != 0:
                    raise RuntimeError(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
                stats = json.loads(p.stdout.strip().splitlines()[-1])
                if k > 0:
                    coll.append(stats)
            else:
                t = time.perf_counter()
                ps.ParallelSaver(**arrays).save(single)
                if k > 0:
                    singles.append(time.perf_counter() - t)
        if k == 0:
            same = target.with_suffix(".npz").read_bytes() == single.with_suffix(".npz").read_bytes()
            if not same:
                raise RuntimeError("the collective file differs from the single save of the same arrays")
            log("collective: warm-up done, files byte-identical")
    _rm(target.with_suffix(".npz"))
    _rm(single.with_suffix(".npz"))
    total = statistics.median(s["total_s"] for s in coll)
    one = statistics.median(singles)
    return {
        "description": f"{RANKS} MPI ranks x {ARRAYS_PER_RANK} x {kib // 1024} MiB uint32 into one .npz "
                       f"({nbytes / (1 << 20):.0f} MiB) vs one process saving the same arrays",
        "ranks": RANKS,
        "bytes": nbytes,
        "runs": len(coll),
        "collective_s": total,
        "collective_gbps": nbytes / total / 1e9,
        "single_s": one,
        "single_gbps": nbytes / one / 1e9,
        "ratio": one / total,
        "per_rank_write_s": [statistics.median(s["write_s"][r] for s in coll) for r in range(RANKS)],
        "commit_s": statistics.median(s["commit_s"] for s in coll),
        "command": " ".join(cmd),
    }


def markdown(row: Dict[str, Any]) -> List[str]:
    """The row as markdown lines."""
    if "skipped" in row:
        return [f"Collective save: skipped ({row['skipped']})."]
    writes = ", ".join(f"{w * 1e3:.0f}" for w in row["per_rank_write_s"])
    return [
        f"Collective save (issue 15): {row['description']}; median of {row['runs']}.",
        "",
        "| case | s | GB/s | vs single save | per-rank write ms | commit ms |",
        "|---|---:|---:|---:|---|---:|",
        f"| {row['ranks']} ranks, one file (psv_collective_*) | {row['collective_s']:.3f} | {row['collective_gbps']:.2f} | "
        f"{row['ratio']:.2f}x | {writes} | {row['commit_s'] * 1e3:.2f} |",
        f"| 1 process, psv save | {row['single_s']:.3f} | {row['single_gbps']:.2f} | 1.00x | | |",
    ]
