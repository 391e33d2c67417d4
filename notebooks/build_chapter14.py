"""Builds notebooks/chapter14.ipynb of rnnkit from the cells below, runs it, and saves it.

Usage (from the repository root, with its .venv):

    .venv/bin/python notebooks/build_chapter14.py [--no-run] [--out PATH]

It runs with $RNNKIT_DATA and HOME pointed at empty folders, so the saved outputs are those of
the embedded 5,000-digit subset, as on an offline machine. A full run takes a few minutes on
2 cores (10 MNIST epochs, then 1,500 iterations of each time-series model).
"""

import argparse
import os
import sys
import tempfile
import textwrap
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = []  # (kind, id, source, tags)


def md(cell_id, text):
    CELLS.append(("markdown", cell_id, textwrap.dedent(text).strip("\n"), ()))


def code(cell_id, text, tags=()):
    CELLS.append(("code", cell_id, textwrap.dedent(text).strip("\n"), tuple(tags)))


def book(cell_id, intro, tf1, after=""):
    """A markdown cell: what the step does, then the book's TF1 lines."""
    text = textwrap.dedent(intro).strip("\n")
    text += "\n\n**The book (TensorFlow 1):**\n\n```python\n"
    text += textwrap.dedent(tf1).strip("\n") + "\n```\n\n**rnnkit:**"
    if after:
        text += " " + textwrap.dedent(after).strip("\n")
    CELLS.append(("markdown", cell_id, text, ()))


# --- the cells ------------------------------------------------------------------------------

md("title", """
# Chapter 14, Recurrent Neural Networks, with rnnkit

The code of Chapter 14 of Géron's *Hands-On Machine Learning with Scikit-Learn and TensorFlow*
(1st edition, TensorFlow 1), step by step in the chapter's order: an RNN by hand over two time
steps, `static_rnn`, packing sequences into one tensor, `dynamic_rnn`, sequence lengths, the
MNIST classifier with its learning curves, then the time series: an RNN that predicts the next
value at every step, the creative RNN that extends a sequence with its own predictions, and a
deep RNN with dropout. Each step quotes the book's TF1 code, then runs rnnkit's. The MNIST
loop is the chapter notebook's variant that rnnkit's `train` command follows: 10 epochs, with a
validation set (the book's public notebook trains 100 epochs and reports test accuracy).

The book's numbers come from TF1's seed-42 random stream, which no other library reproduces.
What carries over is how the results relate (the cells below check it) and how well the
models learn.

**Data.** `rk.datasets.mnist.read_data_sets()` reads the full MNIST (55,000 / 5,000 / 10,000
images) from `$RNNKIT_DATA/mnist` or `~/.cache/rnnkit/mnist` (`read_data_sets(download=True)`
fetches it there). When it finds none, it uses the embedded subset: 5,000 real MNIST digits
split 4,000 / 500 / 500, and one line says so. The outputs saved here are from that subset.
The time series is computed, so it needs no data.

**Parameters.** The next cell holds them; `tests/test_notebook.py` runs the notebook with
`n_epochs = 1` and `n_iterations = 50`.
""")

code("parameters", """
n_epochs = 10        # passes over the MNIST training set, as in the book
batch_size = 150     # MNIST examples per training step
n_iterations = 1500  # training steps of each time-series model, as in the book
""", tags=["parameters"])

md("setup-md", """
## Setup

The book resets TensorFlow's graph and seeds its random streams before each model. JAX has no
graph and no hidden random state: every random draw takes an explicit key, here made from the
same seed, 42.

**The book (TensorFlow 1):**

```python
import tensorflow as tf
import numpy as np

def reset_graph(seed=42):
    tf.reset_default_graph()
    tf.set_random_seed(seed)
    np.random.seed(seed)
```

**rnnkit:**
""")

code("setup", """
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import rnnkit as rk
from rnnkit.config import TrainConfig
from rnnkit.evaluate import evaluate
from rnnkit.train import init_state, make_optimizer, make_train_step

np.set_printoptions(precision=6, suppress=True)
plt.rcParams["figure.dpi"] = 72  # small PNGs in the saved notebook
""")

# --- 1. the manual RNN

book("manual-md", """
## A recurrent layer by hand, over two time steps

A layer of 5 recurrent neurons reads a mini-batch of 4 instances, each a sequence of two
3-feature inputs: $\\mathbf{Y}_{(t)} = \\tanh(\\mathbf{X}_{(t)} \\mathbf{W}_x +
\\mathbf{Y}_{(t-1)} \\mathbf{W}_y + \\mathbf{b})$, with no $\\mathbf{Y}_{(t-1)}$ term at $t = 0$.
""", """
n_inputs = 3
n_neurons = 5

reset_graph()

X0 = tf.placeholder(tf.float32, [None, n_inputs])
X1 = tf.placeholder(tf.float32, [None, n_inputs])

Wx = tf.Variable(tf.random_normal(shape=[n_inputs, n_neurons],dtype=tf.float32))
Wy = tf.Variable(tf.random_normal(shape=[n_neurons,n_neurons],dtype=tf.float32))
b = tf.Variable(tf.zeros([1, n_neurons], dtype=tf.float32))

Y0 = tf.tanh(tf.matmul(X0, Wx) + b)
Y1 = tf.tanh(tf.matmul(Y0, Wy) + tf.matmul(X1, Wx) + b)

init = tf.global_variables_initializer()

X0_batch = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]]) # t = 0
X1_batch = np.array([[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]]) # t = 1

with tf.Session() as sess:
    init.run()
    Y0_val, Y1_val = sess.run([Y0, Y1], feed_dict={X0: X0_batch, X1: X1_batch})
""", """
no placeholders and no session: a function of the inputs, called on the batch. The book feeds
integer arrays into float32 placeholders; here the arrays are float32 from the start.
""")

