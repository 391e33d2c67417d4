"""The first steps of Chapter 14 ("Recurrent Neural Networks"), in rnnkit, block by block.

Each block names the book's TF1 code it replaces and prints what the notebook prints. The book's
numbers come from TF1's seed-42 random stream, which no other library reproduces; what carries
over is how the blocks relate: the manual RNN, ``static_rnn`` and ``dynamic_rnn`` give the same
outputs for the same weights, and with ``sequence_length`` the padded step outputs zeros and the
final state is each instance's last valid output.

Run with ``python examples/seed_walkthrough.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np

import rnnkit

n_inputs, n_neurons, n_steps = 3, 5, 2

# The book's mini-batch: 4 instances, 2 time steps of 3 features. The book feeds these integer
# arrays into float32 placeholders; rnnkit has no placeholders, so they are made float32 here.
X0_batch = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]], np.float32)  # t = 0
X1_batch = np.array([[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]], np.float32)  # t = 1
X_batch = np.stack([X0_batch, X1_batch], axis=1)  # [4, 2, 3]: instance 2's t = 1 is padding
seq_length_batch = np.array([2, 1, 2, 2])


def manual_rnn(key):
    """The book's RNN by hand: ``Wx``, ``Wy``, ``b`` drawn with ``tf.random_normal``, then
    ``Y0 = tf.tanh(tf.matmul(X0, Wx) + b)`` and
    ``Y1 = tf.tanh(tf.matmul(Y0, Wy) + tf.matmul(X1, Wx) + b)``."""
    key_x, key_y, key_b = jax.random.split(key, 3)  # reset_graph(): tf.set_random_seed(42)
    Wx = jax.random.normal(key_x, (n_inputs, n_neurons))
    Wy = jax.random.normal(key_y, (n_neurons, n_neurons))
    b = jax.random.normal(key_b, (1, n_neurons))
    Y0 = jnp.tanh(X0_batch @ Wx + b)  # [4, 5]
    Y1 = jnp.tanh(Y0 @ Wy + X1_batch @ Wx + b)  # [4, 5]
    return (Wx, Wy, b), (Y0, Y1)


def main():
    """Print each block's results; return them by block name (for tests/test_walkthrough.py)."""
    np.set_printoptions(precision=6, suppress=True)
    key = jax.random.PRNGKey(42)

    print("1. Manual RNN over two time steps")
    (Wx, Wy, b), (Y0, Y1) = manual_rnn(key)
    print("Y0_val:\n", Y0, "\nY1_val:\n", Y1)

    print("\n2. BasicRNNCell + static_rnn over [X0, X1]")
    # Book: basic_cell = tf.contrib.rnn.BasicRNNCell(num_units=n_neurons)
    #       output_seqs, states = tf.contrib.rnn.static_rnn(basic_cell, [X0, X1], dtype=tf.float32)
    # The book's cell creates its own random weights. A new rnnkit cell does too (with an explicit
    # key), but here it takes the manual block's weights, so the two blocks can be compared.
    basic_cell = rnnkit.BasicRNNCell.from_weights(Wx, Wy, b[0])  # tanh, as in the book
    output_seqs, states = rnnkit.static_rnn(basic_cell, [X0_batch, X1_batch])
    Y0_static, Y1_static = output_seqs
    print("Y1_val:\n", Y1_static)
    print("same as the manual RNN:", bool(jnp.allclose(Y1_static, Y1, atol=1e-6)))
    fresh_cell = rnnkit.BasicRNNCell(n_inputs, n_neurons, key=jax.random.PRNGKey(0))
    print("a fresh BasicRNNCell (its own random weights), Y1_val:\n",
          rnnkit.static_rnn(fresh_cell, [X0_batch, X1_batch])[0][1])

    print("\n3. static_rnn from one [None, n_steps, n_inputs] tensor")
    # Book: X_seqs = tf.unstack(tf.transpose(X, perm=[1, 0, 2]))
    #       output_seqs, states = tf.contrib.rnn.static_rnn(basic_cell, X_seqs, dtype=tf.float32)
    #       outputs = tf.transpose(tf.stack(output_seqs), perm=[1, 0, 2])
    X_seqs = list(jnp.transpose(X_batch, (1, 0, 2)))  # n_steps arrays of [4, 3]
    output_seqs, states = rnnkit.static_rnn(basic_cell, X_seqs)
    outputs_static = jnp.transpose(jnp.stack(output_seqs), (1, 0, 2))  # [4, 2, 5]
    print("outputs_val[0]:\n", outputs_static[0])

    print("\n4. dynamic_rnn: no unstacking, one compiled loop")
    # Book: outputs, states = tf.nn.dynamic_rnn(basic_cell, X, dtype=tf.float32)
    outputs_dynamic, states_dynamic = rnnkit.dynamic_rnn(basic_cell, X_batch)
    print("outputs_val[1]:\n", outputs_dynamic[1])
    print("same as static_rnn:", bool(jnp.allclose(outputs_dynamic, outputs_static, atol=1e-6)))

    print("\n5. Sequence lengths: instance 2 has one step, its second step is padding")
    # Book: seq_length = tf.placeholder(tf.int32, [None])
    #       outputs, states = tf.nn.dynamic_rnn(basic_cell, X, dtype=tf.float32,
    #                                           sequence_length=seq_length)
    outputs_val, states_val = rnnkit.dynamic_rnn(basic_cell, X_batch,
                                                 sequence_length=seq_length_batch)
    print("outputs_val:\n", outputs_val)
    print("states_val:\n", states_val)
    last_valid = outputs_val[jnp.arange(4), seq_length_batch - 1]  # [4, 5]
    print("padded output of instance 2 is zero:", bool((outputs_val[1, 1] == 0).all()))
    print("states are the last valid outputs:", bool(jnp.array_equal(states_val, last_valid)))

    return {
        "weights": (Wx, Wy, b),
        "manual": (Y0, Y1),
        "static": (Y0_static, Y1_static),
        "static_from_tensor": outputs_static,
        "dynamic": (outputs_dynamic, states_dynamic),
        "sequence_length": (outputs_val, states_val),
    }


if __name__ == "__main__":
    main()
