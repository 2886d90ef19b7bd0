"""OS failure paths of a save: each must return PSV_ERR_IO with the path and the OS error text
in the message, remove its temporary file, and leave an existing target byte-identical.

  file too large   RLIMIT_FSIZE = 1 MiB (SIGXFSZ ignored) in a child, 10 MiB save  -> EFBIG
  permission       a root-owned 0755 directory, saved into by a child that dropped to
                   uid/gid 65534 (nobody) after loading libpsv; when not root, chmod 0555
                   (as root, chmod alone stops nothing: CAP_DAC_OVERRIDE)            -> EACCES
  read-only fs     a tmpfs remounted read-only (root only; skipped if mount fails)   -> EROFS
  not a directory  a regular file used as the target's directory                    -> ENOTDIR
  missing dir      the target's directory does not exist                            -> ENOENT
  target is a dir  the whole file is written, then the rename over a non-empty
                   directory fails: the complete temporary file must still go       -> EISDIR
  disk full        a 2 MiB tmpfs holding the old target, 10 MiB save, with and
                   without fsync (root only; skipped if mount fails)                 -> ENOSPC
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from robust_helpers import listing, mount_tmpfs, remount, run_child, temp_files, umount

PSV_ERR_IO = 5
MiB = 1 << 20


def write_old_target(psv, target: Path) -> bytes:
    """Saves the 'old' version with libpsv and returns its bytes."""
    old = {"old": np.arange(64 * 1024, dtype=np.int32) * 3, "tag": np.array([1, 2, 3], np.uint8)}
    with psv.ParallelSaver(old) as s:
        s.save(target)
    return target.read_bytes()


def snapshot(target: Path):
    st = target.stat()
    return (target.read_bytes(), st.st_ino, st.st_size, st.st_mtime_ns)


def assert_io_error(status: int, name: str, message: str, err: int, target: Path) -> None:
    assert status == PSV_ERR_IO, f"expected PSV_ERR_IO, got {status} {name}: {message}"
    text = os.strerror(err)
    assert text in message, f"OS text {text!r} missing from {message!r}"
    assert f"os error {err}" in message, f"errno {err} missing from {message!r}"
    assert str(target.parent) in message, f"path {target.parent} missing from {message!r}"


def assert_untouched(target: Path, before) -> None:
    assert snapshot(target) == before, f"{target} was modified by a failed save"
    assert np.load(target)["old"][5] == 15


def save_in_process(psv, target: Path, mb: int = 10, fsync: bool = False):
    arrays = {"data": np.arange(mb * MiB // 8, dtype=np.uint64), "x": np.float64(2.0)}
    with psv.ParallelSaver(arrays) as s:
        with pytest.raises(psv.PsvError) as info:
            s.save(target, fsync=fsync)
        # The saver stays usable after a failure (psv.h): saving elsewhere works.
    return info.value


@pytest.fixture()
def mounted(tmp_path):
    """A directory to mount a tmpfs on; unmounted afterwards."""
    d = tmp_path / "mnt"
    d.mkdir()
    state = {"mounted": False}
    yield d, state
    if state["mounted"]:
        umount(d)


def test_file_size_limit(psv, tmp_path):
    target = tmp_path / "model.npz"
    write_old_target(psv, target)
    other = tmp_path / "other"
    other.mkdir()
    before = snapshot(target)
    names = listing(tmp_path)
    r = run_child(["save", str(target), "--mb", "10", "--fsize", str(MiB),
                   "--retry-target", str(other / "retry.npz")])
    r.expect_clean_exit()  # SIGXFSZ ignored: no signal death
    rec = r.record("save")
    assert_io_error(rec["status"], rec["name"], rec["message"], errno.EFBIG, target)
    assert_untouched(target, before)
    assert listing(tmp_path) == names, "the failed save left files behind"
    assert temp_files(tmp_path) == []
    # With the limit lifted, the same saver saves fine in the same process.
    retry = r.record("save-retry")
    assert retry["status"] == 0, retry
    z = np.load(other / "retry.npz")
    assert z["data"].nbytes == 10 * MiB and z["data"][12345] == np.uint64(12345 * 2654435761)
    assert temp_files(other) == []


def test_permission_denied(psv):
    d = Path(tempfile.mkdtemp(prefix="psv-eacces-"))
    try:
        os.chmod(d, 0o755)
        target = d / "model.npz"
        write_old_target(psv, target)
        before = snapshot(target)
        names = listing(d)
        if os.geteuid() == 0:
            # Root ignores permission bits; a child drops to nobody after loading libpsv.
            r = run_child(["save", str(target), "--mb", "10", "--drop-privileges"])
            if r.returncode != 0 and "Operation not permitted" in r.stderr:
                pytest.skip(f"cannot drop privileges here (no CAP_SETUID): {r.stderr[-300:]}")
            r.expect_clean_exit()
            rec = r.record("save")
            assert rec["uid"] == 65534, rec
            status, name, message = rec["status"], rec["name"], rec["message"]
        else:
            os.chmod(d, 0o555)
            if os.access(d, os.W_OK):
                pytest.skip("chmod 0555 does not stop this user from writing")
            exc = save_in_process(psv, target)
            status, name, message = exc.status, exc.status_name, exc.message
        assert_io_error(status, name, message, errno.EACCES, target)
        assert_untouched(target, before)
        assert listing(d) == names
    finally:
        os.chmod(d, 0o755)
        shutil.rmtree(d, ignore_errors=True)


def test_read_only_filesystem(psv, mounted):
    d, state = mounted
    why = mount_tmpfs(d, "4m")
    if why:
        pytest.skip(why)
    state["mounted"] = True
    target = d / "model.npz"
    write_old_target(psv, target)
    remount(d, "ro")
    before = snapshot(target)
    names = listing(d)
    exc = save_in_process(psv, target)
    assert_io_error(exc.status, exc.status_name, exc.message, errno.EROFS, target)
    assert_untouched(target, before)
    assert listing(d) == names


def test_file_used_as_directory(psv, tmp_path):
    not_dir = tmp_path / "plainfile"
    not_dir.write_bytes(b"not a directory")
    target = not_dir / "model.npz"
    names = listing(tmp_path)
    exc = save_in_process(psv, target)
    assert_io_error(exc.status, exc.status_name, exc.message, errno.ENOTDIR, target)
    assert not_dir.read_bytes() == b"not a directory"
    assert listing(tmp_path) == names


def test_missing_directory(psv, tmp_path):
    target = tmp_path / "missing" / "model.npz"
    names = listing(tmp_path)
    exc = save_in_process(psv, target)
    assert_io_error(exc.status, exc.status_name, exc.message, errno.ENOENT, target)
    assert not (tmp_path / "missing").exists(), "the save created the missing directory"
    assert listing(tmp_path) == names


@pytest.mark.parametrize("fsync", [False, True], ids=["no-fsync", "fsync"])
def test_target_is_a_directory(psv, tmp_path, fsync):
    target = tmp_path / "model.npz"
    target.mkdir()
    (target / "inside").write_bytes(b"keep me")
    names = listing(tmp_path)
    exc = save_in_process(psv, target, mb=10, fsync=fsync)
    assert_io_error(exc.status, exc.status_name, exc.message, errno.EISDIR, target)
    assert "rename" in exc.message, exc.message
    assert listing(tmp_path) == names, "the failed rename left the temporary file behind"
    assert listing(target) == ["inside"] and (target / "inside").read_bytes() == b"keep me"


@pytest.mark.parametrize("fsync", [False, True], ids=["no-fsync", "fsync"])
def test_disk_full(psv, mounted, fsync):
    d, state = mounted
    why = mount_tmpfs(d, "2m")
    if why:
        pytest.skip(why)
    state["mounted"] = True
    target = d / "model.npz"
    write_old_target(psv, target)
    before = snapshot(target)
    names = listing(d)
    free_before = os.statvfs(d).f_bfree
    exc = save_in_process(psv, target, mb=10, fsync=fsync)
    assert_io_error(exc.status, exc.status_name, exc.message, errno.ENOSPC, target)
    assert_untouched(target, before)
    assert listing(d) == names, "the failed save left files behind"
    # The temporary file's blocks were really released (unlinked and closed).
    assert os.statvfs(d).f_bfree == free_before
    # And a save that fits succeeds in the space that was given back.
    small = {"data": np.arange(MiB // 8, dtype=np.uint64)}
    with psv.ParallelSaver(small) as s:
        s.save(target, fsync=fsync)
    assert np.array_equal(np.load(target)["data"], small["data"])
    assert temp_files(d) == []