code("manual", """
n_inputs = 3
n_neurons = 5

key_x, key_y = jax.random.split(jax.random.key(42))  # reset_graph(): one seed, explicit keys

Wx = jax.random.normal(key_x, (n_inputs, n_neurons))   # [3, 5]
Wy = jax.random.normal(key_y, (n_neurons, n_neurons))  # [5, 5]
b = jnp.zeros((1, n_neurons))                          # [1, 5]


def manual_rnn(X0, X1):
    Y0 = jnp.tanh(X0 @ Wx + b)            # [B, 5]
    Y1 = jnp.tanh(Y0 @ Wy + X1 @ Wx + b)  # [B, 5]
    return Y0, Y1


X0_batch = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]], np.float32)  # t = 0
X1_batch = np.array([[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]], np.float32)  # t = 1

Y0_val, Y1_val = manual_rnn(X0_batch, X1_batch)
print("Y0_val:", Y0_val, "Y1_val:", Y1_val, sep="\\n")
""")

# --- 2. static_rnn

book("static-md", """
## `static_rnn`: a cell unrolled over a list of time steps

`BasicRNNCell` is the same layer as above, and `static_rnn` calls it once per input in the
list, passing the state along.
""", """
X0 = tf.placeholder(tf.float32, [None, n_inputs])
X1 = tf.placeholder(tf.float32, [None, n_inputs])

basic_cell = tf.contrib.rnn.BasicRNNCell(num_units=n_neurons)
output_seqs, states = tf.contrib.rnn.static_rnn(basic_cell, [X0, X1],
                                                dtype=tf.float32)
Y0, Y1 = output_seqs
""", """
a cell holds its weights, so it takes its input size and a key when it is made. To compare it
with the manual RNN, the first cell takes the manual RNN's weights (`from_weights`); a fresh
cell draws its own.
""")

code("static", """
basic_cell = rk.BasicRNNCell.from_weights(Wx, Wy, b[0])  # tanh, as in the book
output_seqs, states = rk.static_rnn(basic_cell, [X0_batch, X1_batch])
Y0_static, Y1_static = output_seqs
print("Y1_val:", Y1_static, sep="\\n")
np.testing.assert_allclose(Y0_static, Y0_val, atol=1e-6)  # the manual RNN's outputs
np.testing.assert_allclose(Y1_static, Y1_val, atol=1e-6)
np.testing.assert_array_equal(states, Y1_static)  # a basic cell's state is its output

fresh_cell = rk.BasicRNNCell(n_inputs, n_neurons, key=jax.random.key(0))
print("a fresh BasicRNNCell's Y1_val:", rk.static_rnn(fresh_cell, [X0_batch, X1_batch])[0][1],
      sep="\\n")
""")

# --- 3. packing sequences

book("packing-md", """
## Packing sequences into one tensor

With many time steps, a list of inputs is clumsy. The book feeds one `[None, n_steps,
n_inputs]` tensor, unstacks it into the list that `static_rnn` takes, and stacks the outputs
back into `[None, n_steps, n_neurons]`.
""", """
n_steps = 2

X = tf.placeholder(tf.float32, [None, n_steps, n_inputs])
X_seqs = tf.unstack(tf.transpose(X, perm=[1, 0, 2]))
basic_cell = tf.contrib.rnn.BasicRNNCell(num_units=n_neurons)
output_seqs, states = tf.contrib.rnn.static_rnn(basic_cell, X_seqs,
                                                dtype=tf.float32)
outputs = tf.transpose(tf.stack(output_seqs), perm=[1, 0, 2])

X_batch = np.array([
        # t = 0      t = 1
        [[0, 1, 2], [9, 8, 7]], # instance 1
        [[3, 4, 5], [0, 0, 0]], # instance 2
        [[6, 7, 8], [6, 5, 4]], # instance 3
        [[9, 0, 1], [3, 2, 1]], # instance 4
    ])
""")

code("packing", """
n_steps = 2

X_batch = np.array([
    # t = 0      t = 1
    [[0, 1, 2], [9, 8, 7]],  # instance 1
    [[3, 4, 5], [0, 0, 0]],  # instance 2
    [[6, 7, 8], [6, 5, 4]],  # instance 3
    [[9, 0, 1], [3, 2, 1]],  # instance 4
], np.float32)  # [4, 2, 3]: the batch above, packed

X_seqs = list(jnp.transpose(X_batch, (1, 0, 2)))  # n_steps arrays of [4, 3]
output_seqs, states = rk.static_rnn(basic_cell, X_seqs)
outputs_val = jnp.transpose(jnp.stack(output_seqs), (1, 0, 2))  # [4, 2, 5]
print("outputs_val:", outputs_val, sep="\\n")
np.testing.assert_allclose(outputs_val, jnp.stack([Y0_val, Y1_val], axis=1), atol=1e-6)
""")

# --- 4. dynamic_rnn

