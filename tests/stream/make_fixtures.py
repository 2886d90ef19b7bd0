"""Writes the numpy- and zipfile-made archives that tests/stream_restore.rs streams through a
pipe. Run from the repository root with the test venv's Python (numpy 2.x):

    .venv/bin/python tests/stream/make_fixtures.py

The arrays are rebuilt in tests/stream_restore.rs (`numpy_arrays`): keep both in step.
"""

import io
import os
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def arrays():
    """u8 ramp (1000,), little-endian f8 (10, 20), big-endian i4 (300,), 0-d f4, empty i2,
    Fortran-order u2 (3, 4)."""
    return {
        "ramp": (np.arange(1000) % 251).astype(np.uint8),
        "grid": np.arange(200, dtype="<f8").reshape(10, 20) / 7,
        "big_endian": np.arange(300, dtype=">i4") * -3,
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros(0, dtype=np.int16),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.uint16).reshape(3, 4)),
    }


class Unseekable(io.RawIOBase):
    """A write-only file object without tell/seek: what a pipe looks like to zipfile."""

    def __init__(self):
        self.out = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.out += b
        return len(b)


def main():
    a = arrays()
    np.savez(os.path.join(HERE, "numpy_savez.npz"), **a)
    np.savez_compressed(os.path.join(HERE, "numpy_savez_compressed.npz"), **a)
    # Into an unseekable stream: every member gets a data descriptor (flag bit 3).
    for name, fn in [("numpy_savez_pipe.npz", np.savez),
                     ("numpy_savez_compressed_pipe.npz", np.savez_compressed)]:
        sink = Unseekable()
        fn(sink, **a)
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(bytes(sink.out))
    # zipfile into an unseekable stream, with a stored member that is not an array: its end
    # cannot be found without the central directory.
    sink = Unseekable()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as z:
        with z.open("ramp.npy", "w") as f:
            np.save(f, a["ramp"])
        z.writestr("notes.txt", b"not an array")
    with open(os.path.join(HERE, "zipfile_pipe_stored_text.npz"), "wb") as f:
        f.write(bytes(sink.out))
    # The same with the text member deflated: it ends itself.
    sink = Unseekable()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as z:
        with z.open("ramp.npy", "w") as f:
            np.save(f, a["ramp"])
        z.writestr("notes.txt", b"not an array " * 50, compress_type=zipfile.ZIP_DEFLATED)
    with open(os.path.join(HERE, "zipfile_pipe_deflated_text.npz"), "wb") as f:
        f.write(bytes(sink.out))


if __name__ == "__main__":
    main()
