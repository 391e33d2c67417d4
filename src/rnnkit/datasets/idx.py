"""Read and write IDX files, the format of MNIST and Fashion-MNIST, raw or gzip-compressed.

An IDX file is a 4-byte magic number `0x00 0x00 <type code> <ndim>`, then `ndim` big-endian
uint32 dimensions, then the items in C order, big-endian. A file whose name ends in `.gz` is
gzip-compressed. Every problem is a `DatasetError` whose one-line message names the file.
"""

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from rnnkit.atomic import atomic_write
from rnnkit.datasets.errors import DatasetError

# type code -> big-endian dtype, as in LeCun's description of the format.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (gzip-compressed if its name ends in `.gz`).

    Args:
      path: the file, e.g. `train-images-idx3-ubyte.gz`.

    Returns:
      An array in native byte order with the file's dimensions, e.g. uint8 `[N, 28, 28]` for
      images and uint8 `[N]` for labels.

    Raises:
      DatasetError: bad gzip data, bad magic number, unknown type code, or a byte count that
        does not match the dimensions (truncated or over-long file).
      FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    data = _read_bytes(path)
    dtype, shape, offset = _parse_header(path, data)
    expected = offset + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        what = "x".join(map(str, shape)) + f" {dtype.newbyteorder('=').name}"
        hint = "truncated?" if len(data) < expected else "extra data after the last item?"
        raise DatasetError(
            f"{path}: expected {expected} bytes for {what}, got {len(data)} ({hint})")
    items = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return items.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes `array` as an IDX file, gzip-compressed if `path` ends in `.gz`, atomically.

    Args:
      path: the file to create or replace; it appears only once it is complete.
      array: 1 to 255 dimensions of uint8, int8, int16, int32, float32 or float64.
    """
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DatasetError(
            f"write_idx({path}): array dtype must be one of "
            f"{sorted(d.name for d in _CODES)}, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise DatasetError(f"write_idx({path}): array must have 1 to 255 dimensions, "
                           f"got shape {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    with atomic_write(path) as out:
        if str(path).endswith(".gz"):
            # mtime=0 makes the compressed bytes, and so their checksum, reproducible.
            with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as compressed:
                compressed.write(header + body)
        else:
            out.write(header + body)


def _read_bytes(path: Path) -> bytes:
    """The file's (decompressed) bytes; gzip problems become a DatasetError naming `path`."""
    if not path.name.endswith(".gz"):
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: not a valid gzip file ({e})") from e


def _parse_header(path: Path, data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Checks the magic number and returns (big-endian dtype, shape, offset of the items)."""
    if len(data) < 4 or data[:2] != b"\x00\x00":
        hint = "; it looks gzip-compressed, so name it .gz" if data[:2] == _GZIP_MAGIC else ""
        raise DatasetError(f"{path}: not an IDX file: magic number must start with 0x00 0x00, "
                           f"got {data[:4].hex(' ') or 'an empty file'}{hint}")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _DTYPES)
        raise DatasetError(f"{path}: unknown IDX type code 0x{code:02X} (expected one of {known})")
    if ndim == 0:
        raise DatasetError(f"{path}: IDX header declares 0 dimensions (expected at least 1)")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DatasetError(f"{path}: expected at least {offset} bytes for the header of a "
                           f"{ndim}-dimensional IDX file, got {len(data)} (truncated?)")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    return _DTYPES[code], shape, offset