book("dynamic-md", """
## `dynamic_rnn`: one loop over time

`dynamic_rnn` takes the `[None, n_steps, n_inputs]` tensor as it is and runs the cell in a
loop (TF1's `while_loop`, rnnkit's `lax.scan`): no unstacking, and the compiled program does
not grow with the number of steps.
""", """
X = tf.placeholder(tf.float32, [None, n_steps, n_inputs])

basic_cell = tf.contrib.rnn.BasicRNNCell(num_units=n_neurons)
outputs, states = tf.nn.dynamic_rnn(basic_cell, X, dtype=tf.float32)
""", """
no `dtype=`: the outputs take the inputs' dtype.
""")

code("dynamic", """
outputs, states = rk.dynamic_rnn(basic_cell, X_batch)  # [4, 2, 5], [4, 5]
print("outputs_val:", outputs, sep="\\n")
np.testing.assert_allclose(outputs, outputs_val, atol=1e-6)  # static_rnn's outputs
np.testing.assert_array_equal(states, outputs[:, -1])
""")

# --- 5. sequence lengths

book("lengths-md", """
## Sequences of different lengths

Instance 2 has a single input; its second step is padding. With `sequence_length`, the RNN
outputs zeros past each sequence's end and copies the state through, so `states` holds each
instance's last valid output.
""", """
seq_length = tf.placeholder(tf.int32, [None])
outputs, states = tf.nn.dynamic_rnn(basic_cell, X, dtype=tf.float32,
                                    sequence_length=seq_length)

X_batch = np.array([
        # step 0     step 1
        [[0, 1, 2], [9, 8, 7]], # instance 1
        [[3, 4, 5], [0, 0, 0]], # instance 2 (padded with zero vectors)
        [[6, 7, 8], [6, 5, 4]], # instance 3
        [[9, 0, 1], [3, 2, 1]], # instance 4
    ])
seq_length_batch = np.array([2, 1, 2, 2])

with tf.Session() as sess:
    init.run()
    outputs_val, states_val = sess.run(
        [outputs, states], feed_dict={X: X_batch, seq_length: seq_length_batch})
""")

code("lengths", """
seq_length_batch = np.array([2, 1, 2, 2])

outputs_val, states_val = rk.dynamic_rnn(basic_cell, X_batch, sequence_length=seq_length_batch)
print("outputs_val:", outputs_val, "states_val:", states_val, sep="\\n")
np.testing.assert_array_equal(outputs_val[1, 1], 0.0)  # instance 2's padded step
last_valid = outputs_val[jnp.arange(4), seq_length_batch - 1]  # [4, 5]
np.testing.assert_array_equal(states_val, last_valid)
""")

md("lengths-note", """
The padding is never read: whatever it holds (NaN included) reaches neither the outputs, the
states nor the gradients. The book handles variable-length *outputs* with an end-of-sequence
token, in its text only; there is no code for it.
""")

# --- 6. MNIST

book("mnist-data-md", """
## Training a sequence classifier on MNIST

The RNN reads each 28x28 digit as a sequence of 28 rows of 28 pixels. 150 recurrent neurons
read the rows; a dense layer on the final state gives the 10 logits.

First the data. The book's `read_data_sets` reads MNIST's files from a folder; rnnkit's
searches its folders, and on a machine without the data it returns the embedded subset and
says so in one line (on stderr).
""", """
from tensorflow.examples.tutorials.mnist import input_data

mnist = input_data.read_data_sets("/tmp/mnist/data")
X_valid = mnist.validation.images.reshape((-1, n_steps, n_inputs))
y_valid = mnist.validation.labels
""")

code("mnist-data", """
n_steps = 28
n_inputs = 28

mnist = rk.datasets.mnist.read_data_sets()
X_valid = mnist.validation.images.reshape((-1, n_steps, n_inputs))  # [N, 28, 28]
y_valid = mnist.validation.labels
X_test = mnist.test.images.reshape((-1, n_steps, n_inputs))
y_test = mnist.test.labels
print(f"{mnist.train.num_examples:,} training, {mnist.validation.num_examples:,} validation, "
      f"{mnist.test.num_examples:,} test images")
""")

md("mnist-model-md", """
### The model

The book builds the graph line by line. rnnkit's `TrainConfig` holds the same choices (its
defaults are the book's experiment), `init_state` draws the weights and Adam's state, and the
model is the book's graph as a function:

| TensorFlow 1 (the book) | rnnkit |
|---|---|
| `basic_cell = tf.contrib.rnn.BasicRNNCell(num_units=n_neurons)` | `model.cell`: `BasicRNNCell(28, 150)` |
| `outputs, states = tf.nn.dynamic_rnn(basic_cell, X, dtype=tf.float32)` | `outputs, states = rk.dynamic_rnn(model.cell, X)` |
| `logits = tf.layers.dense(states, n_outputs)` | `logits = model.dense(states)`; both lines: `model(X)` |
| `xentropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)`, `loss = tf.reduce_mean(xentropy)` | `rnnkit.model.loss_and_accuracy(model, X, y)` |
| `correct = tf.nn.in_top_k(logits, y, 1)`, `accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))` | (the same function's second value) |
| `optimizer = tf.train.AdamOptimizer(learning_rate=learning_rate)` | `make_optimizer(config)`: `optax.adam(config.lr)` |
| `training_op = optimizer.minimize(loss)` | `train_step = make_train_step(optimizer)`, jitted |
| `init = tf.global_variables_initializer()` | `state = init_state(config)` |

**The book (TensorFlow 1):**

```python
n_neurons = 150
n_outputs = 10

learning_rate = 0.001

X = tf.placeholder(tf.float32, shape=(None, n_steps, n_inputs))
y = tf.placeholder(tf.int32, shape=(None))

basic_cell = tf.contrib.rnn.BasicRNNCell(num_units=n_neurons)
outputs, states = tf.nn.dynamic_rnn(basic_cell, X, dtype=tf.float32)

logits = tf.layers.dense(states, n_outputs)
```

**rnnkit:**
""")

