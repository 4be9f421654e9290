# Sourced by the GPU scripts (gpu_issue32.sh, gpu_demo_and_e2e.sh): each step under its own time limit, the whole
# under BUDGET_S seconds (default 540) from START, a step skipped when fewer than MIN_STEP_S (default 20) are left.
left() { echo $((${BUDGET_S:-540} - (SECONDS - START))); }
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, never stop the script
  local name=$1 limit=$2; shift 2
  if (( $(left) < ${MIN_STEP_S:-20} )); then echo "== $name skipped: $(left) s left"; return; fi
  (( limit > $(left) )) && limit=$(left)
  echo "== $name (limit ${limit} s, $((SECONDS - START)) s in)"
  timeout "$limit" "$@" || echo "== $name ended with status $?"
}
