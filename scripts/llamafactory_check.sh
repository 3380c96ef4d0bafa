#!/usr/bin/env bash
# Does LLaMA-Factory read our export? Runs LLaMA-Factory's own v0 dataset loading and preprocessing
# (get_train_args, load_tokenizer, get_template_and_fix_tokenizer, get_dataset for the sft, dpo (rm)
# and kto stages) on `uftdata export --to llamafactory` of a mixture (default: the demo's
# out/demo/mix_demo, made by scripts/demo.sh when missing), with the project's tiny model and 512-token
# tokenizer, and checks counts and every decoded prompt, response, label and kto tag against the
# exported jsonl (scripts/llamafactory_check.py says exactly what). `make llamafactory-check`.
#
# LLaMA-Factory gets its own virtual environment, .venv-lf (Python 3.11, built once; rebuilt when
# scripts/llamafactory-constraints.txt changes), because its pins conflict with the project's .venv:
# llamafactory 0.9.5, transformers 5.6.0, datasets 4.0.0, trl 0.24.0, peft 0.18.1, accelerate 1.11.0,
# torchdata 0.11.0, gradio 5.50.0, and torch 2.9.1 + torchvision 0.24.1 + torchaudio 2.9.1 instead
# of the local torch 2.13.0+cpu: llamafactory/data/mm_plugin.py imports torchaudio unconditionally
# (template.py imports it), and no torchaudio matches torch 2.13.0. The 2.9.1 set comes from PyPI as
# the CUDA 12.8 build (about 8 GB, a few minutes to download); it runs on the CPU. The constraints
# file pins every package and says why. Not part of CI: `make test` never builds .venv-lf.
#
# The project's .venv (make install) exports the mixture and saves the tokenizer and tiny model; only
# the check itself runs in .venv-lf. Exit status: 0 all match, 1 a mismatch, 2 the environment or
# the inputs could not be made (one line on stderr; pip's output is in out/llamafactory_check/).
# Environment: VENV (default .venv), LF_VENV (.venv-lf), LF_PYTHON (python3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
LF_VENV=${LF_VENV:-.venv-lf}
LF_PYTHON=${LF_PYTHON:-python3.11}
CONSTRAINTS=scripts/llamafactory-constraints.txt
MIXTURE=${1:-out/demo/mix_demo}
LOGS=out/llamafactory_check
STAMP=$LF_VENV/.uft-constraints
MADE=$LF_VENV/.uft-made

die() { echo "llamafactory-check: $*" >&2; exit 2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

build_lf_venv() {
    if [[ -f $STAMP ]] && cmp -s "$CONSTRAINTS" "$STAMP"; then
        echo "reusing $LF_VENV (built with the current $CONSTRAINTS)"
        return
    fi
    command -v "$LF_PYTHON" >/dev/null || die "cannot build $LF_VENV: $LF_PYTHON not found (LLaMA-Factory 0.9.5 needs Python >= 3.11; set LF_PYTHON)"
    # Only a folder this script made (its MADE marker, written first) is ever removed and rebuilt.
    if [[ -e $LF_VENV && ! -f $MADE ]]; then
        die "$LF_VENV exists and was not built by this script; remove it yourself or set LF_VENV"
    fi
    echo "building $LF_VENV with $LF_PYTHON (torch 2.9.1 CUDA build from PyPI, about 8 GB; log: $LOGS/venv-build.log)"
    rm -rf "$LF_VENV"
    mkdir -p "$LF_VENV" && touch "$MADE"
    {
        "$LF_PYTHON" -m venv "$LF_VENV" &&
        "$LF_VENV/bin/python" -m pip install --upgrade pip &&
        "$LF_VENV/bin/python" -m pip install -c "$CONSTRAINTS" llamafactory==0.9.5 torchvision torchaudio &&
        "$LF_VENV/bin/python" -c "import llamafactory.data, torchaudio"
    } >"$LOGS/venv-build.log" 2>&1 || die "cannot build $LF_VENV: the install failed (see $LOGS/venv-build.log)"
    cp "$CONSTRAINTS" "$STAMP"
}

mkdir -p "$LOGS"
[[ -x $VENV/bin/uftdata ]] || die "$VENV/bin/uftdata not found; run \`make install\` first"
start=$(now)
build_lf_venv
built=$(now)

if [[ ! -f $MIXTURE/manifest.json && $MIXTURE == out/demo/mix_demo ]]; then
    echo "making the demo mixture (scripts/demo.sh, log: $LOGS/demo.log)"
    PATH="$PWD/$VENV/bin:$PATH" bash scripts/demo.sh >"$LOGS/demo.log" 2>&1 || die "scripts/demo.sh failed (see $LOGS/demo.log)"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/uft-llamafactory-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$VENV/bin/uftdata" export "$MIXTURE" --to llamafactory -o "$work/export" >"$LOGS/export.log" 2>&1 ||
    die "uftdata export $MIXTURE failed (see $LOGS/export.log)"
"$VENV/bin/python" - "$work/tiny" >"$LOGS/tiny.log" 2>&1 <<'EOF' || die "saving the tiny model and tokenizer failed (see $LOGS/tiny.log)"
import sys
from uft_train.tiny import build_tiny_model
from uft_train.tokenizer import build_tokenizer
tokenizer = build_tokenizer()
tokenizer.save_pretrained(sys.argv[1])
build_tiny_model(tokenizer).save_pretrained(sys.argv[1])
EOF
prepared=$(now)

status=0
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_DATASETS_CACHE="$work/hf-datasets" HF_DATASETS_DISABLE_PROGRESS_BARS=1 \
LLAMAFACTORY_VERBOSITY=WARNING TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false \
    "$LF_VENV/bin/python" scripts/llamafactory_check.py --export "$work/export" --model "$work/tiny" \
    --work "$work/lf" 2>"$LOGS/llamafactory.log" || status=$?
done_at=$(now)
if (( status > 1 )); then
    tail -n 5 "$LOGS/llamafactory.log" >&2
    die "scripts/llamafactory_check.py failed (exit $status; see $LOGS/llamafactory.log)"
fi
echo "LLaMA-Factory's warnings of dropped examples: $(grep -c 'Dropped invalid example' "$LOGS/llamafactory.log" || true) (log: $LOGS/llamafactory.log)"
echo "time: $LF_VENV $(secs "$start" "$built") s, export + tokenizer $(secs "$built" "$prepared") s, check $(secs "$prepared" "$done_at") s, total $(secs "$start" "$done_at") s"
if (( status == 0 )); then echo "llamafactory-check: OK"; else echo "llamafactory-check: MISMATCH"; fi
exit "$status"