code("mnist-model", """
n_neurons = 150
n_outputs = 10  # MNIST's ten classes; the model's Dense layer has them

learning_rate = 0.001

config = TrainConfig(cell="basic", units=n_neurons, lr=learning_rate, epochs=n_epochs,
                     batch_size=batch_size, seed=42)
state = init_state(config)  # the model's weights and Adam's state, drawn from seed 42
model = state.model
print(jax.tree.map(jnp.shape, model))

outputs, states = rk.dynamic_rnn(model.cell, X_valid[:5])  # [5, 28, 150], [5, 150]
logits = model.dense(states)  # [5, 10]
assert logits.shape == (5, n_outputs)
np.testing.assert_allclose(logits, model(X_valid[:5]), atol=1e-6)
""")

book("mnist-step-md", """
### The training step

The loss is the mean sparse softmax cross-entropy, minimised with Adam; the accuracy is the
share of top-1 hits. `make_train_step` returns one jitted function,
`train_step(state, X_batch, y_batch) -> (state, (loss, accuracy))`: the gradients of the loss
(backpropagation through time; for the built-in cells rnnkit's explicit backward pass) and
Adam's update, in one compiled call. It is a pure function: the state goes in, the updated
state comes out.
""", """
xentropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
loss = tf.reduce_mean(xentropy)

optimizer = tf.train.AdamOptimizer(learning_rate=learning_rate)
training_op = optimizer.minimize(loss)

correct = tf.nn.in_top_k(logits, y, 1)
accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))

init = tf.global_variables_initializer()
""")

code("mnist-step", """
train_step = make_train_step(make_optimizer(config))
""")

book("mnist-loop-md", """
### The training loop

The book's loop, line for line. After each epoch it prints the last batch's loss and accuracy
and those of the validation set. The per-batch values are also kept, for the learning curves.

The book's output, on the full MNIST (its notebook stops during epoch 9):

```
1	Training loss: 0.275220	Training acc: 0.913333	Validation loss: 0.244868	Accuracy: 93.10%
2	Training loss: 0.124366	Training acc: 0.966667	Validation loss: 0.164343	Accuracy: 95.58%
3	Training loss: 0.246158	Training acc: 0.926667	Validation loss: 0.146260	Accuracy: 96.04%
4	Training loss: 0.161353	Training acc: 0.953333	Validation loss: 0.129532	Accuracy: 96.38%
5	Training loss: 0.150708	Training acc: 0.966667	Validation loss: 0.137861	Accuracy: 96.18%
6	Training loss: 0.116905	Training acc: 0.953333	Validation loss: 0.107175	Accuracy: 96.98%
7	Training loss: 0.099635	Training acc: 0.966667	Validation loss: 0.095419	Accuracy: 97.50%
8	Training loss: 0.165225	Training acc: 0.946667	Validation loss: 0.102198	Accuracy: 97.02%
```
""", """
n_epochs = 10
batch_size = 150

with tf.Session() as sess:
    init.run()
    for epoch in range(1, n_epochs + 1):
        for iteration in range(mnist.train.num_examples // batch_size):
            X_batch, y_batch = mnist.train.next_batch(batch_size)
            X_batch = X_batch.reshape((-1, n_steps, n_inputs))
            loss_train, acc_train, _ = sess.run([loss, accuracy, training_op], feed_dict={X: X_batch, y: y_batch})

        loss_val, acc_val = sess.run([loss, accuracy], feed_dict={X: X_valid, y: y_valid})
        print("{}\\tTraining loss: {:.6f}\\tTraining acc: {:.6f}\\tValidation loss: {:.6f}\\tAccuracy: {:.2f}%".format(
                        epoch, loss_train, acc_train, loss_val, acc_val * 100))
""", """
the step's loss and accuracy stay on the device until the epoch's line is printed, so the loop
does not wait for each step.
""")

code("mnist-loop", """
history = []  # one row per epoch
for epoch in range(1, n_epochs + 1):
    batch_losses, batch_accs = [], []
    for iteration in range(mnist.train.num_examples // batch_size):
        X_batch, y_batch = mnist.train.next_batch(batch_size)
        X_batch = X_batch.reshape((-1, n_steps, n_inputs))
        state, (loss_train, acc_train) = train_step(state, X_batch, y_batch)
        batch_losses.append(loss_train)
        batch_accs.append(acc_train)

    loss_val, acc_val = evaluate(state.model, X_valid, y_valid)
    history.append(dict(epoch=epoch, batch_loss=np.array(batch_losses),
                        batch_acc=np.array(batch_accs), val_loss=loss_val, val_acc=acc_val))
    print("{}\\tTraining loss: {:.6f}\\tTraining acc: {:.6f}\\tValidation loss: {:.6f}"
          "\\tAccuracy: {:.2f}%".format(epoch, loss_train, acc_train, loss_val, acc_val * 100))
""")

