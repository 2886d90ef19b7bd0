"""Python half of `make demo`: libpsv vs numpy.savez / numpy.load on ~1 GiB of arrays.

Generates a few large float32/float64 arrays plus a few hundred small ones
(deterministic data, memory pre-touched), then for each tool runs, with
`os.sync()` before every timed step:

    save:     psv ParallelSaver(...).save()   vs  numpy.savez()
    restore:  psv restore() (every key)       vs  numpy.load() and materialise every key

It verifies that psv's restored arrays equal the originals exactly (bytes,
dtype, shape, order) and that numpy can read psv's file, then prints GB/s for
each and the ratio psv/numpy.  Files go to a temporary directory under the
repo's build/ directory (removed at the end).

Usage: demo.py [--mb 1024] [--small 300] [--repeat 2] [--threads N] [--keep]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

import parallel_saver as psv  # the installed package: `pip install .` (or `make demo`)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GB = 1e9


def make_arrays(total_mb: int, n_small: int) -> Dict[str, np.ndarray]:
    """~total_mb MiB: 4 large arrays (~85%) + n_small small ones of mixed dtypes/shapes."""
    rng = np.random.default_rng(12345)
    total = total_mb * 2**20
    large_budget = int(total * 0.85)
    small_budget = total - large_budget
    arrays: Dict[str, np.ndarray] = {}
    # large: two float32 (2-D) and two float64 (1-D / 2-D); one Fortran-ordered
    shares = [("weights_f32", "<f4", 0.35), ("activations_f32", "<f4", 0.2),
              ("embeddings_f64", "<f8", 0.3), ("grid_f64_F", "<f8", 0.15)]
    for name, dt, share in shares:
        itemsize = np.dtype(dt).itemsize
        n = int(large_budget * share) // itemsize
        cols = 1024
        rows = max(1, n // cols)
        a = np.empty((rows, cols), dtype=dt, order="F" if name.endswith("_F") else "C")
        # deterministic, cheap, non-constant data; writing it pre-touches every page
        flat = a.reshape(-1, order="A")
        flat[:] = np.arange(flat.size, dtype=dt)
        flat *= np.asarray(1.0 / 7.0, dtype=dt)
        arrays[name] = a
    # small: mixed dtypes and shapes, sizes 256 B .. ~1 MiB
    dtypes = ["<f4", "<f8", "<i4", "<i8", "<u1", "<i2", "<c8", "|b1"]
    avg = max(256, small_budget // max(1, n_small))
    for i in range(n_small):
        dt = np.dtype(dtypes[i % len(dtypes)])
        nbytes = int(rng.integers(avg // 4, avg * 7 // 4))
        n = max(1, nbytes // dt.itemsize)
        if dt.kind == "b":
            a = rng.integers(0, 2, n).astype(bool)
        elif dt.kind in "iu":
            a = rng.integers(0, 100, n).astype(dt)
        elif dt.kind == "c":
            a = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt)
        else:
            a = rng.standard_normal(n).astype(dt)
        if i % 3 == 0 and n % 4 == 0:
            a = a.reshape(4, n // 4)
        arrays[f"small_{i:03d}"] = a
    return arrays


def timed(fn: Callable[[], object]) -> Tuple[float, object]:
    """Run fn once after os.sync() (so earlier dirty pages are not charged to it)."""
    gc.collect()
    os.sync()
    t0 = time.perf_counter()
    res = fn()
    return time.perf_counter() - t0, res


def best_of(repeat: int, fn: Callable[[], object], setup: Callable[[], None] = lambda: None) -> float:
    """Best wall time of `repeat` runs; setup() runs untimed before each."""
    best = float("inf")
    for _ in range(repeat):
        setup()
        t, res = timed(fn)
        best = min(best, t)
        del res
    return best


def unlink(path: Path) -> Callable[[], None]:
    """Setup step for a save: remove the previous output, so every run writes a new file
    (replacing a file makes ext4 start writeback early, which would skew the timings)."""
    return lambda: path.unlink(missing_ok=True)


def numpy_load_all(path: Path) -> Dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Exact equality: dtype, shape, memory order and every byte."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    fa = a.flags.f_contiguous and not a.flags.c_contiguous
    fb = b.flags.f_contiguous and not b.flags.c_contiguous
    if fa != fb:
        return False
    return bool(np.array_equal(np.ravel(a, order="K").view(np.uint8),
                               np.ravel(b, order="K").view(np.uint8)))


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=1024, help="total MiB of array data (default 1024)")
    ap.add_argument("--small", type=int, default=300, help="number of small arrays (default 300)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per step, best is kept (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="psv threads (default: all cores)")
    ap.add_argument("--keep", action="store_true", help="keep the output files")
    args = ap.parse_args(argv)

    print(f"libpsv {psv.version()} from {psv.library_path()}; numpy {np.__version__}; "
          f"{os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    arrays = make_arrays(args.mb, args.small)
    total = sum(a.nbytes for a in arrays.values())
    print(f"generated {len(arrays)} arrays, {total / 2**20:.0f} MiB in {time.perf_counter() - t0:.1f} s")

    build = REPO / "build"
    build.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="demo_py_", dir=build))
    try:
        psv_path = tmp / "psv.npz"
        np_path = tmp / "numpy.npz"

        def psv_save() -> None:
            with psv.ParallelSaver(**arrays) as saver:
                saver.save(psv_path, threads=args.threads)

        def np_save() -> None:
            np.savez(np_path, **arrays)

        t_psv_save = best_of(args.repeat, psv_save, unlink(psv_path))
        t_np_save = best_of(args.repeat, np_save, unlink(np_path))
        t_psv_load = best_of(args.repeat, lambda: psv.restore(psv_path, threads=args.threads))
        t_np_load = best_of(args.repeat, lambda: numpy_load_all(np_path))

        # correctness: psv restore == originals, exactly
        restored = psv.restore(psv_path)
        bad = [k for k, a in arrays.items() if k not in restored or not same(restored[k], a)]
        if list(restored) != list(arrays) or bad:
            print(f"FAIL: psv restore differs from the originals for {bad[:5]}")
            return 1
        misaligned = [k for k, a in restored.items() if a.__array_interface__["data"][0] % 64]
        if misaligned:
            print(f"FAIL: misaligned arrays {misaligned[:5]}")
            return 1
        del restored
        # numpy reads psv's file; psv reads numpy's file
        with np.load(psv_path) as f:
            for k in list(arrays)[:: max(1, len(arrays) // 20)]:
                if not same(f[k], arrays[k]):
                    print(f"FAIL: numpy.load of the psv file differs at {k}")
                    return 1
        from_np = psv.restore(np_path)
        if any(not same(from_np[k], a) for k, a in arrays.items()):
            print("FAIL: psv restore of the numpy file differs")
            return 1
        del from_np
        print("verified: psv restore == originals (bytes, dtype, shape, order); "
              "numpy.load reads the psv file; psv reads the numpy file")

        size_gb = total / GB
        rows = [("save", t_psv_save, t_np_save), ("restore", t_psv_load, t_np_load)]
        print(f"\n{'':8} {'psv GB/s':>10} {'numpy GB/s':>11} {'psv/numpy':>10}   (best of {args.repeat}, "
              f"{size_gb:.2f} GB, page cache)")
        for name, tp, tn in rows:
            print(f"{name:8} {size_gb / tp:10.2f} {size_gb / tn:11.2f} {tn / tp:9.2f}x"
                  f"   psv {tp:.2f} s, numpy {tn:.2f} s")
        print(f"\nfiles: psv {psv_path.stat().st_size / 2**20:.0f} MiB, numpy {np_path.stat().st_size / 2**20:.0f} MiB")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
