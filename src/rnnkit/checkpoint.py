"""Checkpoints without pickle: a safetensors file of a pytree's arrays plus a JSON sidecar.

A checkpoint for epoch ``e`` is two files in one folder::

    epoch-000e.safetensors   every array leaf, keyed by its path (jax.tree_util.keystr),
                             e.g. ".model.cell.w_x", ".opt_state[0].mu.dense.b", ".key"
    epoch-000e.json          epoch, step, config, the leaves' names/shapes/dtypes, rnnkit's
                             version and the SHA-256 of the safetensors file

Both are written under temporary names and renamed into place, the sidecar last, so a checkpoint
is complete only when the sidecar exists, and valid only when the hash of the tensors matches it.
Loading needs a *template*: a tree of the same structure (built from the same config), whose
leaves are replaced, in order, by the stored arrays after checking names, shapes and dtypes.
PRNG keys are stored as their raw ``key_data`` and wrapped again on load.
"""

import hashlib
import importlib.metadata
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy

from rnnkit.atomic import atomic_write

FORMAT = "rnnkit.checkpoint/1"
_SIDECAR = re.compile(r"epoch-(\d+)\.json")


class CheckpointError(ValueError):
    """A checkpoint is incomplete, corrupt, or does not fit the tree it is loaded into."""


def rnnkit_version():
    try:
        return importlib.metadata.version("rnnkit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _is_key(leaf):
    return jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _to_numpy(leaf):
    return np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)


def tree_arrays(tree):
    """``{keystr(path): numpy array}`` for every leaf of ``tree``, in flattening order."""
    return {jax.tree_util.keystr(path): _to_numpy(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def save_checkpoint(folder, tree, *, epoch, step, config):
    """Writes the checkpoint of ``tree`` for ``epoch`` into ``folder``; returns the sidecar path.

    Args:
      tree: a pytree of arrays (a ``TrainState``); config: a JSON-ready dict stored alongside.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = tree_arrays(tree)
    payload = safetensors.numpy.save(arrays)
    tensors = folder / f"epoch-{epoch:04d}.safetensors"
    with atomic_write(tensors) as out:
        out.write(payload)
    sidecar = {
        "format": FORMAT, "rnnkit_version": rnnkit_version(), "epoch": epoch, "step": step,
        "tensors": tensors.name, "sha256": hashlib.sha256(payload).hexdigest(),
        "leaves": [{"name": name, "shape": list(a.shape), "dtype": a.dtype.name}
                   for name, a in arrays.items()],
        "config": config,
    }
    path = folder / f"epoch-{epoch:04d}.json"
    with atomic_write(path) as out:
        out.write(json.dumps(sidecar, indent=1).encode())
    return path


def checkpoints(folder):
    """The sidecars in ``folder`` whose two files both exist, the highest epoch first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _SIDECAR.fullmatch(path.name)
        if match and path.with_suffix(".safetensors").exists():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(folder):
    """The sidecar of the highest epoch whose two files both exist in ``folder``, or None."""
    found = checkpoints(folder)
    return found[0] if found else None


def read_sidecar(path):
    """The sidecar's JSON; raises CheckpointError if it is unreadable or not a checkpoint."""
    path = Path(path)
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint sidecar ({e})") from e
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise CheckpointError(f"{path}: expected an rnnkit checkpoint sidecar "
                              f"(format {FORMAT!r}), got {str(sidecar)[:60]!r}")
    return sidecar


def load_checkpoint(path, template):
    """``(tree, sidecar)``: ``template`` with its leaves replaced by the checkpoint's arrays.

    Args:
      path: the sidecar ``epoch-*.json``; its ``tensors`` file must lie next to it.
      template: a tree with the structure, shapes and dtypes the checkpoint must have.
    Raises:
      CheckpointError: a missing or corrupt file, or a leaf whose name, shape or dtype differs.
    """
    path = Path(path)
    sidecar = read_sidecar(path)
    tensors = path.parent / _tensors_name(path, sidecar.get("tensors"))
    try:
        payload = tensors.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{tensors}: cannot read the checkpoint's tensors ({e})") from e
    digest = hashlib.sha256(payload).hexdigest()
    if digest != sidecar.get("sha256"):
        raise CheckpointError(f"{tensors}: corrupt or not the file its sidecar {path.name} "
                              f"describes (sha256 {digest[:12]}..., expected "
                              f"{str(sidecar.get('sha256'))[:12]}...)")
    try:
        arrays = safetensors.numpy.load(payload)
    except safetensors.SafetensorError as e:
        raise CheckpointError(f"{tensors}: not a readable safetensors file ({e})") from e
    return _fill(template, arrays, tensors), sidecar


def _tensors_name(path, name):
    """``name`` if it is a plain file name, so that the tensors lie next to the sidecar."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name
            or "\0" in name):
        raise CheckpointError(f"{path}: \"tensors\" must name a file in {path.parent} (no "
                              f"folder, no absolute path), got {str(name)[:80]!r}")
    return name


def _fill(template, arrays, source):
    """``template`` with each leaf replaced by ``arrays[keystr(path)]``, checked first."""
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [jax.tree_util.keystr(p) for p, _ in paths_leaves]
    missing = [name for name in names if name not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise CheckpointError(f"{source}: missing tensors {missing[:3]} that the configuration "
                              f"needs, extra tensors {extra[:3]}; was it written by a different "
                              f"configuration?")
    leaves = []
    for name, (_, leaf) in zip(names, paths_leaves):
        want, got = _to_numpy(leaf), arrays[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(f"{source}: tensor {name!r}: expected "
                                  f"{want.dtype}{list(want.shape)} from the configuration, "
                                  f"got {got.dtype}{list(got.shape)}")
        if _is_key(leaf):
            leaves.append(jax.random.wrap_key_data(got, impl=jax.random.key_impl(leaf)))
        else:
            leaves.append(jnp.asarray(got))
    return jax.tree_util.tree_unflatten(treedef, leaves)
