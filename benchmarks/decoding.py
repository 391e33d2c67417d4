"""Translations per second of a trained dates run: greedy decoding and beam search, batch 1 and
1,000, each one jitted call (``rnnkit.seq2seq.translate_ids``: encoder and decoding loop), as
``rnnkit predict`` and the validation run them; and, for reference, greedy decoding driven from
Python (a jitted decoder step per token, the host checking for EOS after each).

Usage: .venv/bin/python benchmarks/decoding.py RUN [--beam 5] [--json FILE]

RUN is a run folder of ``rnnkit train --task dates``; the inputs are its test dates (seed + 2).
Timings are medians of interleaved rounds (``common.interleaved_median_ms``), on one device.
"""

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from common import interleaved_median_ms, machine
from rnnkit.decode import _emittable
from rnnkit.seq2seq import exact_matches, translate_ids
from rnnkit.tasks.dates import DatesTask
from rnnkit.train import restore
from rnnkit.vocab import EOS, PAD, SOS


def python_loop_greedy(model, ids, lengths, max_length):
    """Greedy decoding with the loop in Python: one jitted step call per token."""
    state = _encode(model, ids, lengths)
    tokens = jnp.full(len(ids), SOS, jnp.int32)
    finished = np.zeros(len(ids), bool)
    out = []
    for _ in range(max_length):
        tokens, state = _step(model, tokens, state, jnp.asarray(finished))
        out.append(tokens)
        finished |= np.asarray(tokens) == EOS  # the host waits for every step
        if finished.all():
            break
    return jnp.stack(out, axis=1)


@jax.jit
def _encode(model, ids, lengths):
    return model.encode(ids, lengths)


@jax.jit
def _step(model, tokens, state, finished):
    log_probs, state = model.decoder.step(tokens, state)
    token = jnp.argmax(_emittable(log_probs), axis=-1).astype(jnp.int32)
    return jnp.where(finished, PAD, token), state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder of rnnkit train --task dates")
    parser.add_argument("--beam", type=int, default=5, help="beam width (default: 5)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    state, config = restore(args.run, log=lambda line: print(line, file=sys.stderr))
    task = DatesTask()
    test, _ = task.load_data(config, split="test", log=lambda line: None)
    model = jax.device_put(state.model, jax.devices()[0])
    rows = {}
    for batch in (1, 1000):
        ids, lengths = test.inputs[:batch], test.lengths[:batch]
        calls = {
            "greedy": lambda: translate_ids(model, ids, lengths, max_length=task.max_length)
            .ids.block_until_ready(),
            f"beam {args.beam}": lambda: translate_ids(
                model, ids, lengths, max_length=task.max_length, beam=args.beam)
            .ids.block_until_ready(),
            "greedy, loop in Python": lambda: python_loop_greedy(
                model, ids, lengths, task.max_length).block_until_ready(),
        }
        steps, rounds = (20, 10) if batch == 1 else (2, 5)
        for name, ms in interleaved_median_ms(calls, steps=steps, rounds=rounds).items():
            rows[(name, batch)] = batch / ms * 1e3
    for name in ("greedy", f"beam {args.beam}"):
        decoded = translate_ids(model, test.inputs, test.lengths, max_length=task.max_length,
                                beam=1 if name == "greedy" else args.beam)
        match = float(np.mean(exact_matches(decoded.ids, test.targets)))
        print(f"{name}: exact match {match * 100:.2f}% on {test.num_examples:,} test dates")
    print("\n| decoding | batch 1 | batch 1,000 |\n|---|---|---|")
    for name in dict.fromkeys(name for name, _ in rows):
        print(f"| {name} | {rows[(name, 1)]:,.0f} | {rows[(name, 1000)]:,.0f} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine(), "translations_per_second": {
                f"{name} @ {batch}": value for (name, batch), value in rows.items()}}, out,
                indent=2)


if __name__ == "__main__":
    main()
