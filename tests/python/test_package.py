"""The installed package: where it and libpsv come from, the lookup order and its error, the
checked prototypes, the command line (`python -m parallel_saver`, `psv-py`) and `cp`."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from parallel_saver import _binding

INSTALLED = os.environ.get("PSV_EXPECT_INSTALLED") == "1"


@pytest.mark.skipif(not INSTALLED, reason="only when testing the installed wheel (make test-wheel)")
def test_the_installed_wheel_is_what_runs(psv):
    """`make test-wheel` runs these tests against the wheel in a fresh venv: the package and
    its bundled library come from that venv, not from the source tree."""
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    package = Path(psv.__file__).resolve().parent
    assert package.parent == purelib, package
    assert "PSV_LIBRARY" not in os.environ
    assert psv.library_path() == package / _binding.BUNDLED_NAME
    assert (package / "py.typed").is_file()
    from importlib.metadata import version as dist_version

    assert dist_version("parallel-saver") == psv.version(), "wheel and library versions differ"


def test_library_path_is_the_loaded_file(psv):
    path = psv.library_path()
    assert path.is_absolute() and path.is_file(), path
    lib = ctypes.CDLL(str(path))
    assert lib.psv_abi_version() == psv.abi_version()


def test_psv_library_is_the_only_place_tried_when_set(monkeypatch, tmp_path):
    bogus = tmp_path / "nope" / "libpsv.so"
    monkeypatch.setenv("PSV_LIBRARY", str(bogus))
    with pytest.raises(OSError) as ei:
        _binding._load()
    msg = str(ei.value)
    assert f"$PSV_LIBRARY: {bogus}" in msg
    assert "not tried when PSV_LIBRARY is set" in msg
    assert "bundled" in msg and "system" in msg


def test_the_error_names_every_place_tried(monkeypatch):
    monkeypatch.delenv("PSV_LIBRARY", raising=False)
    monkeypatch.setattr(_binding, "BUNDLED_NAME", "libpsv-not-bundled.so")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(OSError) as ei:
        _binding._load()
    msg = str(ei.value)
    assert "bundled with the package: not found" in msg
    assert "system (ctypes.util.find_library('psv')): not found" in msg
    assert msg.index("bundled") < msg.index("system"), "in lookup order"


def test_bundled_then_system(psv, monkeypatch):
    """Without PSV_LIBRARY the bundled library wins when it exists; else the system's."""
    monkeypatch.delenv("PSV_LIBRARY", raising=False)
    real = str(psv.library_path())
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: real if name == "psv" else None)
    bundled = Path(_binding.__file__).resolve().parent / _binding.BUNDLED_NAME
    lib, path = _binding._load()
    assert path == (str(bundled) if bundled.exists() else real)
    monkeypatch.setattr(_binding, "BUNDLED_NAME", "libpsv-not-bundled.so")
    lib, path = _binding._load()
    assert path == real and lib.psv_version


def test_checked_functions_raise_and_raw_ones_return_codes(psv):
    raw = psv._lib()
    assert raw.psv_saver_save(None, b"x.npz", None) == psv.PSV_ERR_NULL_ARG
    with pytest.raises(psv.PsvError) as ei:
        _binding._functions().psv_saver_save(None, b"x.npz", None)
    assert ei.value.status == psv.PSV_ERR_NULL_ARG
    assert ei.value.function == "psv_saver_save"
    assert ei.value.message, "the library's message is attached"
    # Non-status functions are not checked.
    assert _binding._functions().psv_archive_count(None) == 0


def _run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


def test_console_script(psv, tmp_path):
    script = Path(sys.executable).parent / "psv-py"
    if not script.exists():
        pytest.skip("psv-py is not installed next to this interpreter (not a venv install)")
    path = psv.ParallelSaver(a=np.arange(3, dtype="<i4")).save(tmp_path / "s")
    r = _run([str(script), "ls", str(path)])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "a\t<i4\t(3,)\t12\n"
    r = _run([str(script), "--help"])
    assert r.returncode == 0 and r.stdout.startswith("usage: psv-py"), r.stdout


def test_cli_cp_rewrites_numpy_files_as_psv_files(psv, tmp_path):
    src = tmp_path / "np.npz"
    arrays = {
        "w": np.arange(1000, dtype="<f4").reshape(10, 100),
        "be": np.arange(7, dtype=">i2"),
        "F": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    }
    np.savez_compressed(src, **arrays)
    r = _run([sys.executable, "-m", "parallel_saver", "cp", str(src), str(tmp_path / "out"), "--compress", "0"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"copied {src} -> {tmp_path / 'out.npz'}: 3 arrays"), r.stdout
    got = psv.restore(tmp_path / "out.npz")
    assert list(got) == list(arrays)
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape and np.array_equal(got[k], a), k
        assert got[k].flags.f_contiguous == a.flags.f_contiguous, k
    # psv's file is stored with 64-aligned data: restorable as a mapping.
    mapped = psv.restore(tmp_path / "out.npz", mmap=True)
    assert mapped["w"].ctypes.data % 64 == 0
    # Bad input: exit 1 with the library's message naming the file.
    (tmp_path / "text.npz").write_text("hello")
    r = _run([sys.executable, "-m", "parallel_saver", "cp", str(tmp_path / "text.npz"), str(tmp_path / "o2")])
    assert r.returncode == 1 and "not a zip/.npz file" in r.stderr, r.stderr
    r = _run([sys.executable, "-m", "parallel_saver", "cp", str(src), str(tmp_path / "o3"), "--compress", "12"])
    assert r.returncode == 2 and "compress" in r.stderr, r.stderr


def test_messages_name_no_rust_internals(psv, tmp_path):
    """What a user sees for a truncated file, a text file and a missing directory."""
    path = psv.ParallelSaver(a=np.arange(1000)).save(tmp_path / "t")
    data = Path(path).read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_text("just text\n")
    for name, want in [("cut", "truncated: the end of the archive is missing"), ("text", "not a zip/.npz file")]:
        with pytest.raises(psv.PsvError) as ei:
            psv.restore(tmp_path / f"{name}.npz")
        assert want in ei.value.message and "zip::" not in ei.value.message, ei.value.message
        assert "EOCD" not in ei.value.message
    with pytest.raises(psv.PsvError) as ei:
        psv.ParallelSaver(a=np.arange(3)).save(tmp_path / "missing" / "x")
    assert f"directory {tmp_path / 'missing'} does not exist" in ei.value.message
