#!/usr/bin/env bash
# The prepared GPU run: the whole pipeline with the GPU defaults of params.yaml through DVC,
# then the training-loop benchmark and the compiled-vs-eager step check, inside a wall-time
# budget. Leaves metrics, plots, dvc.lock, logs and a short summary in OUT_DIR.
#
#   benchmarks/gpu_run.sh [--dry-run] [--data ARCHIVE] [--budget SECONDS] [--set KEY=VALUE]... OUT_DIR
#
# It works in a temporary copy of the project (the checkout is never modified), so it also
# runs on a machine where the project's folder has no .git (DVC gets a fresh repository).
# Needs python3 with torch, dvc and pydantic importable (PYTHONPATH is extended with src/).
# The data: params.yaml's data.source, or --data ARCHIVE (copied to where data.source points).
# --dry-run: the same steps on the CPU with everything shrunk (a generated 10-class
# ImageFolder, tiny models, one epoch, compile on for the CNN), in a few minutes:
# tests/test_gpu_run.py. --set overrides a params.yaml key in the copy (YAML value), e.g.
# --set models.vit.train.epochs=100.
set -euo pipefail

DRY=0 DATA="" BUDGET=540 OUT="" SETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --data) DATA="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --set) SETS+=("$2"); shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "gpu_run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT="$1" ;;
  esac
  shift
done
[ -n "$OUT" ] || { echo "gpu_run.sh: OUT_DIR is required (see --help)" >&2; exit 2; }
if [ -n "$DATA" ]; then
  [ -f "$DATA" ] || { echo "gpu_run.sh: --data $DATA: no such file" >&2; exit 2; }
  DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")
fi
PROJECT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
log() { echo "[gpu_run +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/steps.log" >&2; }
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg DVC_NO_ANALYTICS=1

# ---- a disposable copy of the project: <tmp>/repo, with <tmp>/shared beside it -----------
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
WORK="$ROOT/repo"
LOGS="$ROOT/logs"  # one log per step; they come back as OUT/logs.tgz (few files in OUT)
mkdir -p "$WORK"
tar -C "$PROJECT" --exclude=./.git --exclude=./.venv --exclude=./.gpu --exclude=./data \
    --exclude=./models --exclude=./.scratch --exclude='*.egg-info' --exclude=./.dvc/cache \
    --exclude=./.dvc/tmp --exclude=__pycache__ -cf - . | tar -C "$WORK" -xf -
cd "$WORK"
export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
# dvc.yaml runs `python`: some images only have python3.
if ! command -v python >/dev/null 2>&1; then
  mkdir -p "$ROOT/bin" && ln -s "$(command -v python3)" "$ROOT/bin/python"
  export PATH="$ROOT/bin:$PATH"
fi
PY=python

{
  echo "date: $(date -u +%FT%TZ)"; echo "mode: $([ $DRY = 1 ] && echo dry-run || echo gpu)"
  $PY -c "import sys, torch, dvc, pydantic; print('python', sys.version.split()[0], '| torch',
torch.__version__, '| cuda', torch.version.cuda, '| dvc', dvc.__version__, '| pydantic',
pydantic.__version__); print('gpu:', torch.cuda.get_device_name(0) if torch.cuda.is_available()
else 'none'); print('cpus:', __import__('os').cpu_count())"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader || true
} > "$OUT/env.txt" 2>&1 || { cat "$OUT/env.txt" >&2; echo "gpu_run.sh: the environment lacks torch, dvc or pydantic" >&2; exit 2; }
cat "$OUT/env.txt" >&2

if [ $DRY = 1 ]; then
  # Tiny ImageFolder (10 classes, 32x32) and shrunk recipes; CPU, compile off.
  $PY - "$ROOT/tinyset" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
root, rng = Path(sys.argv[1]), np.random.default_rng(0)
for split, n in (("train", 24), ("test", 8)):
    for k in range(10):
        d = root / split / f"class{k}"
        d.mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            img[..., k % 3] += np.uint8(25 * (k + 1) % 190)
            Image.fromarray(img).save(d / f"{i}.png")
EOF
  $PY - "$ROOT/tinyset" <<'EOF'
import sys
import yaml
p = yaml.safe_load(open("params.yaml"))
p["device"] = "cpu"
p["data"].update(source=sys.argv[1], sha256=None, md5=None)
for name, m in p["models"].items():
    m["train"].update(epochs=1, batch_size=32, runs=1, compile=name == "cnn", warmup_steps=2,
                      eval_every=1, breakdown_steps=1)
    m["augment"]["mix_off_epochs"] = 0
