"""The cell contract, as code: what an unroll needs of a cell, and what a split cell adds.

Every cell rnnkit ships satisfies ``Cell``; ``BasicRNNCell``, ``LSTMCell`` and ``GRUCell`` also
satisfy ``SplitCell``. A cell of your own needs only ``Cell`` to run on autodiff; as a
``SplitCell`` it can also run on the generic explicit BPTT (``bptt="explicit"``). Both are
``runtime_checkable``: ``isinstance(obj, Cell)`` checks that the members exist (not their
signatures), and the unroll functions refuse an object that fails it, naming what is missing.
"""

from typing import Any, Protocol, runtime_checkable

import jax


@runtime_checkable
class Cell(Protocol):
    """One step of a recurrent layer: ``cell(inputs [B, I], state) -> (output [B, O], state)``.

    ``state`` is any pytree of ``[B, ...]`` arrays (an array, an ``LSTMStateTuple``, a tuple of
    layers' states). A cell that uses randomness (dropout) also accepts ``key=`` in ``__call__``.
    """

    @property
    def output_size(self) -> Any:
        """``O``, the size of the output's last axis."""

    @property
    def state_size(self) -> Any:
        """The state's sizes, in the state's structure (``H``, ``LSTMStateTuple(H, H)``, ...)."""

    def zero_state(self, batch_size: int, dtype: Any = ...) -> Any:
        """The all-zeros state for ``batch_size`` sequences, in ``dtype``."""

    def __call__(self, inputs: jax.Array, state: Any) -> tuple[jax.Array, Any]:
        """One time step."""


@runtime_checkable
class SplitCell(Cell, Protocol):
    """A cell written as two halves, so that a step's input side needs no state::

        cell(x, state) == cell.recurrent_step(cell.input_projection(x), state)

    ``input_projection`` must work on inputs of any leading shape (``[T, B, I]`` too) and
    ``recurrent_step`` on any batch size (it also runs on ``T * B`` rows at once).
    """

    def input_projection(self, inputs: jax.Array) -> jax.Array:
        """``[..., I] -> [..., P]``: the part of a step that reads only the inputs."""

    def recurrent_step(self, projected: jax.Array, state: Any) -> tuple[jax.Array, Any]:
        """``([B, P], state) -> (output [B, O], new_state)``: the rest of the step."""


def missing_members(obj, protocol=Cell):
    """The members of ``protocol`` that ``obj`` lacks (empty when it satisfies it)."""
    names = ("output_size", "state_size", "zero_state", "__call__")
    if protocol is SplitCell:
        names += ("input_projection", "recurrent_step")
    return [name for name in names if not hasattr(obj, name)]
