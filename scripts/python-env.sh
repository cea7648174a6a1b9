#!/usr/bin/env bash
# A Python virtual environment under target/ with what examples/ needs
# (examples/requirements.txt), for the tests that run the examples and the
# README's grpcurl commands (tests/python/grpcurl.py). Does nothing when the
# environment already matches the requirements file.
# Prints the environment's python.
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir="${CARGO_TARGET_DIR:-target}/python-env"
stamp="$env_dir/requirements.txt"
# Test processes run side by side (nextest) and each calls this script: one
# at a time, so a single one installs and the others find it done.
mkdir -p "$(dirname "$env_dir")"
exec 9>"$env_dir.lock"
flock 9
if [[ ! -x $env_dir/bin/python ]] || ! cmp -s examples/requirements.txt "$stamp"; then
    python3 -m venv "$env_dir" >&2
    "$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r examples/requirements.txt >&2
    cp examples/requirements.txt "$stamp"
fi
echo "$env_dir/bin/python"
