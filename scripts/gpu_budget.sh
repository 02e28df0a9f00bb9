#!/usr/bin/env bash
# The GPU-budget lever of docs/controller.md, as it ran on a lent H200 (one call of the device tool):
# three controller seeds of train-controller at 8x the default episodes (512, K=64 batched on the GPU,
# 8 updates of 64 episodes), concurrently on the one GPU, with the vec-env exactness test alongside.
# Each run evaluates itself on one spare task (1006) only; the six-task evaluation the lever is judged
# on runs afterwards on the CPU (training.device=auto resolves to it there), from the run dirs, by
#   python scripts/controller_report.py --seeds 0 1 2 --set eval_episodes=3 \
#       "eval_task_seeds=[1000,1001,1002,1003,1004,1005]" n_envs=64 total_episodes=512 \
#       ppo.episodes_per_update=64 run.training.device=auto --runs runs/gpu512 \
#       --baselines runs/share6/baselines --out docs/controller_results_gpu512.md
# which reads the finished runs back (schedule.yaml + wall_seconds.txt) and adds only the missing pairs.
# Usage: scripts/gpu_budget.sh OUT_DIR   (run dirs in /tmp/g/tc-s*; copy them back as one archive:
# the device tool returns few files per call). Its logs: docs/gpu_logs/budget512/, each train log cut to
# its closing lines and last progress frame (the frames are \r-separated), and each run's wall_seconds.txt:
#   tr '\r' '\n' < train-sS.log | grep -v '^train-controller \[ppo\]: .*|'   (then the last 100% frame)
set -uo pipefail
out=$1; mkdir -p $out/runs
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi -L > $out/device.txt 2>&1
for s in 0 1 2; do
  ( t0=$(date +%s.%N); timeout 500 python3 -m metactl train-controller --out /tmp/g/tc-s$s --set seed=$s \
      --set run.training.device=auto --set n_envs=64 --set total_episodes=512 --set ppo.episodes_per_update=64 \
      --set "eval_task_seeds=[1006]" --set eval_episodes=1 --set "compare=[averaged]" > $out/train-s$s.log 2>&1;
    echo "rc $?" >> $out/train-s$s.log; t1=$(date +%s.%N);
    python3 -c "print(f'{$t1-$t0:.1f}')" > /tmp/g/tc-s$s/wall_seconds.txt ) &
done
sleep 5
METACTL_TEST_DEVICE=cuda timeout 300 python3 -m pytest tests/test_population.py -p no:cacheprovider -q -x -k vec_env 2>&1 | tail -40 > $out/exact.log
wait
for s in 0 1 2; do cp -r /tmp/g/tc-s$s $out/runs/; tail -c 3000 $out/train-s$s.log; done
du -sh $out/runs
