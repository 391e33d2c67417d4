"""cuDNN's fused LSTM on NVIDIA GPUs, through ``jax.experimental.rnn``.

cuDNN computes one ``LSTMCell`` layer exactly when the cell has no peepholes, its weights are
float32, the sequences have no ``sequence_length`` and no dropout is active. The cell's weights
are packed into cuDNN's flat vector (one layer, one direction)::

    [ w_x.T [4H, I] | w_h.T [4H, H] | b + forget_bias on the f block [4H] | zeros [4H] ]

cuDNN's gate order is the cell's, ``i, f, g, o``; its two biases (input and recurrent) add up,
so the cell's single bias goes in the first and the second stays zero. The packing is plain
``jnp`` code, so gradients flow back to the cell's own weights through cuDNN's backward pass.
"""

import jax
import jax.numpy as jnp
from jax.experimental import rnn as jax_rnn

from rnnkit.cells import LSTMStateTuple, builtin_kind


def cudnn_backend():
    """Whether computations go to a GPU (the default device, else the default backend) and
    jaxlib has cuDNN's RNN kernels (a CPU-only jaxlib has the module but not the kernels)."""
    device = jax.config.jax_default_device  # None, a device, or a platform name
    platform = getattr(device, "platform", device) or jax.default_backend()
    kernels = getattr(jax_rnn.gpu_rnn, "compute_rnn_workspace_reserve_space_sizes", None)
    return kernels is not None and platform in ("gpu", "cuda")


def cudnn_computes(layer):
    """Whether cuDNN's LSTM computes exactly what ``layer`` does over full sequences without
    dropout: a built-in ``LSTMCell`` without peepholes and with float32 weights (the lengths,
    dropout and the inputs' dtype are ``rnnkit.loops.choose_loop``'s to check)."""
    return (builtin_kind(layer) == "lstm" and not layer.use_peepholes
            and layer.w_x.dtype == jnp.float32)


def pack_weights(cell):
    """The cell's weights as cuDNN's flat vector (the layout in the module docstring)."""
    hidden = cell.output_size
    b_input = cell.b.at[hidden:2 * hidden].add(cell.forget_bias)  # [4H]
    return jnp.concatenate([cell.w_x.T.ravel(), cell.w_h.T.ravel(), b_input,
                            jnp.zeros_like(cell.b)])


def cudnn_lstm(cell, xs, state, *, lstm=jax_rnn.lstm):
    """One LSTM layer over time-major ``xs [T, B, I]`` from ``state``, by cuDNN.

    ``lstm`` has the signature of ``jax.experimental.rnn.lstm`` (tests pass its reference
    implementation to check the packing on a CPU).
    Returns:
      ``(outputs [T, B, H], LSTMStateTuple(c, h))``.
    """
    num_steps, batch_size, _ = xs.shape
    lengths = jnp.full((batch_size,), num_steps, jnp.int32)  # every sequence is full
    ys, h, c = lstm(jnp.swapaxes(xs, 0, 1), state.h[None], state.c[None], pack_weights(cell),
                    lengths, input_size=cell.input_size, hidden_size=cell.output_size,
                    num_layers=1, dropout=0.0, bidirectional=False)
    return jnp.swapaxes(ys, 0, 1), LSTMStateTuple(c=c[0], h=h[0])
