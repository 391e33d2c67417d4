"""Unrolling a cell through time: ``static_rnn``, ``dynamic_rnn``, ``bidirectional_dynamic_rnn``.

What every unroll computes, as pseudocode::

    state = initial_state or cell.zero_state(B)
    for t in range(T):
        output[t], new_state = cell(inputs[t], state)
        output[t], state = (output[t], new_state) if t < length[b] else (0, state)

``sequence_length`` follows TF1: past a sequence's length the output is zero and the state is
copied through, so the final state is the one after step ``length - 1`` (the initial state for a
length of 0). Padded inputs are replaced by zeros before the cell reads them, so NaN in the padding
reaches neither outputs, states nor gradients. Under ``jit`` the lengths are not checked: a length
above ``T`` acts as ``T`` and one below 0 acts as 0.

Dtypes: an unroll computes in its cell's weights' dtype. Inputs of another dtype (float16,
bfloat16, float64, integers) and a floating ``initial_state`` of another dtype are cast to it, so
a float32 cell returns float32 whatever it reads; to compute in half precision, cast the cell
(``jax.tree.map(lambda w: w.astype(jnp.bfloat16), cell)``). A cell whose weights have two dtypes
is refused, and so is an integer ``initial_state``. A cell without floating weights computes in
the inputs' floating dtype, or float32.
"""

import jax
import jax.numpy as jnp

from rnnkit import speed
from rnnkit.bptt import explicit_rnn
from rnnkit.bptt_generic import generic_recurrence
from rnnkit.checks import (as_numeric_array, check_cell, check_cell_inputs, check_sequence_length,
                           check_state, compute_dtype)
from rnnkit.cudnn import cudnn_lstm
from rnnkit.loops import Loop, choose_loop, layers
from rnnkit.masks import select
from rnnkit.protocols import Cell
from rnnkit.wrappers import (DropoutWrapper, MultiRNNCell, begin_sequence, call_cell, has_dropout,
                             sequence_dropout)


def static_rnn(cell: Cell, inputs, *, initial_state=None, sequence_length=None, key=None):
    """Unroll ``cell`` over a Python list of steps (the graph grows with ``T``).

    Args:
      inputs: a non-empty list of ``[B, I]`` arrays, one per time step.
      initial_state: the cell's state for batch ``B``; zeros when None.
      sequence_length: optional int ``[B]``; key: optional PRNG key (dropout).
    Returns:
      ``(outputs, final_state)``: a list of ``[B, O]`` arrays and the state after the last valid step.
    """
    check_cell(cell)
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise ValueError(f"inputs: expected a non-empty list of [B, I] arrays, got {inputs!r:.80}")
    inputs = [as_numeric_array(x, f"inputs[{t}]") for t, x in enumerate(inputs)]
    for t, x in enumerate(inputs):
        check_cell_inputs(cell, x, f"inputs[{t}]", rank=2)
        if x.shape != inputs[0].shape:
            raise ValueError(f"inputs[{t}]: expected shape {inputs[0].shape}, got {x.shape}")
    dtype = compute_dtype(cell, inputs[0])
    inputs = [jnp.asarray(x, dtype) for x in inputs]
    state, lengths = _prepare(cell, inputs[0], len(inputs), initial_state, sequence_length)
    cell = begin_sequence(cell, key)
    outputs = []
    for t, x in enumerate(inputs):
        step_key = None if key is None else jax.random.fold_in(key, t)
        output, state = _masked_step(cell, x, state, _valid(lengths, t), step_key)
        outputs.append(output)
    return outputs, state


