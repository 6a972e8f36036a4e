#!/usr/bin/env bash
# Everything that needs a GPU, in ONE call on a lent CUDA machine (device time is scarce):
#   1. pytest -m cuda on every test file with CUDA tests;
#   2. benchmarks/models.py on CUDA: per-epoch and full-sort times and peak GPU memory of
#      every model on ml-100k (and Baby size when BENCH_DATASETS says so);
#   3. (background) the ml-100k comparison of every model over several seeds, through
#      `python -m recbole_models.compare` (results appended as each run finishes);
#   4. (background, when .xcheck/run_device.sh exists) the cross-check against the MMRec
#      reference code (not part of this repository: see docs/baselines.md).
# Run from the repository root, with wheels for what the GPU image lacks in .whl/
# (recbole 1.2.1, pandas<3 with pytz and tzdata, colorlog, colorama, texttable). The image's
# SciPy needs NumPy 2, on which RecBole 1.2.1 fails (np.float_): benchmarks/device_sitecustomize.py
# restores the removed NumPy 1 aliases in those processes instead of downgrading NumPy.
#   carry: .whl data/ml-100k/ml-100k.itememb data/ml-100k/ml-100k.useremb [.xcheck]
# Everything lands in $OUT/device.tar.gz (the device tool returns at most 8 files) and the
# summary is printed last.
set -uo pipefail
FINAL=${OUT:-device_out}
OUT=/tmp/device_out
mkdir -p "$OUT" "$FINAL"
COMPARE_SEEDS=${COMPARE_SEEDS:-3}
COMPARE_JOBS=${COMPARE_JOBS:-6}
COMPARE_TIMEOUT=${COMPARE_TIMEOUT:-400}
COMPARE_MODELS=${COMPARE_MODELS:-"MLLMRec VBPR LATTICE SLMRec FREEDOM LGMRec SMORE GUME SOIL BPR LightGCN"}
BENCH_DATASETS=${BENCH_DATASETS:-ml-100k}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  cp benchmarks/device_sitecustomize.py /tmp/site/sitecustomize.py
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, numpy, pandas, recbole, torch_geometric as g; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'pandas', pandas.__version__, 'pyg', g.__version__)" | tee -a "$OUT/gpu.txt"

# 3. the comparison, in the background (one torch thread per run; all runs share the GPU)
mkdir -p results/device
(timeout "$COMPARE_TIMEOUT" python3 -m recbole_models.compare --models $COMPARE_MODELS \
   --dataset ml-100k --config_files data/ml-100k.yaml --seeds "$COMPARE_SEEDS" --jobs "$COMPARE_JOBS" \
   --baseline MLLMRec --state=WARNING --out results/device/ml-100k-cuda.md \
   > "$OUT/compare.log" 2>&1; echo "compare rc=$?" >> "$OUT/compare.log") &
COMPARE_PID=$!

# 4. the reference cross-check, in the background
if [ -x .xcheck/run_device.sh ] || [ -f .xcheck/run_device.sh ]; then
  (OUT=$OUT/xcheck XCHECK_MODELS=${XCHECK_MODELS:-"VBPR FREEDOM"} XCHECK_BUDGET=${XCHECK_BUDGET:-240} \
     XCHECK_JOBS=${XCHECK_JOBS:-12} bash .xcheck/run_device.sh > "$OUT/xcheck.log" 2>&1
   echo "xcheck rc=$?" >> "$OUT/xcheck.log") &
  XCHECK_PID=$!
fi

# 1. CUDA tests
CUDA_TESTS=$(grep -l "mark.cuda" tests/*.py | tr '\n' ' ')
timeout 240 python3 -m pytest -q -m cuda -p no:cacheprovider $CUDA_TESTS > "$OUT/pytest_cuda.log" 2>&1
echo "pytest -m cuda rc=$?" >> "$OUT/pytest_cuda.log"

# 2. per-model GPU times and memory
timeout 300 python3 benchmarks/models.py --device cuda --datasets $BENCH_DATASETS --epochs 2 \
  > "$OUT/models_cuda.log" 2>&1
echo "benchmarks/models.py rc=$?" >> "$OUT/models_cuda.log"

wait $COMPARE_PID
[ -n "${XCHECK_PID:-}" ] && wait "$XCHECK_PID"
cp results/device/ml-100k-cuda.* "$OUT/" 2>/dev/null
echo "== pytest -m cuda"; tail -4 "$OUT/pytest_cuda.log"
echo "== models on CUDA"; grep -E "^(\||## |device)" "$OUT/models_cuda.log"
echo "== compare"; tail -3 "$OUT/compare.log"; cat results/device/ml-100k-cuda.md 2>/dev/null
[ -f "$OUT/xcheck.log" ] && { echo "== xcheck"; tail -25 "$OUT/xcheck.log"; }
tar -czf "$FINAL/device.tar.gz" -C "$OUT" .
