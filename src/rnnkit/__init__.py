"""rnnkit: recurrent neural networks on JAX, with the names of Geron's Chapter 14."""

from rnnkit import datasets, decode, parallel, seq2seq
from rnnkit.activations import ACTIVATIONS, get_activation
from rnnkit.cells import BasicRNNCell, Dense, GRUCell, LSTMCell, LSTMStateTuple
from rnnkit.decode import Decoded, beam_search, greedy_decode
from rnnkit.embedding import Embedding
from rnnkit.parallel import use_cpu_cores
from rnnkit.protocols import Cell, SplitCell
from rnnkit.pytree import replace
from rnnkit.seq2seq import Decoder, EncoderDecoder, sequence_loss, translate
from rnnkit.unroll import bidirectional_dynamic_rnn, dynamic_rnn, reverse_sequence, static_rnn
from rnnkit.vocab import EOS, PAD, SOS, Vocabulary
from rnnkit.wrappers import DropoutWrapper, MultiRNNCell, OutputProjectionWrapper, ResidualWrapper

__all__ = [
    "ACTIVATIONS",
    "BasicRNNCell",
    "Cell",
    "Decoded",
    "Decoder",
    "Dense",
    "DropoutWrapper",
    "EOS",
    "Embedding",
    "EncoderDecoder",
    "GRUCell",
    "LSTMCell",
    "LSTMStateTuple",
    "MultiRNNCell",
    "OutputProjectionWrapper",
    "PAD",
    "ResidualWrapper",
    "SOS",
    "SplitCell",
    "Vocabulary",
    "beam_search",
    "bidirectional_dynamic_rnn",
    "datasets",
    "decode",
    "dynamic_rnn",
    "get_activation",
    "greedy_decode",
    "parallel",
    "replace",
    "reverse_sequence",
    "seq2seq",
    "sequence_loss",
    "static_rnn",
    "translate",
    "use_cpu_cores",
]
