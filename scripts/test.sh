#!/usr/bin/env bash
# The test command: installs what is missing, then format check, lints, and every
# test of the workspace (unit, property, DPDK integration on virtual devices).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
# Leftover DPDK runtime files of earlier test runs (killed processes) are not reused.
rm -rf /var/run/dpdk/fs-* 2>/dev/null || true
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
