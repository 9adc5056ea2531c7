#!/usr/bin/env bash
# Runs the switch on its embedded demo (virtual devices, no config): installs what
# is missing, builds in release mode, runs until Ctrl-C. Extra arguments go to
# `ferroswitch run` (for example --config FILE.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
cargo build --release --locked --bin ferroswitch
exec ./target/release/ferroswitch run "$@"
