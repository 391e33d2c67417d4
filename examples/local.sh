#!/usr/bin/env bash
# Train in N processes on this machine, as a cluster would run them: process 0 on the
# coordinator's port, the others joining it over 127.0.0.1. Every process gets the same flags;
# process 0 prints and writes the run folder, the others' output goes to rnnkit.process-I.log.
#
#   examples/local.sh 2 --cpu-devices 2 --out runs/two        # 2 processes x 2 CPU devices
#   examples/local.sh 2 --cpu-devices 2 --resume runs/two     # continue it, after a failure
#
# On one machine give --cpu-devices (each process would otherwise take one device per core).
set -euo pipefail
count=${1:?usage: examples/local.sh N [rnnkit train flags]}
shift
rnnkit=${RNNKIT:-rnnkit}
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
launch=(--coordinator "127.0.0.1:$port" --num-processes "$count")
others=()
for ((i = 1; i < count; i++)); do
  "$rnnkit" train "${launch[@]}" --process-id "$i" "$@" > "rnnkit.process-$i.log" 2>&1 &
  others+=($!)
done
status=0
"$rnnkit" train "${launch[@]}" --process-id 0 "$@" || status=$?
for pid in "${others[@]}"; do
  wait "$pid" || true
done
exit "$status"
