"""``loops.choose_loop``: one table over the cell, the dtype, lengths, dropout, the requested
mode and the backend, and the loop that ``dynamic_rnn`` then traces."""

import jax
import jax.numpy as jnp
import pytest

import rnnkit as rk
from rnnkit.cells import LSTMStateTuple
from rnnkit.loops import Loop, canonical_mode, choose_loop

I, H = 3, 4
C, E, G, A = Loop.CUDNN, Loop.EXPLICIT, Loop.GENERIC, Loop.AUTODIFF


@rk.pytree.pytree_dataclass
class MinimalGatedUnit:
    """A split cell of a user's own (``rnnkit.protocols.SplitCell``)."""

    w_x: jax.Array
    w_h: jax.Array
    output_size = state_size = property(lambda self: self.w_h.shape[0])

    def zero_state(self, batch_size, dtype=jnp.float32):
        return jnp.zeros((batch_size, self.state_size), dtype)

    def input_projection(self, x):
        return x @ self.w_x

    def recurrent_step(self, xp, h):
        h = jnp.tanh(xp + h @ self.w_h)
        return h, h

    def __call__(self, x, h):
        return self.recurrent_step(self.input_projection(x), h)


class Doubler:
    """A cell that is not split: only ``rnnkit.protocols.Cell``."""

    output_size = state_size = I

    def zero_state(self, batch_size, dtype=jnp.float32):
        return jnp.zeros((batch_size, I), dtype)

    def __call__(self, inputs, state):
        return 2 * inputs + state, state + inputs


@rk.pytree.pytree_dataclass
class DoubledLSTM(rk.LSTMCell):
    def recurrent_step(self, projected, state):
        h, new = super().recurrent_step(projected, state)
        return 2.0 * h, LSTMStateTuple(new.c, 2.0 * h)


def _cell(name):
    key = jax.random.key(0)
    lstm = rk.LSTMCell(I, H, key=key)
    cells = {
        "basic": lambda: rk.BasicRNNCell(I, H, key=key),
        "basic-softplus": lambda: rk.BasicRNNCell(I, H, activation=jax.nn.softplus, key=key),
        "lstm": lambda: lstm,
        "peephole": lambda: rk.LSTMCell(I, H, use_peepholes=True, key=key),
        "lstm64": lambda: jax.tree.map(lambda w: w.astype(jnp.float64), lstm),
        "gru": lambda: rk.GRUCell(I, H, key=key),
        "lstm-stack": lambda: rk.MultiRNNCell([lstm, rk.LSTMCell(H, H, key=key)]),
        "mixed-stack": lambda: rk.MultiRNNCell([lstm, rk.pytree.build(MinimalGatedUnit, w_x=
            jnp.ones((H, H)), w_h=jnp.ones((H, H)))]),
        "dropout-lstm": lambda: rk.DropoutWrapper(lstm, input_keep_prob=0.5),
        "state-dropout-lstm": lambda: rk.DropoutWrapper(lstm, output_keep_prob=0.5,
                                                        state_keep_prob=0.5),
        "dropout-stack": lambda: rk.MultiRNNCell([rk.DropoutWrapper(
            lstm, input_keep_prob=0.5), rk.DropoutWrapper(rk.GRUCell(H, H, key=key),
                                                          output_keep_prob=0.5)]),
        "dropout-around-stack": lambda: rk.DropoutWrapper(rk.MultiRNNCell([lstm, rk.GRUCell(
            H, H, key=key)]), input_keep_prob=0.5, variational_recurrent=True),
        "dropout-split": lambda: rk.DropoutWrapper(_cell("split"), output_keep_prob=0.5),
        "subclass": lambda: DoubledLSTM.from_weights(lstm.w_x, lstm.w_h, lstm.b),
        "split": lambda: rk.pytree.build(MinimalGatedUnit, w_x=jnp.ones((I, H)),
                                         w_h=jnp.ones((H, H))),
        "plain": Doubler,
        "projection": lambda: rk.OutputProjectionWrapper(lstm, 2, key=key),
    }
    return cells[name]()