def dynamic_rnn(cell: Cell, inputs, *, sequence_length=None, initial_state=None, time_major=False,
                key=None, bptt="auto", unroll=None):
    """Unroll ``cell`` with one ``lax.scan``: the compiled program does not grow with ``T``.

    Args:
      inputs: ``[B, T, I]``, or ``[T, B, I]`` with ``time_major=True``.
      sequence_length: optional int ``[B]``; initial_state: zeros when None; key: PRNG key (dropout).
      bptt: "explicit" (the explicit backward pass, ``bptt.py``; "fused" is an older name),
        "autodiff" (``jax.grad`` of the scan), "cudnn" (cuDNN's LSTM on a GPU, ``cudnn.py``) or
        "auto": cuDNN where it applies, else the explicit BPTT for built-in cells and autodiff
        for others (``rnnkit.loops.choose_loop``). The explicit and cuDNN paths define only
        reverse mode: use ``bptt="autodiff"`` for ``jax.jvp``.
      unroll: time steps per compiled loop iteration; None takes ``speed.DEFAULT_UNROLL``.
        cuDNN's kernel (``bptt="cudnn"``, or "auto" on a GPU) runs its own loop and ignores it.
    Returns:
      ``(outputs, final_state)`` with outputs ``[B, T, O]`` (``[T, B, O]`` if time_major).
    """
    check_cell(cell)
    inputs = as_numeric_array(inputs, "inputs")
    check_cell_inputs(cell, inputs, "inputs", rank=3)
    xs = jnp.asarray(_time_major(inputs, time_major), compute_dtype(cell, inputs))  # [T, B, I]
    state, lengths = _prepare(cell, xs[0], xs.shape[0], initial_state, sequence_length)
    outputs, state = _run(cell, xs, state, lengths, key, bptt, unroll)
    return (outputs if time_major else jnp.swapaxes(outputs, 0, 1)), state


def bidirectional_dynamic_rnn(cell_fw: Cell, cell_bw: Cell, inputs, *, sequence_length=None,
                              initial_state_fw=None, initial_state_bw=None, time_major=False,
                              key=None, bptt="auto", unroll=None):
    """A forward and a backward ``dynamic_rnn`` over the same inputs.

    The backward cell reads each sequence reversed within its own length (padding stays at the
    end), and its outputs are reversed back, so ``out_bw[t]`` lines up with ``inputs[t]``.
    Other arguments as in ``dynamic_rnn``.
    Returns:
      ``((out_fw, out_bw), (state_fw, state_bw))``, outputs shaped like ``dynamic_rnn``'s.
    """
    check_cell(cell_fw, "cell_fw")
    check_cell(cell_bw, "cell_bw")
    inputs = as_numeric_array(inputs, "inputs")
    check_cell_inputs(cell_fw, inputs, "inputs", rank=3, cell_name="cell_fw")
    check_cell_inputs(cell_bw, inputs, "inputs", rank=3, cell_name="cell_bw")
    key_fw, key_bw = (None, None) if key is None else jax.random.split(key)
    xs = _time_major(inputs, time_major)  # [T, B, I]; each direction in its cell's dtype
    xs_fw = jnp.asarray(xs, compute_dtype(cell_fw, inputs, "cell_fw"))
    xs_bw = jnp.asarray(xs, compute_dtype(cell_bw, inputs, "cell_bw"))
    num_steps = xs.shape[0]
    state_fw, lengths = _prepare(cell_fw, xs_fw[0], num_steps, initial_state_fw, sequence_length)
    state_bw, _ = _prepare(cell_bw, xs_bw[0], num_steps, initial_state_bw, sequence_length)
    out_fw, state_fw = _run(cell_fw, xs_fw, state_fw, lengths, key_fw, bptt, unroll)
    xs_bw = reverse_sequence(xs_bw, lengths)
    out_bw, state_bw = _run(cell_bw, xs_bw, state_bw, lengths, key_bw, bptt, unroll)
    out_bw = reverse_sequence(out_bw, lengths)
    if not time_major:
        out_fw, out_bw = jnp.swapaxes(out_fw, 0, 1), jnp.swapaxes(out_bw, 0, 1)
    return (out_fw, out_bw), (state_fw, state_bw)


def reverse_sequence(xs, lengths):
    """Reverse ``xs [T, B, ...]`` along time within each sequence's length (TF1's semantics)."""
    if lengths is None:
        return xs[::-1]
    lengths = jnp.clip(jnp.asarray(lengths), 0, xs.shape[0])  # as everywhere: [0, T]
    t = jnp.arange(xs.shape[0])[:, None]  # [T, 1]
    index = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # [T, B]
    index = index.reshape(index.shape + (1,) * (xs.ndim - 2))
    return jnp.take_along_axis(xs, index, axis=0)


def _time_major(inputs, time_major):
    xs = inputs if time_major else jnp.swapaxes(inputs, 0, 1)
    if xs.shape[0] == 0:
        raise ValueError(f"inputs: expected at least one time step, got shape {inputs.shape}")
    return xs


