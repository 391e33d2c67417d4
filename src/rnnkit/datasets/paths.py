"""Where data sets live on disk: the one place in rnnkit's library code that reads the
environment.

Search order for a data set `<name>` ("mnist" or "fashion-mnist"):

1. the `data_dir` argument (the CLI's `--data-dir`): only that folder, nothing else, so a
   mistyped path is an error rather than a silent fallback;
2. `$RNNKIT_DATA/<name>`: `$RNNKIT_DATA` is a root that holds one folder per data set. Files
   placed directly in `$RNNKIT_DATA` are *not* used, because MNIST and Fashion-MNIST have the
   same four file names and one would silently be read as the other;
3. the user cache `~/.cache/rnnkit/<name>`.

The first folder that holds the data wins; downloads go to the first folder of the list. A
`data_dir` or `$RNNKIT_DATA` that names a file, not a folder, is an error.
"""

import os
from collections.abc import Mapping
from pathlib import Path

from rnnkit.datasets.errors import DatasetError

ENV_VAR = "RNNKIT_DATA"


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None = None, *,
                     environ: Mapping[str, str] | None = None,
                     home: str | os.PathLike | None = None) -> list[Path]:
    """The folders to search for data set `name`, in order (see the module docstring).

    Args:
      name: the data set's folder name, "mnist" or "fashion-mnist".
      data_dir: an explicit folder; when given, it is the only candidate.
      environ: the environment to read `$RNNKIT_DATA` from (default `os.environ`).
      home: the home folder holding `.cache` (default `Path.home()`).

    Returns:
      One to two folders; none of them needs to exist.

    Raises:
      DatasetError: `data_dir` or `$RNNKIT_DATA` is a file.
    """
    if data_dir is not None:
        return [check_folder(data_dir)]
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else Path(home)
    candidates = []
    if environ.get(ENV_VAR):
        root = Path(environ[ENV_VAR]).expanduser()
        if root.is_file():
            raise DatasetError(f"${ENV_VAR} ({root}) is a file, not a folder; point it at a "
                               f"folder that holds one folder per data set, such as "
                               f"{root.parent / 'data'}/{name}/, or unset it")
        candidates.append(root / name)
    candidates.append(home / ".cache" / "rnnkit" / name)
    return candidates


def check_folder(data_dir: str | os.PathLike) -> Path:
    """`data_dir` as a Path (`~` expanded); a DatasetError if it names a file."""
    folder = Path(data_dir).expanduser()
    if folder.is_file():
        raise DatasetError(f"{folder}: a file, not a folder; data_dir (CLI: --data-dir) must "
                           f"name the folder that holds the IDX files (such as "
                           f"{folder.parent})")
    return folder
