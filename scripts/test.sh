#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine (as root): installs what the tests need, builds
# all binaries (the supervisor and the probe are static), then runs the whole workspace's tests, lints included.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need_pkgs+=(iproute2)
have curl || need_pkgs+=(curl)
have git || need_pkgs+=(git)
have setpriv || need_pkgs+=(util-linux)
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
/usr/bin/python3 -c 'import requests' >/dev/null 2>&1 || need_pkgs+=(python3-requests)
have node || need_pkgs+=(nodejs)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need_pkgs+=(ca-certificates)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need_pkgs[*]} (run as root so they can be installed)" >&2
    exit 1
  fi
  echo "installing: ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! have cargo; then
  echo "cargo (Rust >= 1.90) is required: install it with rustup" >&2
  exit 1
fi

cargo fmt --all -- --check
cargo build --workspace --bins
cargo clippy --workspace --all-targets -- -D warnings
log="${TEST_LOG:-/tmp/openshell-test.log}"
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
# One closing line for the whole workspace (cargo's own last line is often a crate's empty doc-test run).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
