"""Measure explicit BPTT against autodiff, and unroll factors, for rnnkit's default rules.

Usage: .venv/bin/python benchmarks/bptt_rules.py [--quick] [--cells basic,lstm,gru]
       [--unrolls 1,2,4] [--modes explicit,autodiff,generic,user-autodiff]
       [--json benchmarks/results/rules.json]

Times ``jit(value_and_grad(loss))`` of the book's model unrolled by ``rk.dynamic_rnn(cell, x,
bptt=, unroll=)`` on one device: the loops that ``rnnkit.loops.choose_loop`` picks between.
"generic" and "user-autodiff" run the same cell wrapped as a user's own split cell
(``common.UserCell``): the two loops such a cell can get.
"""

import argparse
import sys

from common import book_batch, grad_fn, machine, median_ms, write_json

# mode -> the options of common.grad_fn
MODES = {
    "explicit": dict(bptt="explicit"),
    "autodiff": dict(bptt="autodiff"),
    "generic": dict(bptt="explicit", user_cell=True),
    "user-autodiff": dict(bptt="autodiff", user_cell=True),
}
WORKLOADS = {"book": (150, 28, 28, 150), "long": (32, 1000, 32, 128), "small": (32, 50, 8, 32)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the book's workload")
    parser.add_argument("--cells", default="basic,lstm,gru")
    parser.add_argument("--unrolls", default="1,2,4")
    parser.add_argument("--modes", default="explicit,autodiff",
                        help=f"loops to time, of {', '.join(MODES)}")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    unknown = [m for m in args.modes.split(",") if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {unknown}; expected some of {', '.join(MODES)}")
    rows = []
    for name in ["book"] if args.quick else list(WORKLOADS):
        batch_size, num_steps, input_size, units = WORKLOADS[name]
        x, y = book_batch(batch_size, num_steps, input_size)
        for kind in args.cells.split(","):
            for mode in args.modes.split(","):
                for unroll in map(int, args.unrolls.split(",")):
                    call = grad_fn(kind, x, y, units, unroll=unroll, **MODES[mode])[0]
                    ms = median_ms(call)
                    rows.append(dict(workload=name, cell=kind, bptt=mode, unroll=unroll, ms=ms))
                    print(f"{name:6s} {kind:6s} {mode:13s} unroll={unroll:<3d} {ms:8.2f} ms",
                          flush=True)
    if args.json:
        write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    sys.exit(main())
