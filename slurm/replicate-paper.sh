#!/usr/bin/env bash
# Every sweep behind the paper's tables, cheapest and most needed first, one after the
# other on the cluster (each waits for its jobs; complete runs are skipped, so rerunning
# this script after an interruption submits only what is missing or broken).
#
#   export SLURM_CONF=...  TD3_RESULTS_DIR=/big/disk/paper-runs  [TD3_DATA_MIRROR=...]
#   slurm/replicate-paper.sh [extra overrides, e.g. hydra.launcher.partition=cpu]
#
# Then: python -m td3.publish $TD3_RESULTS_DIR results/paper   (the compact, committable part)
#       python analysis/make_tables.py --results results/paper --out results/paper/tables --paper ...
# TD3_LAUNCHER picks the Hydra launcher preset (default td3_slurm; td3_local runs without SLURM).
set -uo pipefail
cd "$(dirname "$0")/.."
LAUNCHER="${TD3_LAUNCHER:-td3_slurm}"

sweep() {
  echo "== $(date -u +%H:%M:%S) python -m td3.sweep -m $*" >&2
  python -m td3.sweep -m "hydra/launcher=$LAUNCHER" "$@" "${EXTRA[@]}" \
    || echo "== sweep $* ended with failed runs (listed above; rerun to retry them)" >&2
}
EXTRA=("$@")

# Magazine (2018 release): minutes per run
sweep +sweep=table3 dataset=magazine-2018
sweep +sweep=table2 dataset=magazine-2018
sweep +sweep=table4 dataset=magazine-2018
sweep +sweep=figure4 dataset=magazine-2018
# ML-100K: TD3 and the baselines, then its ablations, ranks and architectures, then Farzi
sweep +sweep=table3 dataset=ml-100k method=td3,random,longest,full
sweep +sweep=table2 dataset=ml-100k
sweep +sweep=table6
sweep +sweep=ranks
sweep +sweep=table4 dataset=ml-100k
sweep +sweep=table3 dataset=ml-100k method=farzi
sweep +sweep=figure4 dataset=ml-100k
# The ML-1M slice (users 1-2999, standing in for ML-1M): about an hour per distillation
sweep +sweep=table3 dataset=ml-1m-slice method=td3,random,longest,full
sweep +sweep=table2 dataset=ml-1m-slice
sweep +sweep=table3 dataset=ml-1m-slice method=farzi
sweep +sweep=table5
