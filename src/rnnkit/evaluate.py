"""Loss, accuracy, predictions and confusion matrices of a classifier; digits read from files.

The data is cut into fixed-size chunks; the last one is padded and masked, so each jitted
function compiles once per model structure, whatever the split's size.
"""

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

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
    model = _one_device(model)
    loss_sum, hit_sum, parts = jnp.float32(0), jnp.float32(0), []
    for mask, x, y in _chunks(images, chunk_size, labels):
        loss, hits, probabilities = _chunk_results(model, x, y, mask)
        loss_sum, hit_sum = loss_sum + loss, hit_sum + hits
        if keep_probabilities:
            parts.append(np.asarray(probabilities)[mask])
    metrics = Metrics(float(loss_sum) / len(images), float(hit_sum) / len(images))
    return metrics, (np.concatenate(parts) if keep_probabilities else None)


def predict_probabilities(model, images, *, chunk_size=CHUNK_SIZE):
    """Class probabilities ``[N, classes]`` (NumPy) for ``images [N, D]``."""
    parts, model = [], _one_device(model)
    for mask, x in _chunks(images, chunk_size):
        parts.append(np.asarray(_chunk_probabilities(model, x))[mask])
    return np.concatenate(parts)


def confusion_matrix(labels, predicted, num_classes):
    """``[num_classes, num_classes]`` counts: row = true class, column = predicted class."""
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
    An image file is converted to 8-bit grayscale and resized to 28x28. A ``.npy`` array must
    be shaped ``[28, 28]``, ``[784]``, ``[N, 784]`` or ``[N, 28, 28]``: uint8 (0..255) or floats
    in [0, 1].
    Raises:
      ValueError: naming the file, the expected and the actual shape, dtype or range.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        images = _npy_digits(path)
    else:
        try:
            with Image.open(path) as image:
                gray = image.convert("L").resize((28, 28), Image.Resampling.LANCZOS)
        except FileNotFoundError:
            raise
        except OSError as e:  # PIL's UnidentifiedImageError, truncated files
            raise ValueError(f"{path}: expected a .npy array or an image file (PNG, JPEG, "
                             f"...), but it cannot be read as one ({e})") from e
        images = np.asarray(gray, np.float32).reshape(1, 784) / 255
    return 1 - images if invert else images


def _npy_digits(path):
    array = np.load(path, allow_pickle=False)
    if array.shape in ((28, 28), (784,)) or (array.ndim == 3 and array.shape[1:] == (28, 28)):
        array = array.reshape(-1, 784)
    if array.ndim != 2 or array.shape[1] != 784:
        raise ValueError(f"{path}: expected an array of shape [28, 28], [784], [N, 784] or "
                         f"[N, 28, 28], got {list(array.shape)}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{path}: expected uint8 or float pixels, got dtype {array.dtype}")
    if not np.all((array >= 0) & (array <= 1)):
        raise ValueError(f"{path}: expected float pixels in [0, 1], got values in "
                         f"[{np.min(array)}, {np.max(array)}]")
    return array.astype(np.float32)
