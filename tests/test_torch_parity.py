"""rnnkit reproduces PyTorch's RNN, LSTM and GRU: outputs, final states and every gradient.

The numbers come from ``tests/reference/torch_reference.npz`` (written by
``tests/make_torch_reference.py``; torch is not imported here). Weight mapping: ``w_x =
weight_ih.T``, ``w_h = weight_hh.T``; RNN and LSTM ``b = bias_ih + bias_hh`` (LSTM with
``forget_bias=0``), so torch's two bias gradients both equal ours; GRU ``b = bias_ih``,
``b_h = bias_hh`` (``reset_after``). The gate orders (``i, f, g, o`` and ``r, z, n``) are torch's.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit

REFERENCE = np.load(pathlib.Path(__file__).parent / "reference" / "torch_reference.npz",
                    allow_pickle=False)
MODELS = sorted({key.split("/")[0] for key in REFERENCE.files})


def reference(model):
    return {key.split("/", 1)[1]: REFERENCE[key] for key in REFERENCE.files
            if key.startswith(model + "/")}


def layer_cell(ref, model, layer):
    """The rnnkit cell of torch layer ``layer`` (``"l0"``, ``"l1"``)."""
    w_ih, w_hh, b_ih, b_hh = (ref[f"{n}_{layer}"] for n in
                              ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    if model.startswith("rnn_"):
        return rnnkit.BasicRNNCell.from_weights(w_ih.T, w_hh.T, b_ih + b_hh,
                                                activation=model.removeprefix("rnn_"))
    if model.startswith("lstm"):
        return rnnkit.LSTMCell.from_weights(w_ih.T, w_hh.T, b_ih + b_hh, forget_bias=0.0)
    return rnnkit.GRUCell.from_weights(w_ih.T, w_hh.T, b_ih, b_h=b_hh)


def torch_grads(ref, cell, layer):
    """Torch's parameter gradients in the cell's layout (the summed bias: either of torch's)."""
    grad = {n: ref[f"grad_{n}_{layer}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    if isinstance(cell, rnnkit.GRUCell):
        return rnnkit.replace(cell, w_x=grad["weight_ih"].T, w_h=grad["weight_hh"].T,
                              b=grad["bias_ih"], b_h=grad["bias_hh"])
    np.testing.assert_allclose(grad["bias_ih"], grad["bias_hh"], rtol=1e-6)
    return rnnkit.replace(cell, w_x=grad["weight_ih"].T, w_h=grad["weight_hh"].T,
                          b=grad["bias_ih"])


def as_rnnkit(ref, model):
    """``(cell, initial_state, expected_grad_cell, expected_grad_state)`` for one torch model."""
    layers = ["l0", "l1"] if "weight_ih_l1" in ref else ["l0"]
    cells = [layer_cell(ref, model, layer) for layer in layers]
    grads = [torch_grads(ref, cell, layer) for cell, layer in zip(cells, layers, strict=True)]

    def states(prefix):  # torch's [L, B, H] arrays as one rnnkit state per layer
        if "c0" in ref:
            pairs = zip(ref[f"{prefix}c0"], ref[f"{prefix}h0"], strict=True)
            return [rnnkit.LSTMStateTuple(c, h) for c, h in pairs]
        return list(ref[f"{prefix}h0"])

    state, grad_state = states(""), states("grad_")
    if len(layers) == 1:
        return cells[0], state[0], grads[0], grad_state[0]
    return (rnnkit.MultiRNNCell(cells), tuple(state), rnnkit.MultiRNNCell(grads),
            tuple(grad_state))


def torch_final_state(ref):
    """Torch's ``h_n (, c_n) [L, B, H]`` in rnnkit's layout."""
    if "c_n" in ref:
        finals = [rnnkit.LSTMStateTuple(c, h) for c, h in zip(ref["c_n"], ref["h_n"], strict=True)]
    else:
        finals = list(ref["h_n"])
    return finals[0] if len(finals) == 1 else tuple(finals)


def unroll(name, cell, x, state, lengths):
    if name == "static_rnn":
        outputs, final = rnnkit.static_rnn(cell, [x[:, t] for t in range(x.shape[1])],
                                           initial_state=state, sequence_length=lengths)
        return jnp.stack(outputs, axis=1), final
    return rnnkit.dynamic_rnn(cell, x, initial_state=state, sequence_length=lengths)


def loss_and_results(ref, name, cell, x, state):
    """The script's loss: ``sum(out * loss_out) + sum(h_n * loss_h_n) (+ sum(c_n * loss_c_n))``."""
    outputs, final = unroll(name, cell, x, state, ref.get("lengths"))
    finals = final if isinstance(final, tuple) and not hasattr(final, "_fields") else (final,)
    h_n = jnp.stack([f.h if hasattr(f, "h") else f for f in finals])  # [L, B, H]
    loss = jnp.sum(outputs * ref["loss_out"]) + jnp.sum(h_n * ref["loss_h_n"])
    if "c_n" in ref:
        loss = loss + jnp.sum(jnp.stack([f.c for f in finals]) * ref["loss_c_n"])
    return loss, (outputs, final)


def assert_trees_close(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)


@pytest.mark.parametrize("unroll_name", ["dynamic_rnn", "static_rnn"])
@pytest.mark.parametrize("model", MODELS)
def test_outputs_states_and_gradients_match_pytorch(model, unroll_name):
    ref = reference(model)
    cell, state, want_grad_cell, want_grad_state = as_rnnkit(ref, model)
    grad_fn = jax.grad(loss_and_results, argnums=(2, 3, 4), has_aux=True)
    (grad_cell, grad_x, grad_state), (outputs, final) = grad_fn(ref, unroll_name, cell,
                                                                ref["x"], state)
    assert_trees_close(outputs, ref["out"])
    assert_trees_close(final, torch_final_state(ref))
    assert_trees_close(grad_cell, want_grad_cell)
    assert_trees_close(grad_x, ref["grad_x"])
    assert_trees_close(grad_state, want_grad_state)


def test_the_reference_covers_every_model_of_the_script():
    assert MODELS == sorted(["gru", "lstm", "lstm_2_layers", "lstm_lengths", "rnn_relu",
                             "rnn_tanh"])
    assert reference("lstm_lengths")["lengths"].tolist() == [5, 2, 4]
    assert all(REFERENCE[key].dtype in (np.float32, np.int32) for key in REFERENCE.files)