md("curves-md", """
### Learning curves

Each training batch's loss and accuracy (thin line), their mean over each epoch, and the
validation set's after each epoch. The book prints only the last batch's figures; they scatter
as widely as the thin line does.
""")

code("curves", """
iterations = len(history[0]["batch_loss"])  # per epoch
epochs = [row["epoch"] for row in history]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, name, title in zip(axes, ("loss", "acc"), ("Loss", "Accuracy")):
    per_batch = np.concatenate([row[f"batch_{name}"] for row in history])
    ax.plot(np.arange(1, len(per_batch) + 1) / iterations, per_batch, lw=0.6, alpha=0.5,
            label="training batch")
    ax.plot(epochs, [row[f"batch_{name}"].mean() for row in history], "o-",
            label="training (epoch mean)")
    ax.plot(epochs, [row[f"val_{name}"] for row in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
axes[1].set_ylim(top=1.0)
plt.show()
""")

md("test-md", """
### Test accuracy

On the full MNIST, the book's run reached 97.26% test accuracy after 10 epochs (its runs from
2017 and 2018: 96.4% to 97.4%). The embedded subset has 4,000 training images instead of
55,000, so expect less from it.
""")

code("test", """
loss_test, acc_test = evaluate(state.model, X_test, y_test)
print(f"Test loss: {loss_test:.6f}\\tTest accuracy: {acc_test * 100:.2f}%")
""")

code("digits", """
probabilities = jax.nn.softmax(state.model(X_test[:12]))  # [12, 10]
fig, axes = plt.subplots(1, 12, figsize=(11, 1.6))
for ax, image, label, p in zip(axes, X_test, y_test, probabilities):
    ax.imshow(image, cmap="binary")
    ax.set_title(f"{int(p.argmax())} ({float(p.max()):.0%})",
                 color="black" if p.argmax() == label else "red", fontsize=9)
    ax.axis("off")
fig.suptitle("the first test digits: predicted class (probability); red: wrong", fontsize=10)
plt.show()
""")


# --- 7. the time series

book("series-md", """
## Time series

Now an RNN that predicts the next value of a time series, at every step (sequence to sequence).
The series is $t \\sin(t)/3 + 2 \\sin(5t)$ for $t$ in $[0, 30]$, sampled every 0.1. A training
instance is 20 consecutive values; its targets are the same values one step (0.1) later.
""", """
t_min, t_max = 0, 30
resolution = 0.1

def time_series(t):
    return t * np.sin(t) / 3 + 2 * np.sin(t*5)

def next_batch(batch_size, n_steps):
    t0 = np.random.rand(batch_size, 1) * (t_max - t_min - n_steps * resolution)
    Ts = t0 + np.arange(0., n_steps + 1) * resolution
    ys = time_series(Ts)
    return ys[:, :-1].reshape(-1, n_steps, 1), ys[:, 1:].reshape(-1, n_steps, 1)

t = np.linspace(t_min, t_max, int((t_max - t_min) / resolution))

n_steps = 20
t_instance = np.linspace(12.2, 12.2 + resolution * (n_steps + 1), n_steps + 1)
""", """
`rnnkit.timeseries` has the series, its range and `next_batch`, which draws from a NumPy
generator it is given rather than from NumPy's global state. `instance()` is the book's test
instance at t = 12.2 (the book's `linspace` spaces its 21 points 0.105 apart; so does
`instance()`). The figure is the book's.
""")

code("series", """
from rnnkit.timeseries import RESOLUTION as resolution, T_MAX as t_max, T_MIN as t_min
from rnnkit.timeseries import instance, next_batch, time_series

t = np.linspace(t_min, t_max, int((t_max - t_min) / resolution))  # 300 points

n_steps = 20
t_instance = np.linspace(12.2, 12.2 + resolution * (n_steps + 1), n_steps + 1)
X_new, y_new = instance(12.2, n_steps)  # [1, 20, 1] each: the series at t_instance[:-1], [1:]
np.testing.assert_allclose(X_new[0, :, 0], time_series(t_instance[:-1]), rtol=1e-6)

plt.figure(figsize=(11, 4))
plt.subplot(121)
plt.title("A time series (generated)", fontsize=14)
plt.plot(t, time_series(t), label=r"$t . \\sin(t) / 3 + 2 . \\sin(5t)$")
plt.plot(t_instance[:-1], X_new[0, :, 0], "b-", linewidth=3, label="A training instance")
plt.legend(loc="lower left", fontsize=14)
plt.axis([0, 30, -17, 13])
plt.xlabel("Time")
plt.ylabel("Value")

plt.subplot(122)
plt.title("A training instance", fontsize=14)
plt.plot(t_instance[:-1], X_new[0, :, 0], "bo", markersize=10, label="instance")
plt.plot(t_instance[1:], y_new[0, :, 0], "w*", markersize=10, markeredgecolor="k",
         label="target")  # the book's white stars, edged to show on white
plt.legend(loc="upper left")
plt.xlabel("Time")
plt.show()
""")

code("series-batch", """
rng = np.random.default_rng(42)  # the training batches' random stream
X_batch, y_batch = next_batch(rng, 1, n_steps)  # [1, 20, 1] each
np.testing.assert_array_equal(y_batch[0, :-1], X_batch[0, 1:])  # the targets: one step later
np.c_[X_batch[0], y_batch[0]]
""")

