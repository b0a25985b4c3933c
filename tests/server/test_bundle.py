"""The streaming zip writer produces a valid archive while holding only what it drains."""

import io
import zipfile

from delineate.bundle import ZipBundle


def test_streamed_bundle_is_a_valid_zip() -> None:
    """Entries written in chunks and drained as we go read back exactly."""
    out = io.BytesIO()
    files = {"70000.zip": b"a" * 100_000, "70007.zip": b"b" * 3}
    bundle = ZipBundle()
    peak = 0
    for name, data in files.items():
        with bundle.entry(name, len(data)) as entry:
            for i in range(0, len(data), 4096):
                entry.write(data[i : i + 4096])
                chunk = bundle.drain()
                peak = max(peak, len(chunk))
                out.write(chunk)
        out.write(bundle.drain())
    out.write(bundle.close())
    archive = zipfile.ZipFile(io.BytesIO(out.getvalue()))
    assert archive.testzip() is None
    assert {n: archive.read(n) for n in archive.namelist()} == files
    assert peak < 8192  # memory stays bounded by the chunk size
