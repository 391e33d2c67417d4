"""Measure explicit BPTT against autodiff, and unroll factors, for rnnkit's default rules.

Usage: .venv/bin/python benchmarks/bptt_rules.py [--quick] [--unrolls 1,2,4]
       [--modes fused,autodiff,generic,user-autodiff] [--json benchmarks/results/rules.json]
"""

import argparse
import sys

from common import book_batch, machine, time_rnnkit_train, write_json

# mode -> the options of common.rnnkit_train_step: the built-in cell's two loops, and the two a
# user's own split cell gets (the same cell wrapped in common.UserCell).
MODES = {
    "fused": dict(bptt="fused"),
    "autodiff": dict(bptt="autodiff"),
    "generic": dict(bptt="fused", user_cell=True),
    "user-autodiff": dict(bptt="autodiff", user_cell=True),
}
WORKLOADS = {"book": (150, 28, 28, 150), "long": (32, 1000, 32, 128), "small": (32, 50, 8, 32)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only the book's workload")
    parser.add_argument("--cells", default="basic,lstm,gru")
    parser.add_argument("--unrolls", default="1,2,4")
    parser.add_argument("--modes", default="fused,autodiff",
                        help=f"loops to time, of {list(MODES)}")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    names = ["book"] if args.quick else list(WORKLOADS)
    for name in names:
        batch_size, num_steps, input_size, units = WORKLOADS[name]
        batch = book_batch(batch_size, num_steps, input_size)
        for kind in args.cells.split(","):
            for bptt in args.modes.split(","):
                for unroll in map(int, args.unrolls.split(",")):
                    ms = time_rnnkit_train(kind, batch, units, unroll=unroll, **MODES[bptt])
                    rows.append(dict(workload=name, cell=kind, bptt=bptt, unroll=unroll, ms=ms))
                    print(f"{name:6s} {kind:6s} {bptt:13s} unroll={unroll:<3d} {ms:8.2f} ms",
                          flush=True)
    if args.json:
        write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    sys.exit(main())