F32, F64 = jnp.float32, jnp.float64
# cell, dtype, has_lengths, dropout, mode, gpu -> loops, or the start of the error
TABLE = [
    ("basic", F32, False, False, "auto", False, (E,)),
    ("lstm", F32, False, False, "auto", False, (E,)),
    ("gru", F32, True, False, "auto", False, (E,)),
    ("peephole", F32, False, False, "auto", False, (E,)),
    ("lstm-stack", F32, False, False, "auto", False, (E, E)),
    ("basic-softplus", F32, False, False, "auto", False, (A,)),
    ("basic-softplus", F32, False, False, "explicit", False, (G,)),
    ("subclass", F32, False, False, "auto", False, (A,)),
    ("subclass", F32, False, False, "explicit", False, (G,)),
    ("split", F32, False, False, "auto", False, (A,)),
    ("split", F32, True, False, "explicit", False, (G,)),
    ("mixed-stack", F32, False, False, "auto", False, (A,)),
    ("mixed-stack", F32, False, False, "explicit", False, (E, G)),
    ("plain", F32, False, False, "auto", False, (A,)),
    ("plain", F32, False, False, "explicit", False, "bptt: 'explicit' supports"),
    ("projection", F32, False, False, "auto", False, (A,)),
    ("dropout-lstm", F32, False, False, "auto", False, (E,)),
    # input and output dropout: masks on whole sequences around the layers' loops
    ("dropout-lstm", F32, False, True, "auto", False, (E,)),
    ("dropout-lstm", F32, True, True, "explicit", False, (E,)),
    ("dropout-lstm", F32, False, True, "autodiff", False, (A,)),
    ("dropout-stack", F32, True, True, "auto", False, (E, E)),
    ("dropout-around-stack", F32, False, True, "auto", False, (E, E)),
    ("dropout-split", F32, False, True, "auto", False, (A,)),
    ("dropout-split", F32, False, True, "explicit", False, (G,)),
    # state dropout acts inside the recurrence
    ("state-dropout-lstm", F32, False, False, "auto", False, (E,)),
    ("state-dropout-lstm", F32, False, True, "auto", False, (A,)),
    ("state-dropout-lstm", F32, False, True, "explicit", False, "bptt: 'explicit' supports"),
    ("lstm", F32, False, False, "autodiff", False, (A,)),
    ("lstm", F32, False, False, "fused", False, (E,)),
    ("lstm", F32, False, False, "cudnn", False, "bptt: 'cudnn' needs a GPU"),
    # on a GPU with cuDNN
    ("lstm", F32, False, False, "auto", True, (C,)),
    ("lstm", F32, False, False, "cudnn", True, (C,)),
    ("lstm-stack", F32, False, False, "auto", True, (C, C)),
    ("dropout-lstm", F32, False, False, "auto", True, (C,)),
    ("lstm", F32, False, False, "explicit", True, (E,)),
    ("lstm", F32, False, False, "autodiff", True, (A,)),
    ("lstm", F32, True, False, "auto", True, (E,)),
    ("lstm", F64, False, False, "auto", True, (E,)),
    ("lstm64", F32, False, False, "auto", True, (E,)),
    ("peephole", F32, False, False, "auto", True, (E,)),
    ("gru", F32, False, False, "auto", True, (E,)),
    ("subclass", F32, False, False, "auto", True, (A,)),
    ("dropout-lstm", F32, False, True, "auto", True, (E,)),
    ("dropout-lstm", F32, False, True, "cudnn", True, "bptt: 'cudnn' needs"),
    ("lstm", F32, True, False, "cudnn", True, "bptt: 'cudnn' needs"),
    ("peephole", F32, False, False, "cudnn", True, "bptt: 'cudnn' needs"),
]


@pytest.mark.parametrize("name, dtype, has_lengths, dropout, mode, gpu, expected", TABLE)
def test_choose_loop(name, dtype, has_lengths, dropout, mode, gpu, expected):
    with jax.enable_x64(dtype == F64 or name == "lstm64"):
        cell = _cell(name)
        choose = lambda: choose_loop(cell, dtype=dtype, has_lengths=has_lengths,  # noqa: E731
                                     dropout=dropout, mode=mode, gpu=gpu)
        if isinstance(expected, str):
            with pytest.raises(ValueError, match=f"^{expected}") as error:
                choose()
            assert "\n" not in str(error.value)
        else:
            assert choose() == expected


@pytest.mark.parametrize("mode", ["fast", None, 1])
def test_unknown_modes_are_refused(mode):
    with pytest.raises(ValueError, match=r"^bptt: expected one of auto, explicit, autodiff, "
                                         r"cudnn \(or the alias 'fused' for 'explicit'\)"):
        canonical_mode(mode)


def test_fused_is_an_alias_of_explicit():
    assert canonical_mode("fused") == canonical_mode("explicit") == "explicit"
    cell, x = _cell("gru"), jnp.ones((2, 5, I))
    grad = lambda mode: jax.grad(  # noqa: E731
        lambda c: jnp.sum(rk.dynamic_rnn(c, x, bptt=mode)[0] ** 2))(cell)
    for a, b in zip(jax.tree.leaves(grad("fused")), jax.tree.leaves(grad("explicit")),
                    strict=True):
        assert jnp.array_equal(a, b)


def test_objects_that_are_not_cells_are_refused_naming_what_they_lack():
    class NoState:
        output_size = state_size = I

        def __call__(self, inputs, state):
            return inputs, state

    assert isinstance(Doubler(), rk.Cell) and not isinstance(NoState(), rk.Cell)
    with pytest.raises(TypeError, match=r"^cell: expected a cell \(rnnkit.protocols.Cell.* "
                                        r"got NoState without zero_state$"):
        rk.dynamic_rnn(NoState(), jnp.ones((2, 5, I)))
    with pytest.raises(TypeError, match="^cell_bw: expected a cell"):
        rk.bidirectional_dynamic_rnn(Doubler(), NoState(), jnp.ones((2, 5, I)))
