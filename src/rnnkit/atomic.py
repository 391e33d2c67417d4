"""Write a file under a temporary name in its own folder, then rename it into place."""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yields a binary file that becomes `path` only if the `with` body finishes.

    The temporary file is a hidden `.<name>.<random>.part` in the same folder, so the final
    `os.replace` is atomic and a crash or an exception never leaves a file under the final
    name that looks complete; on an exception the temporary file is removed. An OSError about
    the file (a full disk, a folder that cannot be written) names `path`, not the temporary.
    """
    path = Path(path)
    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as e:
        raise _naming(e, path) from e
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it 0o600; data files are meant to be shared
        os.replace(temp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, temp):
            raise _naming(e, path) from e
        raise


def _naming(error, path):
    """``error`` (an OSError about the file being written) naming ``path``."""
    return OSError(error.errno, error.strerror or str(error), str(path))
