#!/usr/bin/env bash
# Build one virtualenv per peer package under benchmarks/peers/.venvs/ (git-ignored), from PyPI.
#
#   bash benchmarks/peers/setup_envs.sh            # both peers, one after the other
#   bash benchmarks/peers/setup_envs.sh nequip     # just one
#
# Each peer gets its own venv because their pins clash with ours: mace-torch pins e3nn==0.4.4, we use
# e3nn 0.6.0. Every venv gets the same torch, ASE and OpenMM stack as ours, so the comparison differs only
# in the model package. A venv that already exists and imports its peer is skipped (safe to re-run).
# Expect about 10 minutes and 7-8 GB per venv (torch's CUDA wheels are downloaded even on a CPU machine).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# the checks run outside the checkout: from its root, Python would find mlpot's egg-info (and its openmm-ml
# entry point) on sys.path, and `import openmmml` in a peer venv would then try to load mlpot
cd "${TMPDIR:-/tmp}"

venvs="${MLPOT_PEER_VENVS:-$here/.venvs}"
python="${PYTHON:-python3}"

# the stack shared by every venv, pinned to what our own venv uses
common=(torch==2.9.0 ase openmm==8.6.1 openmmtorch==1.5 openmmml)

declare -A packages=(
  [mace]="mace-torch"
  [nequip]="nequip"
)
# the import that proves a venv works (mace must be imported before e3nn: see benchmarks/README.md)
declare -A checks=(
  [mace]="import mace, mace.modules, mace.calculators, openmmml, openmmtorch"
  [nequip]="import nequip, nequip.model, nequip.integrations.ase, openmmml, openmmtorch"
)

peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(mace nequip)

for peer in "${peers[@]}"; do
  if [ -z "${packages[$peer]+x}" ]; then
    echo "unknown peer '$peer' (known: ${!packages[*]})" >&2
    exit 2
  fi
  venv="$venvs/$peer"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "${checks[$peer]}" >/dev/null 2>&1; then
    echo "[$peer] $venv exists and imports; skipped"
    continue
  fi
  echo "[$peer] building $venv ($(date -u +%H:%M:%S))"
  start=$SECONDS
  rm -rf "$venv"
  mkdir -p "$venvs"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install "${common[@]}" ${packages[$peer]}
  "$venv/bin/python" -c "${checks[$peer]}"
  "$venv/bin/python" -m pip freeze > "$venv/requirements-frozen.txt"
  echo "[$peer] done in $((SECONDS - start)) s"
done
