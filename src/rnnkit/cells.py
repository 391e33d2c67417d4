"""Memory cells: a layer of recurrent neurons, LSTM and GRU, plus a dense layer.

Every cell is a frozen pytree dataclass called as ``cell(inputs [B, I], state) -> (output [B, O],
new_state)``. Weights are input-major: ``w_x [I, G*H]``, ``w_h [H, G*H]``, ``b [G*H]``, with the
``G`` gate blocks side by side in the PyTorch/Keras order (LSTM ``i, f, g, o``; GRU ``r, z, n``).
Initialisation: Glorot-uniform input weights, orthogonal recurrent weights, zero biases.

Built-in cells are split cells (``rnnkit.protocols.SplitCell``): ``input_projection(x) = x w_x
+ b`` does not depend on the state, and ``recurrent_step(projected, state)`` is the rest of a
step. The explicit BPTT (``bptt.py``) is built on this split: the input side's gradients are
computed for all time steps at once, after the backward loop.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnkit.activations import get_activation
from rnnkit.checks import check_size
from rnnkit.pytree import build, pytree_dataclass, set_fields, static_field

_glorot = jax.nn.initializers.glorot_uniform()
_orthogonal = jax.nn.initializers.orthogonal()


class LSTMStateTuple(NamedTuple):
    """The LSTM state, in the book's order: cell state ``c`` then hidden state ``h``, each [B, H]."""

    c: jax.Array
    h: jax.Array


def _weights(key, input_size, num_units, gates):
    input_size, num_units = check_size("input_size", input_size), check_size("num_units", num_units)
    kx, kh = jax.random.split(key)
    w_x = _glorot(kx, (input_size, gates * num_units), jnp.float32)
    w_h = _orthogonal(kh, (num_units, gates * num_units), jnp.float32)
    return w_x, w_h, jnp.zeros((gates * num_units,), jnp.float32)


def gate_blocks(z, count):
    """Split ``z [..., count*H]`` into ``count`` gate blocks ``[..., H]``.

    Plain slices rather than ``jnp.split``: with jax 0.10.2 on the CPU, the gradient of
    ``jnp.split`` inside a jitted ``lax.scan`` came out wrong in float64 (float32 was right).
    """
    size = z.shape[-1] // count
    return tuple(z[..., k * size : (k + 1) * size] for k in range(count))


def _zeros(batch_size, num_units, dtype):
    return jnp.zeros((batch_size, num_units), dtype)


@pytree_dataclass
class BasicRNNCell:
    """A layer of recurrent neurons: ``h' = act(x w_x + h w_h + b)``; output and state are ``h'``.

    Args:
      input_size: ``I``; num_units: ``H``; activation: a callable or a name ("tanh", "relu", ...).
      key: PRNG key for the weights ``w_x [I, H]``, ``w_h [H, H]`` (``b [H]`` starts at zero).
    """

    w_x: jax.Array
    w_h: jax.Array
    b: jax.Array
    activation: object = static_field()

    def __init__(self, input_size, num_units, *, activation=jnp.tanh, key):
        w_x, w_h, b = _weights(key, input_size, num_units, 1)
        set_fields(self, w_x=w_x, w_h=w_h, b=b, activation=get_activation(activation))

    @classmethod
    def from_weights(cls, w_x, w_h, b, *, activation=jnp.tanh):
        """A cell with the given weights ``w_x [I, H]``, ``w_h [H, H]``, ``b [H]``."""
        return build(cls, w_x=w_x, w_h=w_h, b=b, activation=get_activation(activation))

    input_size = property(lambda self: self.w_x.shape[0])
    output_size = state_size = property(lambda self: self.w_h.shape[0])

    def zero_state(self, batch_size, dtype=jnp.float32):
        return _zeros(batch_size, self.state_size, dtype)

    def input_projection(self, inputs):
        return inputs @ self.w_x + self.b  # [..., H]

    def recurrent_step(self, projected, state):
        h = self.activation(projected + state @ self.w_h)
        return h, h

    def __call__(self, inputs, state, *, key=None):
        return self.recurrent_step(self.input_projection(inputs), state)


