#!/usr/bin/env bash
# The CPU reproduction campaign of docs/reproduction.md: every study of the paper at laptop size on
# one machine (about 2 hours on 2 cores), then one analysis per study into docs/results/cpu/.
#
#   experiments/cpu_campaign.sh                  # train what is missing, then analyse
#   SCALE=smoke experiments/cpu_campaign.sh      # the same commands in seconds, to try it
#   ONLY="table4_convergence jitter_async" experiments/cpu_campaign.sh
#
# Resumable: run it again and every sweep skips its finished jobs and resumes unfinished ones
# (Ctrl-C is safe). A study that fails does not stop the others; the script names it at the end
# and exits non-zero. Knobs: SCALE (laptop), EPOCHS (4000 for Tab. IV, whose final residuals are the
# headline; the other studies run EPOCHS / 4 and the timing study EPOCHS / 8, to fit 2 hours;
# every study checkpoints 10 times, the points of the residual-vs-time figures),
# OUT (results/cpu: run folders, large, not committed), RESULTS (docs/results/cpu: the tables and
# figures, committed). Each line below is one `sagips -m` sweep a user can also run by hand.
set -uo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-laptop}
EPOCHS=${EPOCHS:-4000}
OUT=${OUT:-results/cpu}
RESULTS=${RESULTS:-docs/results/cpu}
ONLY=${ONLY:-}
if [ "$SCALE" = smoke ]; then EPOCHS=80; fi

failed=()
study() {  # study NAME [overrides...]: one sweep of experiment NAME into $OUT/NAME
    local name=$1; shift
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
    echo "=== $name ($(date '+%H:%M:%S'))"
    sagips -m "experiment=$name" "scale=$SCALE" "$@" "hydra.sweep.dir=$OUT/$name" || failed+=("$name")
}

QUARTER=$((EPOCHS / 4))
run_for() {  # run_for EPOCHS: the overrides of a study that trains that long
    echo "train.epochs=$1" "train.checkpoint_every=$(( $1 / 10 > 0 ? $1 / 10 : 1 ))"
}
# Tab. IV, Fig. 13: hvd, RMA-ARAR, ARAR, Conv. ARAR; 4 ranks in 2 inner groups, h=100, 5 seeds
study table4_convergence "train.epochs=$EPOCHS"
# Beyond the paper: 20 ms of jitter per epoch on every rank, synchronous vs asynchronous inner group
study jitter_async $(run_for $QUARTER)
# Figs. 9, 10: an ensemble of 20 members (10 seeds x 2 ranks of mode=ensemble), full data
study fig09_10_ensemble_size $(run_for $QUARTER)
# Figs. 14-16: eq. (10) at 1, 2 and 4 ranks for both grouped modes, 3 seeds; 1 rank: full data
study fig14_16_weak_scaling $(run_for $QUARTER)
# Fig. 8: model width (small, paper) x data size (10, 20 events per sample), ensembles of 4
study fig08_ensemble_models $(run_for $QUARTER)
# Figs. 11, 12: time and analysis rate of the three modes of Tab. II at 1, 2 and 4 ranks
study fig11_12_scaling $(run_for $((EPOCHS / 8)))
# The staleness bound of the asynchronous inner group under the same jitter
study staleness_bound $(run_for $QUARTER)

echo "=== analysis ($(date '+%H:%M:%S'))"
sagips-analyze "$OUT" --per-study --out "$RESULTS" || failed+=(analysis)
if [ ${#failed[@]} -gt 0 ]; then
    echo "cpu_campaign: unfinished: ${failed[*]} (run the script again to resume)" >&2
    exit 1
fi
echo "cpu_campaign: done: $RESULTS"
