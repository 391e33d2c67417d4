"""Loss, accuracy, predictions and confusion matrices of a classifier; digits read from files.

The data is cut into fixed-size chunks; the last one is padded and masked, so each jitted
function compiles once per model structure, whatever the split's size.
"""

import math
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from rnnkit.datasets.base import check_labels
from rnnkit.model import scores

CHUNK_SIZE = 1000


class Metrics(NamedTuple):
    """Mean loss and top-1 accuracy over a split."""

    loss: float
    accuracy: float


@jax.jit
def _chunk_results(model, images, labels, mask):
    """Summed loss and hits over the rows of a ``[C, D]`` chunk where ``mask`` is true, and
    the chunk's class probabilities ``[C, classes]``; the model runs once."""
    logits = model(images)  # [C, classes]
    xentropy, correct = scores(logits, labels)
    return (jnp.sum(jnp.where(mask, xentropy, 0.0)), jnp.sum(jnp.where(mask, correct, 0.0)),
            jax.nn.softmax(logits, axis=-1))


@jax.jit
def _chunk_probabilities(model, images):
    return jax.nn.softmax(model(images), axis=-1)  # [C, classes]


def _chunks(images, chunk_size, *extra):
    """Yields ``(mask [C], images [C, D], *extra [C])`` with the last chunk zero-padded."""
    for start in range(0, len(images), chunk_size):
        parts = [np.asarray(a[start:start + chunk_size]) for a in (images, *extra)]
        valid = len(parts[0])
        pad = chunk_size - valid
        parts = [np.concatenate([p, np.zeros((pad,) + p.shape[1:], p.dtype)]) for p in parts]
        yield (np.arange(chunk_size) < valid, *parts)


def evaluate(model, images, labels, *, chunk_size=CHUNK_SIZE):
    """Mean cross-entropy and accuracy of ``model`` on ``images [N, D]``, ``labels [N]``.

    Sums stay on the device; the host reads them once at the end.
    """
    return _evaluate(model, images, labels, chunk_size, keep_probabilities=False)[0]


def evaluate_with_probabilities(model, images, labels, *, chunk_size=CHUNK_SIZE):
    """``(evaluate(...), class probabilities [N, classes])`` from one pass over the data."""
    return _evaluate(model, images, labels, chunk_size, keep_probabilities=True)


def _one_device(model):
    """``model``, or, if data-parallel training left it replicated on several devices, its copy
    on the first of them: the same numbers, without every device repeating the whole work."""
    devices = {d for leaf in jax.tree.leaves(model) if isinstance(leaf, jax.Array)
               for d in leaf.devices()}
    if len(devices) <= 1:
        return model
    return jax.device_put(model, min(devices, key=lambda d: d.id))


def _evaluate(model, images, labels, chunk_size, *, keep_probabilities):
    if len(images) == 0:
        raise ValueError("images: expected at least one example to evaluate, got 0")
    model, classes = _one_device(model), None
    loss_sum, hit_sum, parts = jnp.float32(0), jnp.float32(0), []
    for mask, x, y in _chunks(images, chunk_size, labels):
        loss, hits, probabilities = _chunk_results(model, x, y, mask)
        if classes is None:  # the model's output says how many; no result is read before
            classes = probabilities.shape[-1]
            check_labels(labels, classes, "labels", classes=f"the model's {classes} classes",
                         advice="pass the labels of the data the model was trained for")
        loss_sum, hit_sum = loss_sum + loss, hit_sum + hits
        if keep_probabilities:
            parts.append(np.asarray(probabilities)[mask])
    metrics = Metrics(float(loss_sum) / len(images), float(hit_sum) / len(images))
    return metrics, (np.concatenate(parts) if keep_probabilities else None)


def predict_probabilities(model, images, *, chunk_size=CHUNK_SIZE):
    """Class probabilities ``[N, classes]`` (NumPy) for ``images [N, D]``, ``N >= 1``."""
    if len(images) == 0:
        raise ValueError(f"images: expected at least one example to predict, got shape "
                         f"{tuple(np.shape(images))}")
    parts, model = [], _one_device(model)
    for mask, x in _chunks(images, chunk_size):
        parts.append(np.asarray(_chunk_probabilities(model, x))[mask])
    return np.concatenate(parts)


def confusion_matrix(labels, predicted, num_classes):
    """``[num_classes, num_classes]`` counts: row = true class, column = predicted class.

    Raises:
      ValueError (a DatasetError): a label or prediction outside ``0..num_classes - 1``.
    """
    for name, classes in (("labels", labels), ("predicted", predicted)):
        check_labels(classes, num_classes, name, classes=f"the {num_classes} classes",
                     advice="pass num_classes to cover every class")
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix


