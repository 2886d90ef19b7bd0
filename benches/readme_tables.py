"""Prints the README's performance tables from a `make bench` results file.

Usage: python benches/readme_tables.py [bench/results.json] [--main]

Default: the "Against the other tools" tables: the speed of psv and of each peer per workload
and operation (GB/s; us per array for W3), then every ratio of issue 18 with its target, exactly
as `compare.py` computed them in the same rounds (`peer_ratios`). With --main: the main table
(psv, numpy, safetensors and the machine's limits).
"""

import json
import sys
from typing import Any, Dict, List, Optional

#: Columns of the speed table: (header, case id, ops it has): the ids `compare.py` gives its
#: cases in results.json.
COLUMNS = [
    ("psv", "psv", ("save", "restore")),
    ("pickle 5", "pickle5", ("save", "restore")),
    ("h5py", "h5py", ("save", "restore")),
    ("zarr v3", "zarr", ("save", "restore")),
    ("psv dir", "psv_dir", ("save", "restore")),
    ("np.save / np.load per file", "numpy_dir", ("save", "restore")),
    ("psv fsync=True", "psv_durable", ("save",)),
    ("np.savez + fsync", "numpy_durable", ("save",)),
    ("durable write limit", "limit_durable", ("save",)),
]


def find(cases: List[Dict[str, Any]], op: str, name: str) -> Optional[Dict[str, Any]]:
    """The case `name` of `op`, if the run has it."""
    return next((c for c in cases if c["op"] == op and c["name"] == name), None)


def cell(case: Optional[Dict[str, Any]], per_array: bool) -> str:
    if case is None:
        return ""
    if per_array:
        return f"{case['us_per_array']:.2f}"
    return f"{case['gbps']:.2f}"


#: The main table: (header, [(op, case id), ...]); several ids in one cell are joined by " / ".
MAIN_COLUMNS = [
    ("psv save", [("save", "psv")]),
    ("numpy", [("save", "numpy")]),
    ("safetensors", [("save", "safetensors")]),
    ("write limit (fallocate + write)", [("save", "limit_write_falloc")]),
    ("plain write, 1 / 2 threads", [("save", "limit_write_1t"), ("save", "limit_write_2t")]),
    ("psv restore (copy, CRC)", [("restore", "psv")]),
    ("psv mmap (every byte read)", [("restore", "psv_mmap")]),
    ("np.load", [("restore", "numpy")]),
    ("safetensors", [("restore", "safetensors")]),
    ("read limit", [("restore", "limit_read_2t")]),
]


def main_table(results: Dict[str, Any]) -> None:
    print("| workload | " + " | ".join(h for h, _ in MAIN_COLUMNS) + " |")
    print("|---|" + "---:|" * len(MAIN_COLUMNS))
    for wl, data in results["workloads"].items():
        per_array = data["arrays"] >= 10000
        cells = []
        for _, ids in MAIN_COLUMNS:
            found = [find(data["cases"], op, name) for op, name in ids]
            if per_array and any(name.startswith("limit") for _, name in ids):
                found = []
            cells.append(" / ".join(cell(c, per_array) for c in found if c is not None))
        print(f"| {wl}{' (us/array)' if per_array else ''} | " + " | ".join(cells) + " |")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    path = args[0] if args else "bench/results.json"
    with open(path) as f:
        results = json.load(f)
    if "--main" in sys.argv:
        main_table(results)
        return
    head = ["workload", "op"] + [header for header, _, _ in COLUMNS]
    print("| " + " | ".join(head) + " |")
    print("|---|---|" + "---:|" * len(COLUMNS))
    for wl, data in results["workloads"].items():
        per_array = data["arrays"] >= 10000
        for op in ("save", "restore"):
            cells = [cell(find(data["cases"], op, name) if op in ops else None, per_array) for _, name, ops in COLUMNS]
            unit = " (us/array)" if per_array else ""
            print(f"| {wl}{unit} | {op} | " + " | ".join(cells) + " |")
    print()
    print("| workload | op | ratio | value | target |")
    print("|---|---|---|---:|---:|")
    for wl, data in results["workloads"].items():
        for r in data.get("peer_ratios", []):
            met = "met" if r["met"] else "**not met**"
            print(f"| {wl} | {r['op']} | {r['what']} | {r['ratio']:.2f} | >= {r['target']:.2f} {met} |")


if __name__ == "__main__":
    main()