book("wrapper-md", """
### An RNN that predicts at every step

100 recurrent ReLU neurons, unrolled over the instance's 20 steps: each step reads one value
and must output one. The cell's output at each step is a vector of 100 values, so the book
first wraps the cell in an `OutputProjectionWrapper`, a linear layer with one output applied to
the cell's output at every step.
""", """
n_steps = 20
n_inputs = 1
n_neurons = 100
n_outputs = 1

X = tf.placeholder(tf.float32, [None, n_steps, n_inputs])
y = tf.placeholder(tf.float32, [None, n_steps, n_outputs])

cell = tf.contrib.rnn.OutputProjectionWrapper(
    tf.contrib.rnn.BasicRNNCell(num_units=n_neurons, activation=tf.nn.relu),
    output_size=n_outputs)

outputs, states = tf.nn.dynamic_rnn(cell, X, dtype=tf.float32)
""", """
`SequenceRegressor` runs such a cell over `[B, T, 1]` inputs and returns the predictions
`[B, T, 1]` and the final state.
""")

code("wrapper", """
from rnnkit.timeseries import SequenceRegressor, build_regressor

n_inputs = 1
n_neurons = 100
n_outputs = 1

key = jax.random.key(42)
cell_key, projection_key = jax.random.split(key)
cell = rk.OutputProjectionWrapper(
    rk.BasicRNNCell(n_inputs, n_neurons, activation="relu", key=cell_key),
    n_outputs, key=projection_key)

wrapper_model = SequenceRegressor(cell)
outputs, states = wrapper_model(X_batch)  # [1, 20, 1], [1, 100]
print(outputs.shape, states.shape)
""")

book("reshape-md", """
### Without the wrapper: the reshape trick

The wrapper projects each step's output on its own. The book's faster way stacks the outputs of
all steps into one `[batch * steps, 100]` matrix, applies one dense layer to it, and reshapes
the result back to `[batch, steps, 1]`.
""", """
cell = tf.contrib.rnn.BasicRNNCell(num_units=n_neurons, activation=tf.nn.relu)
rnn_outputs, states = tf.nn.dynamic_rnn(cell, X, dtype=tf.float32)

stacked_rnn_outputs = tf.reshape(rnn_outputs, [-1, n_neurons])
stacked_outputs = tf.layers.dense(stacked_rnn_outputs, n_outputs)
outputs = tf.reshape(stacked_outputs, [-1, n_steps, n_outputs])
""", """
the same three lines on the wrapped cell's recurrent part, with a `Dense` layer drawn from the
wrapper's key, so it holds the wrapper's weights. `SequenceRegressor(cell, dense)` is the
reshape trick. With the same weights the two projections compute the same function (rnnkit
applies the wrapper's projection after the loop too, to all steps at once), so this notebook
trains one model, the reshape trick's, where the book trains both.
""")

code("reshape", """
rnn_outputs, states = rk.dynamic_rnn(wrapper_model.rnn, X_batch)  # the bare cell: [1, 20, 100]
dense = rk.Dense(n_neurons, n_outputs, key=projection_key)
np.testing.assert_array_equal(dense.w, wrapper_model.cell.w)  # the wrapper's weights

stacked_rnn_outputs = rnn_outputs.reshape(-1, n_neurons)  # [20, 100]
stacked_outputs = dense(stacked_rnn_outputs)  # [20, 1]
outputs = stacked_outputs.reshape(-1, n_steps, n_outputs)  # [1, 20, 1]

reshape_model = SequenceRegressor(wrapper_model.rnn, dense)  # the three lines above
np.testing.assert_allclose(reshape_model(X_batch)[0], outputs, atol=1e-6)
np.testing.assert_allclose(wrapper_model(X_batch)[0], outputs, atol=1e-6)  # the same function
print("both projections, first 5 steps:", np.asarray(outputs[0, :5, 0]))
""")

book("series-train-md", """
### Training

The loss is the mean squared error over every step of every instance, minimised by Adam with a
learning rate of 0.001, on 1,500 batches of 50 random instances. Every 100 iterations the book
prints the batch's MSE, computed after the update.

The book's output, with the reshape trick (with the wrapper: 11.967254 at iteration 0, 0.525841
at 100, 0.041784383 at 1400):

```
0 	MSE: 13.907029
100 	MSE: 0.5056698
200 	MSE: 0.19735886
300 	MSE: 0.101214476
400 	MSE: 0.06850145
500 	MSE: 0.06291986
600 	MSE: 0.055129297
700 	MSE: 0.049436502
800 	MSE: 0.050434686
900 	MSE: 0.0482007
1000 	MSE: 0.04809868
1100 	MSE: 0.04982501
1200 	MSE: 0.041912545
1300 	MSE: 0.049292978
1400 	MSE: 0.043140374
```
""", """
loss = tf.reduce_mean(tf.square(outputs - y))
optimizer = tf.train.AdamOptimizer(learning_rate=learning_rate)
training_op = optimizer.minimize(loss)

init = tf.global_variables_initializer()

n_iterations = 1500
batch_size = 50

with tf.Session() as sess:
    init.run()
    for iteration in range(n_iterations):
        X_batch, y_batch = next_batch(batch_size, n_steps)
        sess.run(training_op, feed_dict={X: X_batch, y: y_batch})
        if iteration % 100 == 0:
            mse = loss.eval(feed_dict={X: X_batch, y: y_batch})
            print(iteration, "\\tMSE:", mse)
""", """
the training step is one jitted function of the model and the optimizer's state: the gradient
of `rnnkit.timeseries.mse` (the recurrence on rnnkit's explicit BPTT) and optax's Adam update.
`build_regressor(key=key)` makes the model above in one call: 100 ReLU units and the reshape
trick, the same weights. `n_iterations` is set in the parameters cell (1,500, as in the book).
""")

