#!/usr/bin/env bash
# Fashion-MNIST end to end: image folder -> `tfscale data convert` -> training under `tfscale launch -n 2`
# -> int8 TFLite -> report. Arguments after the settings are passed to train.py.
#
#   bash examples/images/run.sh                                  # all 70,000 images, 3 epochs
#   PER_CLASS=500 TEST_PER_CLASS=100 bash examples/images/run.sh --epochs 2
#
# Settings (environment): PYTHON (python), WORK (data/fashion), OUT (saved_models/fashion), WORKERS (2),
# SHARDS (4: at least WORKERS, so each worker reads its own files), PER_CLASS / TEST_PER_CLASS (0: all),
# STORE (raw: 28x28 grey pixels, read without decoding; encoded: the PNG bytes), OVERWRITE (1: rebuild shards
# made from other images or settings; by default convert refuses and names what changed).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python}"
WORK="${WORK:-data/fashion}"
OUT="${OUT:-saved_models/fashion}"
WORKERS="${WORKERS:-2}"
SHARDS="${SHARDS:-4}"
STORE="${STORE:-raw}"
convert_args=(--shards "$SHARDS" --store "$STORE" --quiet)
[ "$STORE" = raw ] && convert_args+=(--image-size 28 28 --channels 1)
[ "${OVERWRITE:-0}" = 1 ] && convert_args+=(--overwrite)

echo "== 1. Fashion-MNIST as an image folder: $WORK/images"
"$PYTHON" "$HERE/make_folder.py" --out "$WORK/images" --per-class "${PER_CLASS:-0}" \
    --test-per-class "${TEST_PER_CLASS:-0}"

echo "== 2. tfscale data convert: $SHARDS TFRecord shards ($STORE) + index per split (both splits at once)"
pids=()
for split in train test; do
    "$PYTHON" -m tfscale data convert "$WORK/images/$split" --out "$WORK/tfrecords/$split" "${convert_args[@]}" &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done   # set -e: a failed conversion stops the run here

echo "== 3. training under tfscale launch -n $WORKERS, then int8 TFLite and the report (chief): $OUT"
"$PYTHON" -m tfscale launch -n "$WORKERS" -- "$PYTHON" "$HERE/train.py" --data "$WORK/tfrecords" --out "$OUT" "$@"
