#!/usr/bin/env bash
# Regenerates reports/example.md and reports/example_figures/ from runs on the built-in
# synthetic dataset and, when ../shared/data is there, the ECSSD and VOC2012 samples.
# Usage: bash reports/make_example.sh        (about 10 minutes on 2 CPU cores)
# Environment: RUNS (default runs/example), EPOCHS for the small Sempart runs (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/example}
EPOCHS=${EPOCHS:-3}
DATA=${HARNESS_TEST_DATA:-../shared/data}
run() { harness run --no-progress --out "$RUNS" "$@" > /dev/null; }

datasets=("--dataset synthetic")
if [ -d "$DATA/ECSSD" ]; then datasets+=("--dataset ecssd --data-root $DATA/ECSSD"); fi
for ds in "${datasets[@]}"; do
  run --method center-prior $ds
  for post in "" "--post gf" "--post bs"; do
    run --method tokencut --backbone effnet-lite0 $post $ds
  done
done
if [ -d "$DATA/VOC2012" ]; then
  run --method center-prior --dataset voc12 --data-root "$DATA/VOC2012"
  run --method tokencut --backbone effnet-lite0 --method-args mode=detection --dataset voc12 --data-root "$DATA/VOC2012"
fi

# small Sempart runs (the ablation table): 3 epochs on 48 images at 96 px, scored on the whole
# sample they were trained on, so the numbers show the machinery, not the method's quality
if [ -d "$DATA/ECSSD" ]; then train_ds="--dataset ecssd --data-root $DATA/ECSSD"; else train_ds="--dataset synthetic"; fi
for method in sempart sempart-crop; do
  out="$RUNS/train/$method"
  harness train --method "$method" $train_ds --limit 48 --backbone effnet-lite0 --backbone-args stride=8 \
    --method-args image_size=96 --epochs "$EPOCHS" --batch-size 8 --lr 1e-3 --out "$out" --resume --no-progress
  for post in "" "--post gf"; do
    run --method "$method" --method-args "checkpoint=$out/checkpoint_last.pt" $post $train_ds
  done
done

# ECSSD and VOC images may not be redistributed: the committed grid shows synthetic images only
rm -rf reports/example_figures
harness report "$RUNS" -o reports/example.md --grid-datasets synthetic \
  --title "Example report: built-in synthetic data and the ECSSD / VOC2012 samples (small scale)"
