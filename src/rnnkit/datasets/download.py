"""Fetch a data file from its mirrors with the standard library, verified by MD5.

The body is streamed to a hidden temporary file in the target folder and renamed to its final
name only once its checksum matched, so an interrupted, truncated or corrupted download never
leaves a file that looks complete.
"""

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from rnnkit.atomic import atomic_write
from rnnkit.datasets.errors import DownloadError

_USER_AGENT = "rnnkit-datasets (urllib)"


class _MirrorFailed(Exception):
    """One mirror could not deliver the file; the message says why."""


def fetch(filename: str, md5: str, mirrors: Sequence[str], folder: str | os.PathLike, *,
          timeout: float = 30.0, chunk_size: int = 1 << 16) -> Path:
    """Downloads `filename` into `folder`, trying each mirror in turn until one delivers it.

    Args:
      filename: the file's name on the mirrors and on disk, e.g. "train-images-idx3-ubyte.gz".
      md5: the expected MD5 of the file, in hex.
      mirrors: base URLs; the file's URL is `mirror + filename` (a missing "/" is added).
      folder: where the file goes; created if needed.
      timeout: seconds to wait for a connection or for the next bytes of the body.
      chunk_size: bytes read at a time.

    Returns:
      The path of the verified file.

    Raises:
      DownloadError: no mirror delivered the file with the right checksum; the message lists
        every URL tried and why it failed.
      OSError: the folder cannot be created or written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            with atomic_write(target) as out:
                _stream(url, out, md5.lower(), timeout, chunk_size)
            return target
        except _MirrorFailed as e:
            failures.append(f"{url} ({e})")
    tried = "; ".join(failures) or "no mirrors given"
    raise DownloadError(f"{filename}: download failed from every mirror: {tried}")


def _stream(url: str, out: BinaryIO, md5: str, timeout: float, chunk_size: int) -> None:
    """Copies the body at `url` into `out`; raises _MirrorFailed on any network problem,
    a short body or a checksum mismatch. Errors writing `out` are local and propagate."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise _MirrorFailed(f"HTTP {e.code} {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:
        raise _MirrorFailed(_reason(e)) from e
    digest, size = hashlib.md5(), 0
    with response:
        expected_size = response.headers.get("Content-Length")
        while True:
            try:
                block = response.read(chunk_size)
            except (OSError, http.client.HTTPException) as e:
                raise _MirrorFailed(f"{_reason(e)} after {size} bytes") from e
            if not block:
                break
            out.write(block)
            digest.update(block)
            size += len(block)
    if expected_size is not None and expected_size.isdigit() and size != int(expected_size):
        raise _MirrorFailed(f"connection closed after {size} of {expected_size} bytes")
    if digest.hexdigest() != md5:
        raise _MirrorFailed(f"MD5 {digest.hexdigest()} of {size} bytes, expected {md5}")


def _reason(error: BaseException) -> str:
    """A short description of a network error, e.g. "[Errno 111] Connection refused"."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return str(reason) or type(reason).__name__
