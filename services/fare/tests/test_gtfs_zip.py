"""A feed zip that zipfile cannot read (corrupt data, an encrypted member, an unknown
compression method, sizes that lie) is INVALID_ARGUMENT naming the file, never INTERNAL."""

from __future__ import annotations

import io
import struct
import zipfile

import grpc
import pytest
from tiket.fare.v1 import fare_pb2

from services.fare import gtfs
from services.fare.tests.helpers import feed_zip, row_counts, seed

MEMBER = "fare_products.txt"
LOCAL_HEADER = b"PK\x03\x04"
CENTRAL_HEADER = b"PK\x01\x02"


def _deflated() -> bytes:
    """The fixture feed, compressed (so its members have data that can be corrupted)."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(feed_zip())) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    return out.getvalue()


def _patched(data: bytes, patch) -> bytes:
    """`data` with `patch(buffer, local_header_offset, central_header_offset)` applied to
    MEMBER's headers."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(MEMBER)
    buffer = bytearray(data)
    central = buffer.index(CENTRAL_HEADER)
    while buffer[central + 46 : central + 46 + len(MEMBER)] != MEMBER.encode():
        central = buffer.index(CENTRAL_HEADER, central + 4)
    patch(buffer, info.header_offset, central)
    return bytes(buffer)


def corrupt_data() -> bytes:
    def patch(buffer: bytearray, local: int, _central: int) -> None:
        name_length, extra_length = struct.unpack_from("<HH", buffer, local + 26)
        start = local + 30 + name_length + extra_length
        for i in range(start, start + 20):
            buffer[i] ^= 0x5A

    return _patched(_deflated(), patch)


def encrypted() -> bytes:
    def patch(buffer: bytearray, local: int, central: int) -> None:
        buffer[local + 6] |= 0x01  # general purpose flag bit 0: encrypted
        buffer[central + 8] |= 0x01

    return _patched(_deflated(), patch)


def unknown_compression() -> bytes:
    def patch(buffer: bytearray, local: int, central: int) -> None:
        struct.pack_into("<H", buffer, local + 8, 97)  # WavPack: zipfile cannot decompress
        struct.pack_into("<H", buffer, central + 10, 97)

    return _patched(_deflated(), patch)


def lying_size() -> bytes:
    """Declares a small member that inflates to more than the limit (a zip bomb): read only
    up to its declared size, it fails its checksum."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(feed_zip())) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == MEMBER:
                data += b"#" * (gtfs.MAX_FILE_BYTES + 1)
            target.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return _patched(
        out.getvalue(),
        lambda buffer, local, central: (
            struct.pack_into("<I", buffer, local + 22, 100),
            struct.pack_into("<I", buffer, central + 24, 100),
        ),
    )


BROKEN = {
    "corrupt data": (corrupt_data, "cannot be read from the zip"),
    "encrypted member": (encrypted, "encrypted"),
    "unknown compression": (unknown_compression, "compression method"),
    "size that lies": (lying_size, "Bad CRC-32"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_unreadable_members_are_a_gtfs_error_naming_the_file(case: str) -> None:
    make, words = BROKEN[case]
    with pytest.raises(gtfs.GtfsError) as caught:
        gtfs.read_feed(make())
    assert caught.value.file == MEMBER
    assert words in str(caught.value)


@pytest.mark.parametrize("case", BROKEN)
async def test_the_import_answers_invalid_argument_and_writes_nothing(fares, db, case: str):
    await seed(fares)
    before = await row_counts(db)
    make, words = BROKEN[case]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fares.call("ImportGtfsFares", fare_pb2.ImportGtfsFaresRequest(feed=make()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert MEMBER in caught.value.details()
    assert words in caught.value.details()
    assert await row_counts(db) == before
