#!/usr/bin/env bash
# The registration-training recipe on one CUDA machine, in one call of the device tool
# (DEVELOPERS.md "GPU training"), leave-one-category-out for metal_plate and for
# magnetic tile:
#   1. installs this checkout (nothing downloaded; bench/gpu_lib.sh),
#   2. per excluded category: `careg-edge train` on the other real categories' normal
#      images + the seven synthetic categories (EfficientNet-Lite0 224², trunk frozen,
#      θ term, batch 32, lr 1e-2), bounded by a wall-clock timeout,
#   3. the registration diagnostic on the excluded category's normal images
#      (bench/train_diagnostics.py: val_slope / val_corr, untrained beside trained),
#   4. exports the encoder to ONNX, so `careg-edge eval` can compare it on a CPU.
# Back under $OUT (default build/gpu-train; the device tool returns at most 8 files of
# at most 16 MiB): gpu_train.log (with the diagnostic tables), and per category
# loo_<cat>/train_log.jsonl and the ONNX encoder (about 20 MB) in two parts,
# loo_<cat>/encoder.onnx.part-aa/-ab: `cat encoder.onnx.part-* > encoder.onnx`.
#
# Carried (bench/gpu_train_prepare.py makes it): $CAREG_GPU_CARRY (default
# build/gpu-carry) with site/ (the EfficientNet-Lite0 weights package) and
# train-data/<root>/<category>/{train,validation}/good.
# Knobs: STEPS (1500), RUN_LIMIT_S (200 per category; a cut run keeps its finished steps), DEVICE (cuda), BATCH (32),
# SYNTH_IMAGES (300), SKIP_INSTALL=1 (use the Python that is already set up).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/build/gpu-train}
# shellcheck source=bench/gpu_lib.sh
. bench/gpu_lib.sh
DATA=$CARRY/train-data
STEPS=${STEPS:-1500}
RUN_LIMIT_S=${RUN_LIMIT_S:-200}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-32}
SYNTH_IMAGES=${SYNTH_IMAGES:-300}

# The folder holding CAT's train/good among the carried roots.
category_dir() { find "$DATA" -mindepth 2 -maxdepth 2 -type d -name "$1" | head -n 1; }

train_one() {
  local cat=$1 dir=$OUT/loo_$1 roots=()
  for r in "$DATA"/*/; do roots+=("${r%/}"); done
  step "train, $cat left out ($STEPS steps, at most $RUN_LIMIT_S s)"
  # the time cap interrupts (SIGINT): training saves the steps it finished, so a cut
  # run is kept (and could be resumed); SIGKILL only if it does not stop within 60 s
  timeout -s INT -k 60 "$RUN_LIMIT_S" "$PY" -m careg_edge.cli train "${roots[@]}" --exclude "$cat" \
    --synthetic 7 --synthetic-images "$SYNTH_IMAGES" --backbone efficientnet_lite0 \
    --image-size 224 --frozen-stages 3 --k-shot 2 --batch-size "$BATCH" --steps "$STEPS" \
    --lr 1e-2 --self-weight 1 --theta-weight 1 --max-grad-norm 1 --holdout 16 \
    --eval-every 250 --save-every 250 --device "$DEVICE" --threads 8 --seed 0 --quiet \
    -o "$dir" || echo "train exited with $? (124 or 130: cut at $RUN_LIMIT_S s; last.ckpt holds the finished steps)"
  [ -f "$dir/last.ckpt" ] || { echo "FAILED: no checkpoint for $cat"; return 1; }
  step "registration on $cat (excluded)"
  "$PY" "$REPO/bench/train_diagnostics.py" "$dir/last.ckpt" --excluded "$(category_dir "$cat")" \
    --n 16 -o "/tmp/by_category_$cat.json" || return 1
  step "export $cat encoder"
  "$PY" -m careg_edge.cli export "$dir/last.ckpt" -o "/tmp/encoder_$cat.onnx" || return 1
  split -b 15M "/tmp/encoder_$cat.onnx" "$dir/encoder.onnx.part-" || return 1
  sha256sum "/tmp/encoder_$cat.onnx"
  # 36 MB, over what comes back; the ONNX encoder is what eval needs
  mv "$dir/last.ckpt" "/tmp/last_$cat.ckpt"
}

main() {
  local failed=0
  step "machine"
  describe_machine
  [ -d "$DATA" ] || { echo "FAILED: $DATA missing (run bench/gpu_train_prepare.py here first)"; return 1; }
  if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    step "install (no downloads)"
    install_checkout || return 1
  fi
  cd /tmp || return 1   # the installed package, not the source folder
  for cat in metal_plate magnetic_tile; do
    train_one "$cat" || failed=1
  done
  step "done: $([ $failed = 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED (see above)')"
  return $failed
}

main 2>&1 | tee "$OUT/gpu_train.log"
exit "${PIPESTATUS[0]}"
