"""Helpers of the robustness tests: run `robust_child.py` in a subprocess, list directories,
mount tmpfs file systems."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import parallel_saver

HERE = Path(__file__).resolve().parent
CHILD = HERE / "robust_child.py"


def child_env() -> Dict[str, str]:
    """The environment for child processes: the same libpsv as this process."""
    env = dict(os.environ)
    env["PSV_LIBRARY"] = str(parallel_saver.library_path().resolve())
    return env


def run_child(args: List[str], timeout: float = 60.0) -> "ChildResult":
    """Runs `robust_child.py ARGS` to completion and parses the JSON lines it prints."""
    proc = subprocess.run(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        timeout=timeout,
        text=True,
    )
    return ChildResult(proc)


class ChildResult:
    """A finished child: return code, stderr and the JSON records it printed, in order."""

    def __init__(self, proc: "subprocess.CompletedProcess[str]") -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.records: List[dict] = []
        for line in proc.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                self.records.append(json.loads(line))

    def describe(self) -> str:
        return (
            f"child exited with {self.returncode}"
            f" ({'signal ' + str(-self.returncode) if self.returncode < 0 else 'status'})\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    def expect_clean_exit(self) -> None:
        assert self.returncode == 0, self.describe()

    def record(self, op: str, index: int = 0) -> dict:
        found = [r for r in self.records if r.get("op") == op]
        assert len(found) > index, f"no record #{index} for {op!r}\n{self.describe()}"
        return found[index]


def listing(directory: Path) -> List[str]:
    """Sorted names in a directory (hidden ones included)."""
    return sorted(os.listdir(directory))


def temp_files(directory: Path) -> List[str]:
    """libpsv temporary files (`.<16 hex digits>.psv-tmp`) in a directory."""
    return sorted(n for n in os.listdir(directory) if n.endswith(".psv-tmp"))


def mount_tmpfs(directory: Path, size: str, readonly: bool = False) -> Optional[str]:
    """Mounts a fresh tmpfs of `size` on `directory`; returns None on success, else why not."""
    opts = f"size={size},mode=0755" + (",ro" if readonly else "")
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run mount: {exc}"
    if proc.returncode != 0:
        return (
            f"`mount -t tmpfs -o {opts}` failed (needs root/CAP_SYS_ADMIN): "
            f"{proc.stdout.strip()}"
        )
    return None


def remount(directory: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(directory)], check=True, timeout=30)


def umount(directory: Path) -> None:
    subprocess.run(["umount", str(directory)], check=True, timeout=30)
