# Sourced by run.sh and run_sections.sh: the repository root as working directory, where data and runs are, and
# `step`, which prints and times each command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DATA=${DATA:-/work/data}
EXP=${EXP:-runs/real}
LM=.venv/bin/lmlab
HERE=results/finetune-real
step() { echo "== $(date -u +%H:%M:%S) $*" >&2; /usr/bin/time -f "   wall %e s" "$@"; }
