# Sourced by scripts/*: the project's virtualenv and the services the tests need.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ENTREPOT_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  # Reinstall only when pyproject.toml changed since the last install.
  local stamp="$VENV/.entrepot-installed"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
    touch "$stamp"
  fi
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "need root (or preinstalled packages) for: $*" >&2
    return 1
  fi
  if [ ! -f /tmp/.entrepot-apt-updated ]; then
    apt-get update -q >/dev/null && touch /tmp/.entrepot-apt-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

ensure_postgres() {
  # The tests need PostgreSQL on 127.0.0.1:5432 with trust auth for user postgres.
  if [ -n "${ENTREPOT_TEST_POSTGRES:-}" ]; then return 0; fi
  if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
  fi
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    local ver
    ver="$(ls /etc/postgresql | sort -V | tail -n 1)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  fi
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    # A fresh Debian cluster asks for passwords on TCP: trust loopback for the test user.
    local hba
    hba="$(ls /etc/postgresql/*/main/pg_hba.conf | sort -V | tail -n 1)"
    sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    local ver
    ver="$(ls /etc/postgresql | sort -V | tail -n 1)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
    sleep 1
  fi
  psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null
}

ensure_sdk14() {
  # The genuine azure-mgmt-containerregistry 14.x (multi-API, default 2025-04-01) cannot share
  # the venv with 15.x: install it into its own directory, put first on PYTHONPATH by
  # tests/test_arm_sdk14.py. Everything else it needs (azure-core, azure-mgmt-core, isodate,
  # typing-extensions) comes from the venv; only azure-common (azure.profiles) is missing there.
  local target="$VENV/sdk14"
  if [ -f "$target/.entrepot-sdk14-installed" ]; then return 0; fi
  rm -rf "$target"
  "$VENV/bin/python" -m pip install -q --no-deps --target "$target" \
    "azure-mgmt-containerregistry==14.*" "azure-common>=1.1"
  touch "$target/.entrepot-sdk14-installed"
}

ensure_registry_tools() {
  # The upstream tests (tests/registries.py) start real registries: Debian's docker-registry
  # (CNCF distribution 2.8), skopeo to push test images, htpasswd (apache2-utils) for bcrypt
  # password files.
  local missing=()
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
  command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
}

ensure_containerd() {
  # tests/test_pull_clients.py starts a containerd daemon of its own (own root, state dir and
  # socket; tests/containerd.py) and pulls through entrepot with its `ctr`.
  if ! command -v containerd >/dev/null 2>&1 || ! command -v ctr >/dev/null 2>&1; then
    apt_install containerd
  fi
}