@pytree_dataclass
class LSTMCell:
    """Long short-term memory, gate order ``i, f, g, o`` (TF1 ``LSTMCell`` semantics).

    ``z = x w_x + h w_h + b``; ``i = sig(z_i + p_i c)``, ``f = sig(z_f + forget_bias + p_f c)``,
    ``g = tanh(z_g)``, ``c' = f c + i g``, ``o = sig(z_o + p_o c')``, ``h' = o tanh(c')``.
    The peephole terms ``p_* [H]`` (diagonal weights on ``c``) exist only with
    ``use_peepholes=True``; they start at zero. State: ``LSTMStateTuple(c, h)``; output: ``h'``.

    Args:
      input_size: ``I``; num_units: ``H``; forget_bias: added to the forget gate's input.
      key: PRNG key for ``w_x [I, 4H]`` and ``w_h [H, 4H]`` (``b [4H]`` starts at zero).
    """

    w_x: jax.Array
    w_h: jax.Array
    b: jax.Array
    peepholes: object  # None, or (p_i, p_f, p_o), each [H]
    forget_bias: float = static_field()

    def __init__(self, input_size, num_units, *, forget_bias=1.0, use_peepholes=False, key):
        w_x, w_h, b = _weights(key, input_size, num_units, 4)
        peepholes = tuple(jnp.zeros((num_units,), jnp.float32) for _ in range(3))
        set_fields(self, w_x=w_x, w_h=w_h, b=b, forget_bias=float(forget_bias),
             peepholes=peepholes if use_peepholes else None)

    @classmethod
    def from_weights(cls, w_x, w_h, b, *, forget_bias=1.0, peepholes=None):
        """A cell with the given ``w_x [I, 4H]``, ``w_h [H, 4H]``, ``b [4H]``, peepholes."""
        peepholes = None if peepholes is None else tuple(peepholes)
        return build(cls, w_x=w_x, w_h=w_h, b=b, peepholes=peepholes,
                     forget_bias=float(forget_bias))

    input_size = property(lambda self: self.w_x.shape[0])
    output_size = property(lambda self: self.w_h.shape[0])
    use_peepholes = property(lambda self: self.peepholes is not None)

    @property
    def state_size(self):
        return LSTMStateTuple(self.output_size, self.output_size)

    def zero_state(self, batch_size, dtype=jnp.float32):
        zeros = _zeros(batch_size, self.output_size, dtype)
        return LSTMStateTuple(zeros, zeros)

    def input_projection(self, inputs):
        return inputs @ self.w_x + self.b  # [..., 4H]

    def recurrent_step(self, projected, state):
        c, h = state
        z_i, z_f, z_g, z_o = gate_blocks(projected + h @ self.w_h, 4)
        z_f = z_f + self.forget_bias
        if self.peepholes is not None:
            p_i, p_f, p_o = self.peepholes
            z_i, z_f = z_i + p_i * c, z_f + p_f * c
        c = jax.nn.sigmoid(z_f) * c + jax.nn.sigmoid(z_i) * jnp.tanh(z_g)
        if self.peepholes is not None:
            z_o = z_o + p_o * c
        h = jax.nn.sigmoid(z_o) * jnp.tanh(c)
        return h, LSTMStateTuple(c, h)

    def __call__(self, inputs, state, *, key=None):
        return self.recurrent_step(self.input_projection(inputs), state)


@pytree_dataclass
class GRUCell:
    """Gated recurrent unit, gate order ``r, z, n``; ``h' = (1 - z) n + z h``.

    ``reset_after=True`` (Keras, PyTorch, cuDNN): ``n = tanh(x w_xn + b_n + r (h w_hn + b_hn))``,
    with a second bias ``b_h [3H]`` on the recurrent side. ``reset_after=False`` (TF1, Cho et al.):
    ``n = tanh(x w_xn + b_n + (r h) w_hn)``. In both, ``r`` and ``z`` are
    ``sig(x w_x + h w_h + b (+ b_h))`` on their blocks.

    Args:
      input_size: ``I``; num_units: ``H``; reset_after: which variant (see above).
      key: PRNG key for ``w_x [I, 3H]`` and ``w_h [H, 3H]`` (biases start at zero).
    """

    w_x: jax.Array
    w_h: jax.Array
    b: jax.Array
    b_h: object  # [3H] with reset_after=True, else None

    def __init__(self, input_size, num_units, *, reset_after=True, key):
        w_x, w_h, b = _weights(key, input_size, num_units, 3)
        set_fields(self, w_x=w_x, w_h=w_h, b=b, b_h=jnp.zeros_like(b) if reset_after else None)

    @classmethod
    def from_weights(cls, w_x, w_h, b, b_h=None):
        """A cell with the given weights; ``b_h`` given means ``reset_after=True``."""
        return build(cls, w_x=w_x, w_h=w_h, b=b, b_h=b_h)

    input_size = property(lambda self: self.w_x.shape[0])
    output_size = state_size = property(lambda self: self.w_h.shape[0])
    reset_after = property(lambda self: self.b_h is not None)

    def zero_state(self, batch_size, dtype=jnp.float32):
        return _zeros(batch_size, self.state_size, dtype)

    def input_projection(self, inputs):
        return inputs @ self.w_x + self.b  # [..., 3H]

    def recurrent_step(self, projected, state):
        units = self.state_size
        x_r, x_z, x_n = gate_blocks(projected, 3)
        if self.b_h is not None:
            h_r, h_z, h_n = gate_blocks(state @ self.w_h + self.b_h, 3)
            r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
            n = jnp.tanh(x_n + r * h_n)
        else:
            h_r, h_z = gate_blocks(state @ self.w_h[:, : 2 * units], 2)
            r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
            n = jnp.tanh(x_n + (r * state) @ self.w_h[:, 2 * units :])
        h = (1.0 - z) * n + z * state
        return h, h

    def __call__(self, inputs, state, *, key=None):
        return self.recurrent_step(self.input_projection(inputs), state)


@pytree_dataclass
class Dense:
    """A fully connected layer: ``y = act(x w + b)``, ``w [I, O]`` Glorot-uniform, ``b [O]`` zero."""

    w: jax.Array
    b: jax.Array
    activation: object = static_field()

    def __init__(self, input_size, output_size, *, activation=None, key):
        input_size = check_size("input_size", input_size)
        output_size = check_size("output_size", output_size)
        w = _glorot(key, (input_size, output_size), jnp.float32)
        activation = None if activation is None else get_activation(activation)
        set_fields(self, w=w, b=jnp.zeros((output_size,), jnp.float32), activation=activation)

    input_size = property(lambda self: self.w.shape[0])
    output_size = property(lambda self: self.w.shape[1])

    def __call__(self, inputs):
        y = inputs @ self.w + self.b
        return y if self.activation is None else self.activation(y)


BUILTIN_CELLS = {BasicRNNCell: "basic", LSTMCell: "lstm", GRUCell: "gru"}


def builtin_kind(cell):
    """The kind of a built-in cell ("basic", "lstm" or "gru"), else None.

    The class itself, not a subclass: a subclass may compute its step in its own way, so the
    code written for the built-in classes (the explicit BPTT, cuDNN) does not apply to it.
    """
    return BUILTIN_CELLS.get(type(cell))
