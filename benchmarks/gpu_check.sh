#!/usr/bin/env bash
# Everything that needs a GPU, in one command of at most 8 minutes on one H100:
#   1. the CUDA half of the tests (`pytest -m cuda -x`: tests/test_devices.py; at most 240 s),
#   2. the quick bf16 benchmark: pvt-v2-b2 inference at 224 batch 128 and 512 batch 16 beside timm and transformers,
#      sdpa and eager attention, compiled; the training step with the lean path on and off, checkpointed and
#      compiled (no scenario starts after 140 s; at most 240 s).
# It writes one results file (Markdown: the versions it ran with, the tests' summary, the benchmark's tables) and the
# benchmark's rows beside it as JSON (for `python benchmarks/benchmark.py --from-json FILE.json --plot DIR`).
#
#   bash benchmarks/gpu_check.sh RESULTS.md [--force]
set -uo pipefail

usage="usage: bash benchmarks/gpu_check.sh RESULTS.md [--force]"
results=${1:?$usage}
[[ $results == *.md ]] || { echo "RESULTS.md: expected a Markdown file name ending in .md, got '$results'" >&2; exit 2; }
if [[ -e $results && ${2:-} != --force ]]; then
    echo "$results exists: give another file, or --force to replace it" >&2
    exit 2
fi
rows=${results%.md}.json
cd "$(dirname "$0")/.." || exit 2
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# this checkout's package, installed or not (a GPU machine without network may have no editable install)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python}
for module in pytest transformers accelerate; do
    "$python" -c "import $module" 2>/dev/null || { echo "$python cannot import $module: install it (or carry its wheel)" >&2; exit 2; }
done

if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to $python: this script checks a GPU" >&2
    exit 2
fi

mkdir -p "$(dirname "$results")"
rm -f "$rows"
versions=$("$python" - <<'EOF'
import platform, subprocess, torch, transformers
parts = [f"Python {platform.python_version()}", f"torch {torch.__version__} (CUDA {torch.version.cuda})",
         f"transformers {transformers.__version__}"]
for name in ("accelerate", "peft", "timm", "onnxruntime"):
    try:
        parts.append(f"{name} {__import__(name).__version__}")
    except Exception:
        parts.append(f"{name} not available")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"{torch.cuda.get_device_name()}; " + ", ".join(parts) + f"; pvt-hf {commit or 'outside git'}")
EOF
)
echo "versions: $versions"
{
    echo "# GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "- versions: $versions"
} > "$results"

echo "== pytest -m cuda -x"
start=$SECONDS
timeout 240 "$python" -m pytest -m cuda -x -q -p no:cacheprovider 2>&1 | tee /tmp/gpu_check_pytest.log
tests_status=${PIPESTATUS[0]}
{
    echo "- tests: \`pytest -m cuda -x\`: exit $tests_status$([[ $tests_status == 124 ]] && echo ' (stopped at 240 s)') in $((SECONDS - start)) s"
    echo
    echo '```'
    grep -E "passed|failed|error|skipped|Error|assert" /tmp/gpu_check_pytest.log | tail -40
    echo '```'
    echo
} >> "$results"

echo "== benchmark"
start=$SECONDS
timeout 240 "$python" benchmarks/benchmark.py --device cuda --dtype bfloat16 --quick --time-budget 140 \
    --json "$rows" --write-results "$results" --section gpu-bfloat16-quick
bench_status=$?
echo "- benchmark: exit $bench_status$([[ $bench_status == 124 ]] && echo ' (stopped at 240 s; rows so far in the JSON)') in $((SECONDS - start)) s" >> "$results"

echo "wrote $results and $rows (tests: exit $tests_status, benchmark: exit $bench_status)"
[[ $tests_status == 0 && $bench_status == 0 ]]
