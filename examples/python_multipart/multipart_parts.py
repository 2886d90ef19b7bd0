"""Cut a save into object-store multipart parts, render them in any order, reassemble.

An object store takes a large object as parts (S3: 5 MiB to 5 GiB each, at most 10,000, any
order, from any host) and joins them when the upload completes. ``ParallelSaver.prepare()``
plans the archive and computes every CRC once, in parallel; after that each part is rendered on
its own (``render_into(offset, buf)``, threads in parallel, the GIL released), with no local
temporary file and no whole-archive buffer: memory is one part per worker.

``upload_part`` is the seam: a real upload calls the store's API there (boto3's
``s3.upload_part(Bucket=..., Key=..., UploadId=..., PartNumber=n, Body=data)``, then
``complete_multipart_upload`` with the ETags). We cannot reach an object store here, so the
default keeps the parts in a dict, and ``main`` checks that joining them gives exactly the bytes
of ``save(path)`` and that ``numpy.load`` reads the result.

Run: ``python examples/python_multipart/multipart_parts.py``
"""

from __future__ import annotations

import io
import os
import random
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict

import numpy as np

import parallel_saver as psv

#: S3's smallest part (every part but the last must be at least this long).
MIN_PART = 5 << 20


def upload_parts(
    prepared: psv.PreparedSave,
    upload_part: Callable[[int, memoryview], None],
    part_size: int = MIN_PART,
    workers: int = 4,
) -> int:
    """Render every part of ``prepared`` and hand it to ``upload_part(part_number, data)``
    (numbers from 1, as S3 counts), ``workers`` at a time, in shuffled order to show that any
    order works. Returns the number of parts."""
    parts = prepared.parts(part_size)
    if len(parts) > 10_000:
        raise ValueError(f"{len(parts)} parts: S3 allows 10,000; use a larger part_size")
    order = list(enumerate(parts, start=1))
    random.Random(1).shuffle(order)

    def one(item) -> None:
        number, (offset, length) = item
        buf = bytearray(length)
        prepared.render_into(offset, buf)
        upload_part(number, memoryview(buf))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, order))
    return len(parts)


def main() -> int:
    rng = np.random.default_rng(3)
    arrays = {f"layer{i}.weight": rng.standard_normal((512, 1024 + i), dtype=np.float32) for i in range(6)}
    arrays["step"] = np.array(1234)
    saver = psv.ParallelSaver(arrays)
    bucket: Dict[int, bytes] = {}

    def upload_part(number: int, data: memoryview) -> None:  # the seam: an object store's API
        bucket[number] = bytes(data)

    with saver.prepare() as prepared:
        n = upload_parts(prepared, upload_part)
        size = len(prepared)
    joined = b"".join(bucket[i] for i in range(1, n + 1))  # what "complete upload" does

    with tempfile.TemporaryDirectory() as tmp:
        reference = saver.save(os.path.join(tmp, "ref.npz"))
        with open(reference, "rb") as f:
            same = f.read() == joined
    with np.load(io.BytesIO(joined)) as z:
        loaded = all(np.array_equal(z[k], v) for k, v in arrays.items())
    print(f"{size} bytes in {n} parts of {MIN_PART >> 20} MiB: identical to save(path): {same}; np.load: {loaded}")
    return 0 if same and loaded else 1


if __name__ == "__main__":
    sys.exit(main())