code("series-train", """
import optax
from rnnkit.timeseries import mse

learning_rate = 0.001
batch_size = 50


def make_series_step(optimizer):
    \"\"\"One jitted training step: the MSE's gradient, then the optimizer's update.\"\"\"
    @jax.jit
    def step(model, opt_state, X_batch, y_batch, key=None):  # key: dropout, when the model has it
        loss, grads = jax.value_and_grad(mse)(model, X_batch, y_batch, key=key)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return optax.apply_updates(model, updates), opt_state, loss
    return step


model = build_regressor(key=key)  # 100 relu units, the reshape trick: reshape_model's weights
np.testing.assert_array_equal(model.dense.w, reshape_model.dense.w)
optimizer = optax.adam(learning_rate)
opt_state = optimizer.init(model)
series_step = make_series_step(optimizer)
batch_mse = jax.jit(mse)

for iteration in range(n_iterations):
    X_batch, y_batch = next_batch(rng, batch_size, n_steps)
    model, opt_state, _ = series_step(model, opt_state, X_batch, y_batch)
    if iteration % 100 == 0:
        print(iteration, "\\tMSE:", batch_mse(model, X_batch, y_batch))  # after the update
""")

book("series-predict-md", """
### The prediction on the test instance

The trained model predicts the 20 values that follow the test instance's, one step ahead each.
The book's run with the reshape trick predicted
`-3.43 -2.46 -1.11 0.69 2.11 3.06 3.51 3.35 2.81 2.16 1.66 1.56 1.92 2.72 3.87 5.10 6.10 6.65
6.61 6.02`.
""", """
X_new = time_series(np.array(t_instance[:-1].reshape(-1, n_steps, n_inputs)))
y_pred = sess.run(outputs, feed_dict={X: X_new})

plt.title("Testing the model", fontsize=14)
plt.plot(t_instance[:-1], time_series(t_instance[:-1]), "bo", markersize=10, label="instance")
plt.plot(t_instance[1:], time_series(t_instance[1:]), "w*", markersize=10, label="target")
plt.plot(t_instance[1:], y_pred[0,:,0], "r.", markersize=10, label="prediction")
plt.legend(loc="upper left")
plt.xlabel("Time")
""", """
the trained weights in an `OutputProjectionWrapper` predict the same values.
""")

code("series-predict", """
y_pred, _ = model(X_new)  # [1, 20, 1]
print("y_pred:", np.asarray(y_pred[0, :, 0]), sep="\\n")
print("MSE on the test instance:", mse(model, X_new, y_new))

trained_wrapper = rk.replace(wrapper_model.cell, cell=model.rnn, w=model.dense.w,
                             b=model.dense.b)
np.testing.assert_allclose(SequenceRegressor(trained_wrapper)(X_new)[0], y_pred, atol=1e-5)

plt.title("Testing the model", fontsize=14)
plt.plot(t_instance[:-1], X_new[0, :, 0], "bo", markersize=10, label="instance")
plt.plot(t_instance[1:], y_new[0, :, 0], "w*", markersize=10, markeredgecolor="k",
         label="target")
plt.plot(t_instance[1:], y_pred[0, :, 0], "r.", markersize=10, label="prediction")
plt.legend(loc="upper left")
plt.xlabel("Time")
plt.show()
""")

# --- 8. the creative RNN

book("creative-md", """
## Generating a creative new sequence

Fed its own predictions, the model writes a sequence of its own: each new value is its
prediction after the last 20. The book seeds it with 20 zeros, then also with 20 values of the
series, and extends each seed to 300 values.
""", """
sequence = [0.] * n_steps
for iteration in range(300):
    X_batch = np.array(sequence[-n_steps:]).reshape(1, n_steps, 1)
    y_pred = sess.run(outputs, feed_dict={X: X_batch})
    sequence.append(y_pred[0, -1, 0])

sequence1 = [0. for i in range(n_steps)]
for iteration in range(len(t) - n_steps):
    ...  # the same loop

sequence2 = [time_series(i * resolution + t_min + (t_max-t_min/3)) for i in range(n_steps)]
for iteration in range(len(t) - n_steps):
    ...  # the same loop
""", """
`rnnkit.generate.generate(model, seed, steps, window=20)` is the book's loop, in one jitted
`lax.scan`: each new value is the model's last prediction on the last 20 values, from a zero
state. Seeds given as the rows of one array are extended together. The book meant its second
seed to start a third of the way along the series, at t = 10; its code's operator precedence
starts it at t = 30 instead, past the end of the series the model was trained on.
`rnnkit.tasks.timeseries.generation_seed` makes the two seeds, the second from t = 10.
""")

