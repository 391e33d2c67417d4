"""Write tests/reference/torch_reference.npz: PyTorch's numbers for tests/test_torch_parity.py.

A script, not a test: the tests read the saved arrays and never import torch. Made with torch
2.13.0 (CPU) and numpy 2.4.6; regenerate from the repository root with

    .venv-bench/bin/python tests/make_torch_reference.py

(``make bench-deps`` installs torch there; any Python with ``torch==2.13.0`` and numpy works).

For each model (one layer unless said, ``batch_first=True``, B=3, T=5, I=4, H=6), under a fixed
seed: PyTorch's default random weights (non-zero biases), random inputs ``x [B, T, I]`` and
initial states ``h0 (, c0) [L, B, H]``, the forward pass, and the gradients of the scalar loss
``sum(out * loss_out) + sum(h_n * loss_h_n) (+ sum(c_n * loss_c_n))`` with random ``loss_*``
weights. Keys are ``"<model>/<name>"``: ``x, h0, c0, lengths, out, h_n, c_n, loss_*``, torch's
parameter names (``weight_ih_l0``, ``bias_hh_l1``, ...) and ``grad_<name>`` for every input.
"""

import pathlib

import numpy as np
import torch
from torch import nn

B, T, I, H = 3, 5, 4, 6
LENGTHS = [5, 2, 4]  # for "lstm_lengths": packed sequences (PyTorch does not allow length 0)
OUT = pathlib.Path(__file__).parent / "reference" / "torch_reference.npz"

MODELS = {
    "rnn_tanh": lambda: nn.RNN(I, H, nonlinearity="tanh", batch_first=True),
    "rnn_relu": lambda: nn.RNN(I, H, nonlinearity="relu", batch_first=True),
    "lstm": lambda: nn.LSTM(I, H, batch_first=True),
    "lstm_lengths": lambda: nn.LSTM(I, H, batch_first=True),
    "gru": lambda: nn.GRU(I, H, batch_first=True),
    "lstm_2_layers": lambda: nn.LSTM(I, H, num_layers=2, batch_first=True),
}


def run(name, model):
    """Forward and backward of one model; returns ``{name: float32 array}``."""
    is_lstm = isinstance(model, nn.LSTM)
    x = torch.randn(B, T, I, requires_grad=True)
    h0 = torch.randn(model.num_layers, B, H, requires_grad=True)
    c0 = torch.randn(model.num_layers, B, H, requires_grad=True) if is_lstm else None
    inputs = x
    if name.endswith("_lengths"):
        inputs = nn.utils.rnn.pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=True,
                                                   enforce_sorted=False)
    out, state = model(inputs, (h0, c0) if is_lstm else h0)
    if name.endswith("_lengths"):
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    finals = {"out": out, **({"h_n": state[0], "c_n": state[1]} if is_lstm else {"h_n": state})}
    loss_weights = {f"loss_{k}": torch.randn_like(v) for k, v in finals.items()}
    loss = sum((v * loss_weights[f"loss_{k}"]).sum() for k, v in finals.items())
    loss.backward()

    leaves = {"x": x, "h0": h0, **({"c0": c0} if is_lstm else {}), **dict(model.named_parameters())}
    arrays = {**leaves, **finals, **loss_weights}
    arrays.update({f"grad_{k}": v.grad for k, v in leaves.items()})
    if name.endswith("_lengths"):
        arrays["lengths"] = torch.tensor(LENGTHS, dtype=torch.int32)
    return {f"{name}/{k}": as_numpy(v) for k, v in arrays.items()}


def as_numpy(tensor):
    """Plain float32 (or int32) arrays: the tests load them with ``allow_pickle=False``."""
    dtype = np.float32 if tensor.is_floating_point() else np.int32
    return tensor.detach().numpy().astype(dtype)


def main():
    torch.manual_seed(0)
    arrays = {}
    for name, make in MODELS.items():
        arrays.update(run(name, make()))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {len(arrays)} arrays to {OUT} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