def _prepare(cell, x0, num_steps, initial_state, sequence_length):
    """Checked initial state (in ``x0``'s dtype) and lengths for a batch whose first step is
    ``x0 [B, I]``."""
    batch_size = x0.shape[0]
    lengths = check_sequence_length(sequence_length, batch_size, num_steps)
    if lengths is not None:  # traced lengths cannot be checked: clip them to [0, T]
        lengths = jnp.clip(jnp.asarray(lengths), 0, num_steps)
    if initial_state is None:
        return cell.zero_state(batch_size, x0.dtype), lengths
    return check_state(cell, initial_state, batch_size, x0.dtype), lengths


def _valid(lengths, t):
    return None if lengths is None else t < lengths  # [B] bool


def _masked_step(cell, x, state, valid, key):
    if valid is None:
        return call_cell(cell, x, state, key)
    x = jnp.where(valid[:, None], x, jnp.zeros_like(x))  # never read the padding
    output, new_state = call_cell(cell, x, state, key)
    return jnp.where(valid[:, None], output, jnp.zeros_like(output)), select(valid, new_state, state)


def _run(cell, xs, state, lengths, key, bptt, unroll):
    """The time loop over time-major ``xs [T, B, I]``, the one ``loops.choose_loop`` picks."""
    if unroll is not None and (isinstance(unroll, bool) or not isinstance(unroll, int)
                               or unroll < 1):
        raise ValueError(f"unroll: expected a positive int or None, got {unroll!r}")
    unroll = speed.DEFAULT_UNROLL if unroll is None else unroll
    dropout = key is not None and has_dropout(cell)  # a key matters only to dropout
    plan = choose_loop(cell, dtype=xs.dtype, has_lengths=lengths is not None, dropout=dropout,
                       mode=bptt)
    if plan == (Loop.AUTODIFF,):
        return _scan(cell, xs, state, lengths, key, unroll)
    dropouts = sequence_dropout(cell, key, xs.shape[0]) if dropout else None
    return _run_layers(plan, cell, xs, state, lengths, unroll, dropouts)


def _run_layers(plan, cell, xs, state, lengths, unroll, dropouts=None):
    """Layer after layer, each a full sequence, on its loop: a built-in cell's explicit BPTT
    (``bptt.py``, whose loop projects each step's inputs), a split cell's generic one
    (``bptt_generic.py``, its inputs projected for all steps in one matmul first) or cuDNN's
    LSTM (``cudnn.py``). ``dropouts``: per layer, the dropout of its input and output
    sequences (``wrappers.sequence_dropout``), or None."""
    valid = None if lengths is None else jnp.arange(xs.shape[0])[:, None] < lengths[None, :]
    if valid is not None:
        xs = jnp.where(valid[..., None], xs, jnp.zeros_like(xs))  # never read the padding
    stacked = _is_stack(cell)  # the state is a tuple of the layers' states
    states = state if stacked else (state,)
    dropouts = dropouts or [(None, None)] * len(plan)
    finals = []
    for loop, layer, layer_state, (drop_inputs, drop_outputs) in zip(
            plan, layers(cell), states, dropouts, strict=True):
        xs = xs if drop_inputs is None else drop_inputs(xs)
        if loop is Loop.CUDNN:
            xs, layer_state = cudnn_lstm(layer, xs, layer_state)
        elif loop is Loop.EXPLICIT:
            xs, layer_state = explicit_rnn(layer, xs, layer_state, valid, unroll=unroll)
        else:
            xs, layer_state = generic_recurrence(layer, layer.input_projection(xs), layer_state,
                                                 valid, unroll=unroll)
        xs = xs if drop_outputs is None else drop_outputs(xs)
        finals.append(layer_state)
    return xs, (tuple(finals) if stacked else finals[0])


def _is_stack(cell):
    while isinstance(cell, DropoutWrapper):  # without a key, the identity
        cell = cell.cell
    return isinstance(cell, MultiRNNCell)


def _scan(cell, xs, state, lengths, key, unroll=1):
    """The autodiff time loop: one ``lax.scan`` over steps of the cell."""
    cell = begin_sequence(cell, key)

    def body(carry, t_x):
        t, x = t_x
        step_key = None if key is None else jax.random.fold_in(key, t)
        output, carry = _masked_step(cell, x, carry, _valid(lengths, t), step_key)
        return carry, output

    state, outputs = jax.lax.scan(body, state, (jnp.arange(xs.shape[0]), xs), unroll=unroll)
    return outputs, state
