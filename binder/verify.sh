#!/usr/bin/env bash
# Prove that the Binder environment works, without Binder: build a fresh virtualenv from exactly
# binder/'s files (runtime.txt, requirements.txt, postBuild), on a copy of the repository as Binder
# would clone it, and execute notebook 1 (or the notebooks given as arguments) in it.
#
#   binder/verify.sh                                   # notebooks/01_quickstart.ipynb
#   binder/verify.sh notebooks/06_headless_and_hpc.ipynb
#   PYTHON=python3.11 KEEP=1 binder/verify.sh          # pick the interpreter (default: .venv's base
#                                                      # Python, else python3); keep the work folder
#
# Every step is bounded by a timeout; the whole check takes a few minutes (most of it pip).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
# Default interpreter: the one the project's .venv was made from (make test creates it), else python3.
if [ -z "${PYTHON:-}" ] && [ -x "$REPO/.venv/bin/python" ]; then
    PYTHON="$("$REPO/.venv/bin/python" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
fi
PYTHON="${PYTHON:-python3}"
[ $# -gt 0 ] || set -- notebooks/01_quickstart.ipynb
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mpiq-binder-XXXXXX")"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT
t0=$SECONDS
step() { printf '\n[binder/verify %3ds] %s\n' "$((SECONDS - t0))" "$*"; }

step "interpreter: Binder's runtime.txt against $PYTHON"
want="$(sed -n 's/^python-\([0-9]*\.[0-9]*\).*/\1/p' "$REPO/binder/runtime.txt")"
have="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$want" != "$have" ]; then
    echo "binder/runtime.txt asks for Python $want but $PYTHON is Python $have; set PYTHON=python$want." >&2
    exit 2
fi

step "repository as Binder clones it (tracked and untracked, not ignored files) -> $WORK/repo"
mkdir -p "$WORK/repo" "$WORK/home" "$WORK/out"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf -) \
        | tar -C "$WORK/repo" -xf -
else  # not a git checkout: everything but the build outputs
    tar -C "$REPO" --exclude=./.venv --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ -cf - . \
        | tar -C "$WORK/repo" -xf -
fi
for nb in "$@"; do
    [ -f "$WORK/repo/$nb" ] || { echo "No notebook $nb in the repository." >&2; exit 2; }
done

step "fresh virtualenv from binder/requirements.txt"
"$PYTHON" -m venv "$WORK/venv"
VENV="$WORK/venv"
timeout 600 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile \
    -r "$WORK/repo/binder/requirements.txt"

step "binder/postBuild (from the repository root, the environment first on PATH, as repo2docker runs it)"
(cd "$WORK/repo" && PATH="$VENV/bin:$PATH" timeout 300 ./binder/postBuild)

step "consistency: pip check, and every installed package pinned in requirements.txt"
"$VENV/bin/python" -m pip check
"$VENV/bin/python" - "$WORK/repo/binder/requirements.txt" <<'PY'
import re, subprocess, sys
pins = {}
for line in open(sys.argv[1]):
    m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
    if m:
        pins[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                        capture_output=True, text=True, check=True).stdout
unpinned = []
for line in freeze.splitlines():
    name, _, version = line.partition("==")
    key = re.sub(r"[-_.]+", "-", name).lower()
    if version and pins.get(key) != version:
        unpinned.append(f"{name}=={version} (requirements.txt: {pins.get(key, 'absent')})")
if unpinned:
    sys.exit("Installed but not pinned as installed:\n  " + "\n  ".join(unpinned))
print(f"{len(pins)} pins, all installed as pinned")
PY

step "kernel: the environment's python3"
export PATH="$VENV/bin:$PATH" HOME="$WORK/home" JUPYTER_PREFER_ENV_PATH=1
unset JUPYTER_PATH JUPYTER_CONFIG_DIR JUPYTER_DATA_DIR IPYTHONDIR VIRTUAL_ENV MPIQ_WIDGETS
"$VENV/bin/python" - "$VENV" <<'PY'
import os, shutil, sys
from jupyter_client.kernelspec import KernelSpecManager
spec = KernelSpecManager().get_kernel_spec("python3")
exe = spec.argv[0] if os.path.isabs(spec.argv[0]) else shutil.which(spec.argv[0])
assert os.path.realpath(os.path.dirname(exe)) == os.path.realpath(os.path.join(sys.argv[1], "bin")), (spec.resource_dir, spec.argv)
print("python3 kernel:", spec.resource_dir, "->", exe)
PY

for nb in "$@"; do
    step "execute $nb (jupyter nbconvert, cell timeout 120 s)"
    start=$SECONDS
    (cd "$WORK/repo/$(dirname "$nb")" && timeout 300 jupyter nbconvert --to notebook --execute \
        --ExecutePreprocessor.timeout=120 --ExecutePreprocessor.kernel_name=python3 \
        --output-dir "$WORK/out" "$(basename "$nb")")
    echo "$nb ran in $((SECONDS - start)) s"
done

leftover="$(pgrep -f "$WORK" || true)"
if [ -n "$leftover" ]; then
    echo "Processes from the Binder environment are still running: $leftover" >&2
    exit 1
fi
step "OK: the Binder environment installs and runs $*"