code("creative", """
from rnnkit.generate import generate
from rnnkit.tasks.timeseries import generation_seed

seeds = np.stack([generation_seed("zeros", n_steps), generation_seed("series", n_steps)])
sequences = generate(model, seeds, len(t) - n_steps, window=n_steps)  # [2, 300]

sequence = [0.] * n_steps  # the book's loop, for its first 5 values: the same
for iteration in range(5):
    X_batch = np.array(sequence[-n_steps:], np.float32).reshape(1, n_steps, 1)
    sequence.append(float(model(X_batch)[0][0, -1, 0]))
np.testing.assert_allclose(sequences[0, :n_steps + 5], sequence, atol=1e-5)

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, values, seed in zip(axes, sequences, ("20 zeros", "the series from t = 10")):
    ax.plot(t, values, "b-")
    ax.plot(t[:n_steps], values[:n_steps], "b-", linewidth=3)
    ax.set_title(f"seed: {seed}")
    ax.set_xlabel("Time")
axes[0].set_ylabel("Value")
plt.show()
""")

# --- 9. a deep RNN with dropout

book("dropout-md", """
## A deep RNN with dropout

Three layers of 100 tanh neurons, each reading its input through dropout (keep probability 0.5
while training), the reshape trick on top, and Adam with a learning rate of 0.01. The book's
run printed a training MSE between 2 and 5 from iteration 100 on (1400: 4.4238644), and its
test-instance plot led it to conclude: "Oops, it seems that Dropout does not help at all in
this particular case. :/"
""", """
keep_prob = tf.placeholder_with_default(1.0, shape=())
cells = [tf.contrib.rnn.BasicRNNCell(num_units=n_neurons)
         for layer in range(n_layers)]
cells_drop = [tf.contrib.rnn.DropoutWrapper(cell, input_keep_prob=keep_prob)
              for cell in cells]
multi_layer_cell = tf.contrib.rnn.MultiRNNCell(cells_drop)
rnn_outputs, states = tf.nn.dynamic_rnn(multi_layer_cell, X, dtype=tf.float32)

learning_rate = 0.01
# ... the reshape trick, the MSE and Adam as above

n_iterations = 1500
batch_size = 50
train_keep_prob = 0.5

with tf.Session() as sess:
    init.run()
    for iteration in range(n_iterations):
        X_batch, y_batch = next_batch(batch_size, n_steps)
        _, mse = sess.run([training_op, loss],
                          feed_dict={X: X_batch, y: y_batch,
                                     keep_prob: train_keep_prob})
        if iteration % 100 == 0:                   # not shown in the book
            print(iteration, "Training MSE:", mse) # not shown
""", """
`build_regressor(layers=3, keep_prob=0.5)` wraps each layer in `DropoutWrapper(cell,
input_keep_prob=0.5)`. Dropout acts only when the model is given a key, as in the training
step; without one (the prediction) it is off, as the book's `placeholder_with_default(1.0)`.
The MSE printed is the training batch's, with dropout, before the update, as in the book.
""")

code("dropout", """
n_layers = 3
train_keep_prob = 0.5

deep_model = build_regressor(layers=n_layers, activation="tanh", keep_prob=train_keep_prob,
                             key=key)
deep_optimizer = optax.adam(0.01)
deep_opt_state = deep_optimizer.init(deep_model)
deep_step = make_series_step(deep_optimizer)
dropout_key = jax.random.key(0)

for iteration in range(n_iterations):
    X_batch, y_batch = next_batch(rng, batch_size, n_steps)
    deep_model, deep_opt_state, mse_val = deep_step(
        deep_model, deep_opt_state, X_batch, y_batch, jax.random.fold_in(dropout_key, iteration))
    if iteration % 100 == 0:
        print(iteration, "Training MSE:", mse_val)

y_pred_deep, _ = deep_model(X_new)  # no key: no dropout
print("MSE on the test instance: {:.4f} (one layer without dropout: {:.4f})".format(
    mse(deep_model, X_new, y_new), mse(model, X_new, y_new)))

plt.title("Testing the model", fontsize=14)
plt.plot(t_instance[:-1], X_new[0, :, 0], "bo", markersize=10, label="instance")
plt.plot(t_instance[1:], y_new[0, :, 0], "w*", markersize=10, markeredgecolor="k",
         label="target")
plt.plot(t_instance[1:], y_pred_deep[0, :, 0], "r.", markersize=10,
         label="3 layers, dropout")
plt.plot(t_instance[1:], y_pred[0, :, 0], "g.", markersize=6, label="1 layer")
plt.legend(loc="upper left")
plt.xlabel("Time")
plt.show()
""")


# --- build, run, save ---------------------------------------------------------------------------

def build():
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    for kind, cell_id, source, tags in CELLS:
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        cell["id"] = cell_id  # stable ids keep a rebuilt notebook's diff small
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def run(nb, workdir):
    """Executes `nb` in `workdir`, offline: no MNIST in $RNNKIT_DATA or ~/.cache."""
    for name in ("data", "home"):
        (workdir / name).mkdir(exist_ok=True)
    os.environ["RNNKIT_DATA"] = str(workdir / "data")
    os.environ["HOME"] = str(workdir / "home")
    NotebookClient(nb, timeout=1200, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="notebooks/chapter14.ipynb")
    parser.add_argument("--no-run", action="store_true", help="save without outputs")
    args = parser.parse_args()
    nb = build()
    if not args.no_run:
        with tempfile.TemporaryDirectory() as workdir:
            run(nb, Path(workdir))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, args.out)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size:,} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
