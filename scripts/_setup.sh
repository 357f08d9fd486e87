# Sourced by scripts/motionfs and scripts/test: make sure the machine and the
# project's virtualenv are ready, quietly and only doing what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

# Debian packages: fuse3 (fusermount3), libfuse3-dev + pkg-config (to build pyfuse3),
# attr (getfattr/setfattr for tests and users), rsync and git (tests), ffmpeg libs come in wheels.
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config attr rsync git gcc python3-dev)
# scripts/test also needs PostgreSQL's server binaries (tests/pgserver.py starts its own
# throwaway servers); mounting does not.
if [ "${MOTIONFS_SETUP_FOR:-}" = test ]; then
  APT_PACKAGES+=(postgresql)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "motionfs setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
  if [[ " ${missing[*]} " == *" postgresql "* ]] && command -v pg_lsclusters >/dev/null; then
    # The package may start its own `main` cluster; the tests never use it: stop it.
    pg_lsclusters -h | awk '$4 == "online" {print $1, $2}' | while read -r ver name; do
      $SUDO pg_ctlcluster "$ver" "$name" stop >&2 || true
    done
  fi
fi

PY="${MOTIONFS_PYTHON:-python3}"
stamp="$VENV/.motionfs-installed"
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" >&2
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "motionfs setup: installing the Python environment in .venv" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2 2>/dev/null || true
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test]" >&2
  echo "$want" > "$stamp"
fi
