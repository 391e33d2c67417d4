#!/usr/bin/env bash
# Train on several hosts under SLURM: one rnnkit process per host, each with all its cores.
#
#   sbatch --nodes=4 examples/slurm.sh --epochs 20              # runs/slurm-<job id>
#   sbatch --nodes=2 examples/slurm.sh --resume runs/slurm-123  # continue it (any host count)
#
# JAX finds the processes itself from SLURM's variables (process 0 on the first host runs the
# coordinator, on a port derived from the job id), so rnnkit needs no --coordinator. The run
# folder must lie on a file system every host reads: process 0 writes it, and every process
# reads it to resume. On GPU hosts, JAX gives each process one GPU (its SLURM_LOCALID): ask for
# one task per GPU instead (--ntasks-per-node=4 --gpus-per-task=1 for 4 GPUs a host).
#SBATCH --job-name=rnnkit
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=02:00:00
#SBATCH --output=rnnkit-%j.log
set -euo pipefail
case " $* " in
  *" --resume"* | *" --out"*) flags=("$@") ;;
  *) flags=(--out "runs/slurm-$SLURM_JOB_ID" "$@") ;;
esac
# --kill-on-bad-exit: SLURM stops the other processes once one fails (rnnkit's own watch
# does too, within --distributed-timeout)
srun --kill-on-bad-exit=1 rnnkit train "${flags[@]}"
