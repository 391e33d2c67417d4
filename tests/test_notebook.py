"""notebooks/chapter14.ipynb: the saved copy carries its outputs, and the notebook runs top to
bottom, with one training epoch on the embedded digits and 50 time-series iterations."""

import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "chapter14.ipynb"
EPOCH_LINE = re.compile(r"^(\d+)\tTraining loss: ([\d.]+)\tTraining acc: ([\d.]+)\t"
                        r"Validation loss: ([\d.]+)\tAccuracy: ([\d.]+)%$", re.MULTILINE)
SERIES_LINE = re.compile(r"^(\d+) \tMSE: ([\d.]+)$", re.MULTILINE)  # the book's, every 100
DROPOUT_LINE = re.compile(r"^(\d+) Training MSE: ([\d.]+)$", re.MULTILINE)
INSTANCE_MSE = re.compile(r"^MSE on the test instance: ([\d.]+)$", re.MULTILINE)
# the learning curves, the test digits, the series, the prediction, the generated sequences, and
# the deep RNN's prediction
FIGURES = 6


def stream(nb, name="stdout"):
    """All of the notebook's `name` stream output, in cell order."""
    return "".join(output.text for cell in nb.cells if cell.cell_type == "code"
                   for output in cell.outputs
                   if output.output_type == "stream" and output.name == name)


def images(nb):
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs
            if "image/png" in output.get("data", {})]


def parameters_index(nb):
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "expected one cell tagged 'parameters'"
    return tagged[0]


def test_saved_notebook_holds_a_full_run():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    parameters = nb.cells[parameters_index(nb)].source
    assert "n_epochs = 10" in parameters and "n_iterations = 1500" in parameters
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    printed = stream(nb)
    assert [int(m[0]) for m in EPOCH_LINE.findall(printed)] == list(range(1, 11))
    series = SERIES_LINE.findall(printed)
    assert [int(m[0]) for m in series] == list(range(0, 1500, 100))
    assert float(series[-1][1]) < 0.1  # the book's: 0.043 at 1400
    assert float(INSTANCE_MSE.search(printed)[1]) < 0.5
    assert [int(m[0]) for m in DROPOUT_LINE.findall(printed)] == list(range(0, 1500, 100))
    assert len(images(nb)) == FIGURES
    assert NOTEBOOK.stat().st_size < 1_000_000


def test_notebook_runs_on_the_embedded_digits(tmp_path, monkeypatch):
    for name in ("data", "home"):  # no MNIST anywhere: read_data_sets() takes the embedded subset
        (tmp_path / name).mkdir()
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # papermill's convention: the overrides go in a cell right after the parameters cell.
    injected = nbformat.v4.new_code_cell("n_epochs = 1\nn_iterations = 50")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(parameters_index(nb) + 1, injected)
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))

    # The kernelspec "python3" starts `python`, which jupyter_client replaces with this
    # process's interpreter, so the kernel runs in the test's environment (checked below).
    NotebookClient(nb, timeout=300, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    assert nb.cells[-1].outputs[0].text.strip() == sys.prefix
    assert "using the embedded 5,000-digit subset" in stream(nb, "stderr")
    printed = stream(nb)
    assert "4,000 training, 500 validation, 500 test images" in printed
    (epoch, loss, accuracy, val_loss, val_accuracy), = EPOCH_LINE.findall(printed)
    assert epoch == "1" and float(val_loss) < 1.5 and float(val_accuracy) > 50  # chance: 10%
    test_accuracy = float(re.search(r"Test accuracy: ([\d.]+)%", printed)[1])
    assert test_accuracy > 50
    (iteration, value), = SERIES_LINE.findall(printed)  # 50 iterations: only iteration 0's line
    assert iteration == "0" and float(value) < 100
    assert float(INSTANCE_MSE.search(printed)[1]) < 100
    (iteration, value), = DROPOUT_LINE.findall(printed)
    assert iteration == "0" and float(value) < 100
    assert len(images(nb)) == FIGURES
