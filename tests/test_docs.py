"""Every Python block in the README and in docs/ runs as written, so none can rot.

Each document's blocks run in order, in one fresh interpreter (a block may use what an earlier
one defined), in an empty folder, offline: no MNIST files are found, so the book's API falls
back to the embedded subset, as on a new user's machine.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path):
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.mark.parametrize("path", [d for d in DOCUMENTS if python_blocks(d)],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(path, tmp_path):
    script = "\n\n".join(python_blocks(path))
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "RNNKIT_DATA": str(empty), "HOME": str(empty), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{path.name}:\n{done.stderr[-3000:]}"


def test_the_readme_has_python_blocks():
    assert len(python_blocks(ROOT / "README.md")) >= 3
