"""examples/seed_walkthrough.py runs the chapter's first steps and its numbers agree."""

import pathlib
import runpy

import numpy as np

SCRIPT = pathlib.Path(__file__).parents[1] / "examples" / "seed_walkthrough.py"


def test_walkthrough_numbers(capsys):
    namespace = runpy.run_path(str(SCRIPT), run_name="seed_walkthrough")  # not "__main__"
    results = namespace["main"]()
    printed = capsys.readouterr().out
    x0, x1, lengths = namespace["X0_batch"], namespace["X1_batch"], namespace["seq_length_batch"]

    # The manual RNN, recomputed here in float64 from the script's weights.
    wx, wy, b = (np.asarray(w, np.float64) for w in results["weights"])
    y0 = np.tanh(x0 @ wx + b)
    y1 = np.tanh(y0 @ wy + x1 @ wx + b)
    np.testing.assert_allclose(results["manual"][0], y0, atol=1e-5)
    np.testing.assert_allclose(results["manual"][1], y1, atol=1e-5)

    # manual == static_rnn == static_rnn from a tensor == dynamic_rnn
    both_steps = np.stack([y0, y1], axis=1)  # [4, 2, 5]
    np.testing.assert_allclose(np.stack(results["static"], axis=1), both_steps, atol=1e-5)
    np.testing.assert_allclose(results["static_from_tensor"], both_steps, atol=1e-5)
    outputs, states = results["dynamic"]
    np.testing.assert_allclose(outputs, both_steps, atol=1e-5)
    np.testing.assert_allclose(states, y1, atol=1e-5)

    # sequence_length = [2, 1, 2, 2]: instance 2's padded step outputs zeros, states are the last
    # valid outputs, and the valid steps are unchanged.
    assert lengths.tolist() == [2, 1, 2, 2] and not x1[1].any()
    outputs, states = results["sequence_length"]
    np.testing.assert_array_equal(outputs[1, 1], 0.0)
    np.testing.assert_allclose(np.delete(outputs.reshape(8, 5), 3, axis=0),
                               np.delete(both_steps.reshape(8, 5), 3, axis=0), atol=1e-5)
    np.testing.assert_array_equal(states, np.asarray(outputs)[np.arange(4), lengths - 1])
    np.testing.assert_allclose(states[1], y0[1], atol=1e-5)

    for claim in ("same as the manual RNN: True", "same as static_rnn: True",
                  "padded output of instance 2 is zero: True",
                  "states are the last valid outputs: True"):
        assert claim in printed
    assert "False" not in printed
    assert "[ 0.        0.        0.        0.        0.      ]" in printed  # the padded step
