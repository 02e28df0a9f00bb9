#!/usr/bin/env bash
# The GPU checks of the population engine, in one go (a lent GPU's time is short):
#   1. exactness: tests/test_population.py with both sides of every comparison on the GPU;
#   2. speed: scripts/bench_runner.py --device cuda (K sweep against subprocesses on the CPU cores);
#   3. end to end: train-controller with vec_env batched on the GPU at K=64, 512 episodes, evaluated
#      on six held-out tasks per suite, three episode seeds each.
# Usage: scripts/gpu_check.sh OUT_DIR [PARTS]   (PARTS: any of exact,bench,train; default all three;
# TRAIN_SECONDS caps part 3, default 420). Each part's log and report land in OUT_DIR; copy them to
# docs/gpu_logs/ (with the commands as run, commands.txt) and make the page from them here:
#   python scripts/gpu_report.py docs/gpu_logs --out docs/bench_gpu.md
# On an H200 the bench part needed more than 300 s (the 16-process CPU baseline and a fresh process per K).
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [exact,bench,train]}
parts=${2:-exact,bench,train}
train_s=${TRAIN_SECONDS:-420}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi -L 2>&1 | tee "$out/device.txt"

if [[ $parts == *exact* ]]; then
METACTL_TEST_DEVICE=cuda timeout 240 $py -m pytest tests/test_population.py -p no:cacheprovider -q 2>&1 \
    | tee "$out/exact.log"
fi

if [[ $parts == *bench* ]]; then
timeout 480 $py scripts/bench_runner.py --device cuda --out "$out/bench_gpu.md" 2>&1 | tee "$out/bench.log"
fi

if [[ $parts == *train* ]]; then
timeout "$train_s" $py -m metactl train-controller --out /tmp/gpu-tc --set run.training.device=cuda \
    --set n_envs=64 --set total_episodes=512 --set ppo.episodes_per_update=64 \
    --set "eval_task_seeds=[1000,1001,1002,1003,1004,1005]" --set eval_episodes=3 2>&1 | tail -60 \
    | tee "$out/train.log"
for f in eval.jsonl wall_seconds.txt; do cp /tmp/gpu-tc/$f "$out/train_$f" 2>/dev/null; done
fi
