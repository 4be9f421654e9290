# Sourced by the GPU scripts (gpu_issue32.sh, gpu_demo_and_e2e.sh, gpu_splitk.sh, gpu_vision_fp8.sh), after they set ROOT.
# gpu_start NAME: results and the log NAME.log under $OUT (default outputs/NAME), the clock started, the wheels
# carried in .whl/ installed to /tmp/site (one that fails to install stops the script), the environment set,
# GPU=h100|h200|gpu for the result files' names.
gpu_start() {
  OUT=${OUT:-$ROOT/outputs/$1}
  mkdir -p "$OUT"
  cd "$ROOT" || exit 2
  exec > >(tee -a "$OUT/$1.log") 2>&1
  START=$SECONDS
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || exit 2
  fi
  export PYTHONPATH=$ROOT/src:/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
  export VIDEOLLM_ONLINE_CACHE=/tmp/vo-cache
  GPU=$(python3 -c "import torch; n = torch.cuda.get_device_name(); print('h200' if 'H200' in n else 'h100' if 'H100' in n else 'gpu')")
}
# Each step under its own time limit, the whole under BUDGET_S seconds (default 540) from START, a step skipped
# when fewer than MIN_STEP_S (default 20) are left.
left() { echo $((${BUDGET_S:-540} - (SECONDS - START))); }
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, never stop the script
  local name=$1 limit=$2; shift 2
  if (( $(left) < ${MIN_STEP_S:-20} )); then echo "== $name skipped: $(left) s left"; return; fi
  (( limit > $(left) )) && limit=$(left)
  echo "== $name (limit ${limit} s, $((SECONDS - START)) s in)"
  timeout "$limit" "$@" || echo "== $name ended with status $?"
}
