"""rnnkit: recurrent neural networks on JAX, with the names of Geron's Chapter 14."""

from rnnkit import datasets, parallel
from rnnkit.activations import ACTIVATIONS, get_activation
from rnnkit.cells import BasicRNNCell, Dense, GRUCell, LSTMCell, LSTMStateTuple
from rnnkit.parallel import use_cpu_cores
from rnnkit.protocols import Cell, SplitCell
from rnnkit.pytree import replace
from rnnkit.unroll import bidirectional_dynamic_rnn, dynamic_rnn, reverse_sequence, static_rnn
from rnnkit.wrappers import DropoutWrapper, MultiRNNCell, OutputProjectionWrapper, ResidualWrapper

__all__ = [
    "ACTIVATIONS",
    "BasicRNNCell",
    "Cell",
    "Dense",
    "DropoutWrapper",
    "GRUCell",
    "LSTMCell",
    "LSTMStateTuple",
    "MultiRNNCell",
    "OutputProjectionWrapper",
    "ResidualWrapper",
    "SplitCell",
    "bidirectional_dynamic_rnn",
    "datasets",
    "dynamic_rnn",
    "get_activation",
    "parallel",
    "replace",
    "reverse_sequence",
    "static_rnn",
    "use_cpu_cores",
]
