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

part_magazine_2018() {  # minutes per run
  sweep +sweep=table3 dataset=magazine-2018
  sweep +sweep=table2 dataset=magazine-2018
  sweep +sweep=table4 dataset=magazine-2018
  sweep +sweep=figure4 dataset=magazine-2018
}
part_ml_100k() {  # TD3 and the baselines, then its ablations, ranks and architectures, then Farzi
  sweep +sweep=table3 dataset=ml-100k method=td3,random,longest,full
  sweep +sweep=table2 dataset=ml-100k
  sweep +sweep=table6
  sweep +sweep=ranks
  sweep +sweep=table4 dataset=ml-100k
  sweep +sweep=table3 dataset=ml-100k method=farzi
  sweep +sweep=figure4 dataset=ml-100k
}
part_ml_1m_slice() {  # users 1-2999, standing in for ML-1M: about an hour per distillation
  sweep +sweep=table3 dataset=ml-1m-slice method=td3,random,longest,full
  sweep +sweep=table2 dataset=ml-1m-slice
  sweep +sweep=table3 dataset=ml-1m-slice method=farzi
  sweep +sweep=table5
}

# TD3_REPLICATE_PARTS picks the datasets, run in this order (default: all three). Two
# parts started side by side keep every CPU busy: a sweep's last distillation otherwise
# leaves the others idle until the next sweep starts, e.g.
#   TD3_REPLICATE_PARTS=ml-100k slurm/replicate-paper.sh & TD3_REPLICATE_PARTS=ml-1m-slice slurm/replicate-paper.sh &
# (never two drivers of the same part: their jobs would wait on each other's locks).
PARTS="${TD3_REPLICATE_PARTS:-magazine-2018 ml-100k ml-1m-slice}"
for part in $PARTS; do  # every name checked before hours of work: part_<name> above
  declare -F "part_${part//-/_}" > /dev/null || {
    echo "replicate-paper.sh: unknown part '$part' (magazine-2018, ml-100k, ml-1m-slice)" >&2; exit 2; }
done
for part in $PARTS; do
  "part_${part//-/_}"
done