def format_confusion_matrix(matrix):
    """The matrix as text: one row per true class, one column per predicted class."""
    width = max(len(str(matrix.max())), len(str(len(matrix) - 1))) + 1
    header = "true\\pred " + "".join(f"{c:>{width}}" for c in range(len(matrix)))
    rows = [f"{r:>9} " + "".join(f"{v:>{width}}" for v in row) for r, row in enumerate(matrix)]
    return "\n".join([header, *rows])


def load_digits(path, *, invert=False):
    """Images ``[N, 784]`` float32 in [0, 1] from a PNG (or other image) or a ``.npy`` file.

    MNIST digits are light strokes on a dark background; pass ``invert=True`` for dark on light.
    An image file is converted to 8-bit grayscale and resized to 28x28; one of more than
    PIL's ``Image.MAX_IMAGE_PIXELS`` is refused before it is decoded. A ``.npy`` array must
    be shaped ``[28, 28]``, ``[784]``, ``[N, 784]`` or ``[N, 28, 28]`` with ``N >= 1``: uint8
    (0..255) or floats in [0, 1]. It is read without pickle, and only once its header's size
    matches the file's.
    Raises:
      ValueError: naming the file, the expected and the actual shape, dtype or values.
      FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: a folder, not a file; pass the image or .npy files in it "
                         f"(such as {path / '*.png'})")
    images = _npy_digits(path) if path.suffix.lower() == ".npy" else _image_digit(path)
    return 1 - images if invert else images


def _image_digit(path):
    try:
        with warnings.catch_warnings():  # PIL only warns between 1 and 2 times its limit
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                gray = image.convert("L").resize((28, 28), Image.Resampling.LANCZOS)
    except FileNotFoundError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{path}: the image is too large ({e.args[0].split(' exceeds')[0]}; "
                         f"at most {Image.MAX_IMAGE_PIXELS:,} are decoded); a digit needs only "
                         f"28x28 pixels, so shrink it first") from e
    except OSError as e:  # PIL's UnidentifiedImageError, truncated files
        raise ValueError(f"{path}: expected a .npy array or an image file (PNG, JPEG, "
                         f"...), but it cannot be read as one ({e})") from e
    return np.asarray(gray, np.float32).reshape(1, 784) / 255


def _npy_digits(path):
    array = _read_npy(path)
    images = array
    if array.shape in ((28, 28), (784,)) or (array.ndim == 3 and array.shape[1:] == (28, 28)):
        images = array.reshape(-1, 784)
    if images.ndim != 2 or images.shape[1] != 784:
        raise ValueError(f"{path}: expected an array of shape [28, 28], [784], [N, 784] or "
                         f"[N, 28, 28], got {list(array.shape)}")
    if len(images) == 0:
        raise ValueError(f"{path}: holds no images (shape {list(array.shape)}); expected at "
                         f"least one")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{path}: expected uint8 or float pixels, got dtype {images.dtype}")
    finite = np.isfinite(array)
    if not finite.all():
        first = [int(i) for i in np.argwhere(~finite)[0]]
        raise ValueError(f"{path}: holds NaN or infinite values (the first at index {first}); "
                         f"expected float pixels in [0, 1]")
    if not np.all((images >= 0) & (images <= 1)):
        raise ValueError(f"{path}: expected float pixels in [0, 1], got values in "
                         f"[{np.min(images)}, {np.max(images)}]")
    return images.astype(np.float32)


_NOT_NPY = "not a .npy array file (pickled object arrays are refused: rnnkit never loads pickle)"
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def _read_npy(path):
    """The array in a .npy file, read only if the file is one (not a pickle, a .npz or text),
    its dtype holds no Python objects and its data is as long as its header says."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version in _NPY_HEADERS:
                shape, _, dtype = _NPY_HEADERS[version](f)
        except ValueError as e:  # no .npy magic string, or a garbled header
            raise ValueError(f"{path}: {_NOT_NPY}") from e
        if version not in _NPY_HEADERS:  # 3.0: only for structured dtypes with unicode names
            raise ValueError(f"{path}: .npy format version {version[0]}.{version[1]}, which "
                             f"rnnkit does not read; save a uint8 or float array with np.save")
        if dtype.hasobject:
            raise ValueError(f"{path}: {_NOT_NPY}")
        expected, held = math.prod(shape) * dtype.itemsize, os.fstat(f.fileno()).st_size - f.tell()
        if held < expected:  # before reading, so a header cannot make NumPy allocate terabytes
            raise ValueError(f"{path}: its header declares {dtype} {list(shape)}, {expected} "
                             f"bytes of data, but it holds {held} (truncated?)")
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)