p["models"]["cnn"]["arch"]["widths"] = [8, 16, 16]
p["models"]["vit"]["arch"].update(dim=32, depth=1, heads=2)
p["profile"].update(batch_sizes=[1, 8], iters=2, warmup_iters=1, latency_runs=10,
                    max_seconds_per_config=1)
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
EOF
  BENCH_STEPS=3
else
  SRC=$($PY -c "import yaml; print(yaml.safe_load(open('params.yaml'))['data']['source'])")
  if [ -n "$DATA" ] && [[ "$SRC" != *://* ]]; then
    mkdir -p "$(dirname "$SRC")"
    cp "$DATA" "$SRC"
    [ -f "$DATA.sha256" ] && cp "$DATA.sha256" "$SRC.sha256"
  fi
  BENCH_STEPS=30
fi

if [ ${#SETS[@]} -gt 0 ]; then
  $PY - "${SETS[@]}" <<'EOF'
import sys
import yaml
p = yaml.safe_load(open("params.yaml"))
for item in sys.argv[1:]:
    key, _, value = item.partition("=")
    *path, last = key.split(".")
    node = p
    for k in path:
        node = node[k]
    if last not in node:
        sys.exit(f"gpu_run.sh: --set {key}: no such key in params.yaml")
    node[last] = yaml.safe_load(value)
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
EOF
  log "params overridden: ${SETS[*]}"
fi

if command -v git >/dev/null 2>&1; then
  git init -q && git add -A && git -c user.name=gpu-run -c user.email=gpu-run@localhost commit -qm snapshot
else
  log "no git on this machine: DVC runs without SCM"
  dvc config --local core.no_scm true
fi

# ---- the pipeline, most important first; each step logged -----------------------------------
run() {  # run NAME TIMEOUT CMD...: log to LOGS/NAME.log, never abort the whole script
  local name=$1 limit=$2; shift 2
  mkdir -p "$LOGS"
  if [ "$limit" -le 0 ]; then log "$name: skipped (budget spent)"; return 1; fi
  log "$name: start (limit ${limit}s)"
  if timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1; then
    log "$name: done"
  else
    local rc=$?
    log "$name: FAILED (exit $rc); last lines:"; tail -n 5 "$LOGS/$name.log" | tee -a "$OUT/steps.log" >&2
    return 1
  fi
}
run prepare "$(left)" dvc repro prepare || true
run train_cnn "$(left)" dvc repro train@cnn || true
run profile_cnn "$(left)" dvc repro profile@cnn || true
# profile@vit and report need the ViT's weights: if its training failed, a plain `dvc repro`
# would only start it again, so they are skipped.
if run train_vit "$(( $(left) - 90 ))" dvc repro train@vit; then
  run profile_vit_and_report "$(left)" dvc repro || true
else
  log "profile_vit_and_report: skipped (train_vit failed)"
fi
run status "$(left)" dvc status || true

# ---- extras while the budget lasts ----------------------------------------------------------
if [ $DRY = 0 ]; then
  run compile_check "$(( $(left) - 60 ))" $PY -m pytest -q -p no:cacheprovider tests/test_compile.py -k matches_eager || true
fi
run bench_cnn "$(( $(left) - 30 ))" $PY benchmarks/train_throughput.py --model cnn --steps "$BENCH_STEPS" --compile || true
run bench_vit "$(left)" $PY benchmarks/train_throughput.py --model vit --steps "$BENCH_STEPS" --compile || true

# ---- what comes back ------------------------------------------------------------------------
$PY benchmarks/gpu_summary.py --out "$OUT/summary.md" --env "$OUT/env.txt" --logs "$LOGS" \
  2>>"$OUT/steps.log" || log "summary: FAILED"
tar -czf "$OUT/results.tgz" dvc.lock params.yaml metrics plots 2>/dev/null || true
tar -czf "$OUT/logs.tgz" -C "$ROOT" logs 2>/dev/null || true
for m in cnn vit; do [ -f "models/$m.pt" ] && cp "models/$m.pt" "$OUT/$m.pt"; done
log "finished in $(( $(date +%s) - START ))s"
cat "$OUT/summary.md" 2>/dev/null >&2 || true
