#!/usr/bin/env bash
# ICET Studio GPU check: builds the CLI and the gpu-labelled tests against the official LibTorch
# 2.x CUDA distribution (preset "cuda", packaging/cuda/README.md), runs those tests, and times
#   decode   tokens/s of a random checkpoint of LLaVA-1.5-7B's exact shape (bfloat16), against
#            the card's memory-bandwidth bound (bytes one decode step reads / bandwidth)
#   L-PPO    one training step of the demo run config (models/demo/lppo.json) on the GPU
# and ends with a summary block. Exit status: 0 all passed; 1 a gpu test failed (or was skipped
# on a machine whose GPU nvidia-smi sees); 2 set-up, configure or build failed; 3 a timing failed.
#
#   packaging/cuda/gpu_check.sh [options]
#     --build-only     resolve LibTorch, configure and build, then stop (a first, long call)
#     --skip-build     reuse build/cuda as it is (a second call on the same machine)
#     --install-deps   apt-get the Debian packages packaging/setup.sh lists (not libtorch-dev)
#     --no-download    never download LibTorch (fail instead)
#     --dry-run        print what would run; run nothing but the read-only probes
#     --cpu-smoke      no GPU, no build: run the same timing and test commands with the Debian
#                      LibTorch build (build/release) on the CPU and a tiny checkpoint
#     --self-test      check the bandwidth table and the bound arithmetic, then exit
#
# Environment:
#   LIBTORCH           an unpacked LibTorch (libtorch/ folder, or a pip torch package folder)
#   ICET_CACHE         where a downloaded LibTorch is kept (default ~/.cache/icet-cuda)
#   LIBTORCH_URL, LIBTORCH_SHA256   another zip, and the sha256 it must have
#   ICET_GPU_BW_TBS    memory bandwidth in TB/s, overriding the table below (by GPU name)
#   ICET_DECODE_TOKENS tokens per answer in the decode timing (default 128; best of 3)
#   ICET_TRAIN_STEPS   L-PPO steps timed (default 2)
#   ICET_GPU_SWEEP=1   also time the batched 24-layer sweep at the 7B shape
#   ICET_BENCH_TMP     folder for the 14 GB random checkpoint (default: /dev/shm when it has
#                      20 GiB free, else $TMPDIR or /tmp)
#   ICET_GPU_CHECK_OUT also copy the logs and summary here (e.g. the device runner's $OUT)
#   ICET_BIN           --cpu-smoke: the icet binary (default build/release/app/icet)
#   ICET_LIBTORCH_CONFIG, TORCH_CUDA_ARCH_LIST   passed to CMake (packaging/cuda/libtorch.cmake)
set -euo pipefail

# ---- Pinned LibTorch (packaging/cuda/README.md says why this one) --------------------------
LIBTORCH_VERSION="2.5.1+cu124"
LIBTORCH_URL="${LIBTORCH_URL:-https://download.pytorch.org/libtorch/cu124/libtorch-cxx11-abi-shared-with-deps-2.5.1%2Bcu124.zip}"
# PyTorch publishes no checksum for its LibTorch zips; none is pinned here. The script prints
# the sha256 of what it downloaded: set LIBTORCH_SHA256 to that to pin it for later runs.
LIBTORCH_SHA256="${LIBTORCH_SHA256:-}"

mode=full
dry=0
download=1
install_deps=0
for arg in "$@"; do
  case "$arg" in
    --build-only) mode=build ;;
    --skip-build) mode=run ;;
    --cpu-smoke) mode=smoke ;;
    --self-test) mode=selftest ;;
    --dry-run) dry=1 ;;
    --no-download) download=0 ;;
    --install-deps) install_deps=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "gpu_check: unknown option '$arg' (see --help)" >&2
      exit 2
      ;;
  esac
done

decode_tokens="${ICET_DECODE_TOKENS:-128}"
train_steps="${ICET_TRAIN_STEPS:-2}"
for v in "$decode_tokens" "$train_steps"; do
  case "$v" in
    '' | *[!0-9]* | 0)
      echo "gpu_check: ICET_DECODE_TOKENS and ICET_TRAIN_STEPS take positive integers (got '$v')" >&2
      exit 2
      ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

say() { echo "gpu_check: $*"; }
warn() { echo "gpu_check: WARNING: $*" >&2; }
die() {
  local code="$1"
  shift
  echo "gpu_check: $*" >&2
  exit "$code"
}
# Prints a command (to stderr), then runs it unless --dry-run.
run() {
  {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  } >&2
  if [ "$dry" = 0 ]; then "$@"; fi
}

# ---- Numbers -----------------------------------------------------------------------------
# Peak memory bandwidth by nvidia-smi name, TB/s (vendor data sheets). Order matters: GH200
# before H200, "H100 NVL" and "H100 PCIe" before H100 (SXM, "H100 80GB HBM3"), L40 before L4.
bandwidth_tbs() {
  case "$1" in
    *GH200*) echo 4.0 ;;
    *H200*) echo 4.8 ;;
    *"H100 NVL"*) echo 3.9 ;;
    *H100*PCIe*) echo 2.0 ;;
    *H100*) echo 3.35 ;;
    *H800*PCIe*) echo 2.0 ;;
    *H800*) echo 3.35 ;;
    *B200*) echo 8.0 ;;
    *A100*80GB*PCIe* | *A100*PCIE*80GB*) echo 1.935 ;;
    *A100*SXM*80GB*) echo 2.039 ;;
    *A100*) echo 1.555 ;;
    *A800*) echo 2.039 ;;
    *L40*) echo 0.864 ;;
    *L4*) echo 0.3 ;;
    *A10G*) echo 0.6 ;;
    *A10*) echo 0.6 ;;
    *"RTX 6000 Ada"*) echo 0.96 ;;
    *"RTX 4090"*) echo 1.008 ;;
    *"RTX 3090"*) echo 0.936 ;;
    *) echo "" ;;
  esac
}

# tokens/s bound = bandwidth / bytes per decode step
bound_tokens_per_s() { awk -v bw="$1" -v b="$2" 'BEGIN { printf "%.1f", bw * 1e12 / b }'; }
ratio_of() { awk -v m="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", m / b; else print "n/a" }'; }
# A number from a one-line JSON object (the benches print one): json_num KEY FILE
json_num() { sed -n "s/.*\"$1\":\(-\{0,1\}[0-9][0-9.eE+-]*\).*/\1/p" "$2" | tail -n 1; }
json_str() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" "$2" | tail -n 1; }
fmt() { awk -v x="$1" -v d="$2" 'BEGIN { if (x == "") print "n/a"; else printf "%.*f", d, x }'; }

if [ "$mode" = selftest ]; then
  fail=0
  check() {
    if [ "$2" != "$3" ]; then
      echo "self-test: $1: expected '$3', got '$2'" >&2
      fail=1
    fi
  }
  check "H100 SXM" "$(bandwidth_tbs 'NVIDIA H100 80GB HBM3')" 3.35
  check "H100 PCIe" "$(bandwidth_tbs 'NVIDIA H100 PCIe')" 2.0
  check "H100 NVL" "$(bandwidth_tbs 'NVIDIA H100 NVL')" 3.9
  check "H200" "$(bandwidth_tbs 'NVIDIA H200')" 4.8
  check "H200 NVL" "$(bandwidth_tbs 'NVIDIA H200 NVL')" 4.8
  check "GH200" "$(bandwidth_tbs 'NVIDIA GH200 480GB')" 4.0
  check "A100 SXM 80" "$(bandwidth_tbs 'NVIDIA A100-SXM4-80GB')" 2.039
  check "A100 PCIe 80" "$(bandwidth_tbs 'NVIDIA A100 80GB PCIe')" 1.935
  check "A100 40" "$(bandwidth_tbs 'NVIDIA A100-SXM4-40GB')" 1.555
  check "L40S" "$(bandwidth_tbs 'NVIDIA L40S')" 0.864
  check "L4" "$(bandwidth_tbs 'NVIDIA L4')" 0.3
  check "unknown" "$(bandwidth_tbs 'Some GPU')" ""
  # LLaVA-1.5-7B in bfloat16: 32 x 202,383,360 layer weights + 131,334,144 LM head + 2 x 4096
  # (final norm, one embedding row) = 6,607,609,856 parameters = 13,215,219,712 bytes, plus the
  # KV cache at the answer's mean length (590 prompt tokens + 128 / 2 = 654 positions x 524,288 bytes).
  bytes=$((13215219712 + 654 * 524288))
  check "bound H100 SXM" "$(bound_tokens_per_s 3.35 "$bytes")" 247.1
  check "bound H200" "$(bound_tokens_per_s 4.8 "$bytes")" 354.0
  check "ratio" "$(ratio_of 200 247.3)" 0.809
  tmp="$(mktemp)"
  echo '{"a":1,"decode_tokens_per_second":241.25,"dtype":"bfloat16","step_s":1.5e-1}' >"$tmp"
  check "json_num" "$(json_num decode_tokens_per_second "$tmp")" 241.25
  check "json_num exp" "$(json_num step_s "$tmp")" 1.5e-1
  check "json_str" "$(json_str dtype "$tmp")" bfloat16
  check "json_num missing" "$(json_num nothing "$tmp")" ""
  rm -f "$tmp"
  [ "$fail" = 0 ] && echo "self-test: passed"
  exit "$fail"
fi

# ---- Logs --------------------------------------------------------------------------------
if [ "$mode" = smoke ]; then
  build_dir="${ICET_BUILD_DIR:-build/release}"
else
  build_dir=build/cuda  # the "cuda" preset's binaryDir
fi
logs="$build_dir/gpu-check/$(date +%Y%m%d-%H%M%S)"
if [ "$dry" = 0 ]; then mkdir -p "$logs"; fi
summary_lines=()
failures=()
note() { summary_lines+=("$(printf '%-17s %s' "$1" "$2")"); }

sampler_pid=""
train_cfg=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ -n "$sampler_pid" ]; then kill "$sampler_pid" 2>/dev/null || true; fi
  if [ -n "$train_cfg" ]; then rm -f "$train_cfg"; fi
}
trap cleanup EXIT

# ---- GPU ---------------------------------------------------------------------------------
have_gpu=0
gpu_name=""
gpu_index="${CUDA_VISIBLE_DEVICES:-0}"
gpu_index="${gpu_index%%,*}"
case "$gpu_index" in '' | *[!0-9]*) gpu_index=0 ;; esac
if [ "$mode" != smoke ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  have_gpu=1
  echo "---- nvidia-smi"
  nvidia-smi || true
  gpu_csv="$(nvidia-smi -i "$gpu_index" --query-gpu=name,memory.total,driver_version,clocks.max.memory \
    --format=csv,noheader 2>/dev/null || true)"
  gpu_name="$(echo "$gpu_csv" | cut -d, -f1 | sed 's/^ *//; s/ *$//')"
  say "GPU $gpu_index: $gpu_csv"
  note "GPU" "$gpu_csv"
elif [ "$mode" = smoke ]; then
  note "GPU" "none (--cpu-smoke: CPU, Debian LibTorch)"
else
  warn "nvidia-smi sees no GPU: the gpu tests will skip and the timings cannot run on CUDA"
  note "GPU" "none visible to nvidia-smi"
fi
bw="${ICET_GPU_BW_TBS:-}"
bw_source="ICET_GPU_BW_TBS"
if [ -z "$bw" ] && [ -n "$gpu_name" ]; then
  bw="$(bandwidth_tbs "$gpu_name")"
  bw_source="data-sheet figure for '$gpu_name'"
fi

# Samples the GPU's used memory (MiB) into a file until stopped; prints the peak.
start_sampler() {
  if [ "$have_gpu" != 1 ] || [ "$dry" != 0 ]; then return 0; fi
  nvidia-smi -i "$gpu_index" --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$1" 2>/dev/null &
  sampler_pid=$!
}
stop_sampler() {
  if [ -n "$sampler_pid" ]; then
    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=""
  fi
  if [ -s "$1" ]; then sort -n "$1" | tail -n 1; else echo ""; fi
}

# ---- Debian packages (the list packaging/setup.sh installs, minus Debian's LibTorch) --------
if [ "$install_deps" = 1 ]; then
  mapfile -t packages < <(sed -n '/^packages=(/,/^)/p' packaging/setup.sh | sed '1d;$d' | tr -s ' \t' '\n' |
    sed '/^$/d' | grep -vxE 'libtorch-dev|libopenblas0-openmp')
  case " ${packages[*]} " in
    *" cmake "*" qt6-base-dev "*) ;;
    *) die 2 "could not read the package list from packaging/setup.sh (got: ${packages[*]:-nothing})" ;;
  esac
  packages+=(unzip curl)
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    run "${sudo[@]}" apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    say "all ${#packages[@]} Debian packages present"
  fi
fi

# ---- LibTorch ----------------------------------------------------------------------------
libtorch_source=""
resolve_libtorch() {
  if [ -n "${LIBTORCH:-}" ]; then
    libtorch_source="LIBTORCH"
    return
  fi
  # --skip-build: the LibTorch the build folder was configured with.
  if [ "$mode" = run ] && [ -f "$build_dir/CMakeCache.txt" ]; then
    LIBTORCH="$(sed -n 's/^LIBTORCH:PATH=//p' "$build_dir/CMakeCache.txt")"
    if [ -n "$LIBTORCH" ]; then
      libtorch_source="$build_dir/CMakeCache.txt"
      return
    fi
  fi
  local cache="${ICET_CACHE:-$HOME/.cache/icet-cuda}"
  local zip_name="${LIBTORCH_URL##*/}"
  local dir="$cache/${zip_name%.zip}"  # one folder per zip
  dir="${dir//%2B/+}"
  if [ -f "$dir/.complete" ] && [ -f "$dir/libtorch/lib/libtorch_cuda.so" ]; then
    LIBTORCH="$dir/libtorch"
    libtorch_source="cache $dir"
    return
  fi
  # A pip torch with CUDA and the cxx11 ABI is a LibTorch too (torch/include, torch/lib).
  local py
  if py="$(python3 - 2>/dev/null <<'EOF'
import os, torch
if torch.version.cuda and torch.compiled_with_cxx11_abi():
    print(os.path.dirname(torch.__file__))
EOF
  )" && [ -n "$py" ] && [ -f "$py/lib/libtorch_cuda.so" ]; then
    LIBTORCH="$py"
    libtorch_source="pip torch"
    return
  fi
  if [ "$download" = 0 ]; then
    die 2 "no LibTorch: set LIBTORCH to an unpacked libtorch/ folder, or allow the download (drop --no-download)"
  fi
  local zip="$cache/$zip_name"
  run mkdir -p "$cache"
  if [ -f "$zip" ] && unzip -tq "$zip" >/dev/null 2>&1; then
    say "using the complete download $zip"
  elif command -v curl >/dev/null; then
    say "downloading LibTorch $LIBTORCH_VERSION (about 2.5 GB) to $cache"
    run curl -fL --retry 3 -C - -o "$zip" "$LIBTORCH_URL"
  elif command -v wget >/dev/null; then
    say "downloading LibTorch $LIBTORCH_VERSION (about 2.5 GB) to $cache"
    run wget -c -O "$zip" "$LIBTORCH_URL"
  else
    die 2 "neither curl nor wget: download $LIBTORCH_URL yourself and set LIBTORCH"
  fi
  if [ "$dry" = 0 ]; then
    local sum
    sum="$(sha256sum "$zip" | cut -d' ' -f1)"
    if [ -n "$LIBTORCH_SHA256" ]; then
      if [ "$sum" != "$LIBTORCH_SHA256" ]; then
        rm -f "$zip"
        die 2 "$zip: sha256 $sum, expected LIBTORCH_SHA256=$LIBTORCH_SHA256 (the file was removed)"
      fi
      say "sha256 $sum matches LIBTORCH_SHA256"
    else
      say "sha256 $sum (unverified: PyTorch publishes none; pin it with LIBTORCH_SHA256=$sum)"
    fi
  fi
  command -v unzip >/dev/null || [ "$dry" = 1 ] || die 2 "unzip missing (apt-get install unzip)"
  run rm -rf "$dir"
  run mkdir -p "$dir"
  run unzip -q "$zip" -d "$dir"
  run touch "$dir/.complete"
  LIBTORCH="$dir/libtorch"
  libtorch_source="downloaded $LIBTORCH_URL"
}

icet_bin="$build_dir/app/icet"
mapfile -t gpu_tests < <(find tests/gpu -maxdepth 1 -name 'test_*.cpp' -printf '%f\n' | sed 's/\.cpp$//' | sort)

if [ "$mode" = smoke ]; then
  icet_bin="${ICET_BIN:-$icet_bin}"
  note "LibTorch" "Debian's (build $build_dir)"
else
  resolve_libtorch
  export LIBTORCH
  lt_version="$(cat "$LIBTORCH/build-version" 2>/dev/null || echo "?")"
  say "LibTorch $lt_version from $LIBTORCH ($libtorch_source)"
  note "LibTorch" "$lt_version ($libtorch_source) $LIBTORCH"
  if [ "$dry" = 0 ] && [ ! -f "$LIBTORCH/lib/libtorch_cuda.so" ]; then
    die 2 "$LIBTORCH/lib/libtorch_cuda.so missing: not a CUDA LibTorch"
  fi

  if [ "$mode" != run ]; then
    configure=(cmake --preset cuda)
    if [ -n "${ICET_LIBTORCH_CONFIG:-}" ]; then configure+=("-DICET_LIBTORCH_CONFIG=$ICET_LIBTORCH_CONFIG"); fi
    if [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]; then configure+=("-DTORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"); fi
    t0=$SECONDS
    if [ "$dry" = 1 ]; then
      run "${configure[@]}"
      run cmake --build --preset cuda --target icet "${gpu_tests[@]}"
    else
      run "${configure[@]}" >"$logs/configure.log" 2>&1 ||
        die 2 "configure failed; last lines of $logs/configure.log:$(printf '\n')$(tail -n 25 "$logs/configure.log")"
      grep '^-- icet cuda:' "$logs/configure.log" || true
      run cmake --build --preset cuda --target icet "${gpu_tests[@]}" >"$logs/build.log" 2>&1 ||
        die 2 "build failed; last lines of $logs/build.log:$(printf '\n')$(tail -n 40 "$logs/build.log")"
    fi
    if [ "$dry" = 0 ]; then
      units="$(grep -c 'Building CXX' "$logs/build.log" || true)"
      note "build" "$((SECONDS - t0)) s (targets icet ${gpu_tests[*]}; ${units:-0} units compiled)"
    fi
  fi
  if [ "$dry" = 0 ]; then
    [ -x "$icet_bin" ] || die 2 "$icet_bin missing: build first (drop --skip-build)"
    # The binary must load this LibTorch's CUDA libraries, not Debian's or none.
    lt_real="$(readlink -f "$LIBTORCH")"
    torch_cuda="$(ldd "$icet_bin" | awk '/libtorch_cuda/ { print $3 }')"
    case "$(readlink -f "${torch_cuda:-/nonexistent}")" in
      "$lt_real"/*) say "icet links $torch_cuda" ;;
      *) die 2 "$icet_bin does not load libtorch_cuda.so from $LIBTORCH (ldd: '${torch_cuda:-none}')" ;;
    esac
  fi
  if [ "$mode" = build ]; then
    say "built; run again with --skip-build for the tests and timings"
    exit 0
  fi
fi

if [ "$dry" = 0 ]; then
  [ -x "$icet_bin" ] || die 2 "$icet_bin missing (--cpu-smoke uses an existing build: cmake --build --preset release --target icet)"
  if ! "$icet_bin" bench sweep --help | grep -q -- '--shape'; then
    die 2 "$icet_bin lacks 'bench sweep --shape/--device/--dtype/--only decode' (packaging/cuda/README.md, 'CLI')"
  fi
  echo "---- icet info"
  "$icet_bin" info 2>&1 | tee "$logs/info.log" || true
fi

# ---- gpu-labelled tests ------------------------------------------------------------------
echo "---- ctest -L gpu"
tests_status="not run"
ctest_cmd=(ctest --test-dir "$build_dir" -L gpu --output-on-failure --no-tests=error)
if [ "$dry" = 1 ]; then
  run env QT_QPA_PLATFORM=offscreen "${ctest_cmd[@]}"
else
  rc=0
  QT_QPA_PLATFORM=offscreen "${ctest_cmd[@]}" 2>&1 | tee "$logs/ctest.log" || rc=$?
  # pipefail: rc is ctest's status when tee succeeded
  total="$(sed -n 's/.*tests passed, [0-9]* tests failed out of \([0-9]*\).*/\1/p' "$logs/ctest.log" | tail -n 1)"
  skipped="$(grep -c '\*\*\*Skipped' "$logs/ctest.log" || true)"
  if [ "$rc" != 0 ]; then
    tests_status="FAILED (ctest exit $rc; $logs/ctest.log)"
    failures+=(tests)
  elif [ "$have_gpu" = 1 ] && [ "$skipped" != 0 ]; then
    tests_status="FAILED: $skipped of ${total:-?} skipped although nvidia-smi sees a GPU (LibTorch sees no CUDA?)"
    failures+=(tests)
  else
    tests_status="passed ($((${total:-0} - skipped)) of ${total:-?} ran, $skipped skipped)"
  fi
fi
note "gpu tests" "$tests_status"

# ---- Timing: decode on the LLaVA-1.5-7B shape --------------------------------------------
if [ "$mode" = smoke ]; then
  decode_tokens=8 repeats=1
  sweep=(bench sweep --shape tiny --device cpu --dtype float32 --only decode --max-new-tokens "$decode_tokens"
    --repeats "$repeats" --json)
  need_kib=$((64 * 1024))
else
  only=decode
  if [ "${ICET_GPU_SWEEP:-0}" = 1 ]; then only=batched; fi
  repeats=3
  sweep=(bench sweep --shape llava-1.5-7b --device cuda --dtype bfloat16 --only "$only"
    --max-new-tokens "$decode_tokens" --repeats "$repeats" --json)
  need_kib=$((20 * 1024 * 1024))  # 14.1 GB of bfloat16 weights, and room
fi
bench_tmp=""
for d in "${ICET_BENCH_TMP:-}" /dev/shm "${TMPDIR:-/tmp}" /tmp; do
  if [ -z "$d" ] || [ ! -d "$d" ] || [ ! -w "$d" ]; then continue; fi
  avail="$(df -Pk "$d" | awk 'NR == 2 { print $4 }')"
  if [ "$d" = /dev/shm ]; then
    # tmpfs is memory: the checkpoint there, plus the copy being written, must fit in RAM.
    mem="$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo 2>/dev/null || echo 0)"
    if [ "${mem:-0}" -lt $((2 * need_kib)) ]; then continue; fi
  fi
  if [ "${avail:-0}" -ge "$need_kib" ]; then
    bench_tmp="$d"
    break
  fi
done
echo "---- decode timing"
decode_json="$logs/decode.json"
tps="" bytes="" bound="" ratio="" decode_peak=""
if [ -z "$bench_tmp" ]; then
  warn "no folder with $((need_kib / 1024 / 1024)) GiB free for the random checkpoint: set ICET_BENCH_TMP"
  failures+=(decode)
  note "decode" "not run: no room for the checkpoint"
elif [ "$dry" = 1 ]; then
  run env TMPDIR="$bench_tmp" "$icet_bin" "${sweep[@]}"
else
  start_sampler "$logs/decode-gpu-mem.txt"
  rc=0
  TMPDIR="$bench_tmp" timeout -k 10 300 "$icet_bin" "${sweep[@]}" >"$decode_json" 2>"$logs/decode.log" || rc=$?
  decode_peak="$(stop_sampler "$logs/decode-gpu-mem.txt")"
  if [ "$rc" != 0 ] || [ -z "$(json_num decode_tokens_per_second "$decode_json")" ]; then
    failures+=(decode)
    note "decode" "FAILED (exit $rc); $logs/decode.log: $(tail -n 3 "$logs/decode.log" | tr '\n' ' ')"
  else
    cat "$decode_json"
    tps="$(json_num decode_tokens_per_second "$decode_json")"
    bytes="$(json_num decode_bytes_per_token "$decode_json")"
    ctx="$(json_num prompt_tokens "$decode_json")"
    note "decode" "$(fmt "$tps" 1) tokens/s ($(json_str model "$decode_json"); $(json_str dtype "$decode_json"), $decode_tokens new tokens after $ctx prompt tokens, best of $repeats)"
    note "load" "checkpoint written in $(fmt "$(json_num synthetic_write_s "$decode_json")" 1) s ($bench_tmp), loaded in $(fmt "$(json_num load_s "$decode_json")" 1) s, first token after a layer change $(fmt "$(json_num ttft_layer_change_s "$decode_json")" 3) s"
    if [ -n "$(json_num batched_s "$decode_json")" ]; then
      note "sweep" "$(json_num layers "$decode_json") layers batched in $(fmt "$(json_num batched_s "$decode_json")" 2) s (prefill $(fmt "$(json_num batched_prefill_s "$decode_json")" 2) s)"
    fi
    if [ -n "$bw" ] && [ -n "$bytes" ]; then
      bound="$(bound_tokens_per_s "$bw" "$bytes")"
      ratio="$(ratio_of "$tps" "$bound")"
      note "bound" "$bound tokens/s = $bw TB/s ($bw_source) / $(fmt "$(awk -v b="$bytes" 'BEGIN { print b / 1e9 }')" 2) GB per step (weights $(fmt "$(awk -v b="$(json_num decode_weight_bytes_per_token "$decode_json")" 'BEGIN { print b / 1e9 }')" 2) GB + KV cache)"
      note "ratio" "$ratio of the memory-bandwidth bound"
    else
      note "bound" "unknown bandwidth for '${gpu_name:-this device}': set ICET_GPU_BW_TBS (TB/s)"
    fi
  fi
fi

# ---- Timing: one L-PPO step ------------------------------------------------------------------
echo "---- L-PPO step timing"
if [ "$mode" = smoke ]; then
  train_device=cpu train_dtype=float32
else
  train_device=cuda train_dtype=bfloat16
fi
base_cfg=models/demo/lppo.json
# Paths in a run config are relative to its folder: the copy sits next to the original.
train_cfg="models/demo/.gpu-check-lppo-$$.json"
step_s="" train_peak=""
if [ "$dry" = 1 ]; then
  say "would write $train_cfg: $base_cfg with device $train_device, dtype $train_dtype"
  run "$icet_bin" bench train --config "$train_cfg" --steps "$train_steps" --json
  train_cfg=""
else
  # bench train times max_steps = --steps, and the config check wants curriculum_steps <=
  # max_steps: the copy clamps curriculum_steps (the demo's is 40) to the steps timed.
  if command -v jq >/dev/null; then
    jq --arg dev "$train_device" --arg dt "$train_dtype" --argjson steps "$train_steps" \
      '.device = $dev | .dtype = $dt | if has("curriculum_steps") and .curriculum_steps > $steps
         then .curriculum_steps = $steps else . end' "$base_cfg" >"$train_cfg"
  else
    # The config reader keeps the last of repeated keys: append the overrides.
    extra="\"device\": \"$train_device\", \"dtype\": \"$train_dtype\""
    if grep -q '"curriculum_steps"' "$base_cfg"; then extra="$extra, \"curriculum_steps\": $train_steps"; fi
    { sed '$ s/}[[:space:]]*$//' "$base_cfg"; printf ',\n  %s\n}\n' "$extra"; } >"$train_cfg"
  fi
  start_sampler "$logs/train-gpu-mem.txt"
  rc=0
  timeout -k 10 200 "$icet_bin" bench train --config "$train_cfg" --steps "$train_steps" --json \
    >"$logs/train.json" 2>"$logs/train.log" || rc=$?
  train_peak="$(stop_sampler "$logs/train-gpu-mem.txt")"
  step_s="$(json_num step_s "$logs/train.json")"
  if [ "$rc" != 0 ] || [ -z "$step_s" ]; then
    failures+=(train)
    note "L-PPO step" "FAILED (exit $rc); $logs/train.log: $(tail -n 3 "$logs/train.log" | tr '\n' ' ')"
  else
    cat "$logs/train.json"
    note "L-PPO step" "$(fmt "$step_s" 3) s ($base_cfg, batch $(json_num batch_size "$logs/train.json"), $train_device $train_dtype, mean of $train_steps; update $(fmt "$(json_num update_s_per_sample "$logs/train.json")" 4) s/sample, $(fmt "$(json_num rollouts_per_s "$logs/train.json")" 1) rollouts/s)"
    note "host RSS peak" "$(fmt "$(json_num peak_rss_mb "$logs/train.json")" 0) MB (L-PPO)"
  fi
  rm -f "$train_cfg"
  train_cfg=""
fi
if [ "$have_gpu" = 1 ]; then
  note "GPU memory peak" "decode ${decode_peak:-?} MiB, L-PPO ${train_peak:-?} MiB (nvidia-smi memory.used, whole device)"
fi

# ---- Summary -----------------------------------------------------------------------------
if [ "$dry" = 1 ]; then
  note "status" "dry run: nothing was built, tested or timed"
elif ((${#failures[@]})); then
  note "status" "FAILED: ${failures[*]}"
else
  note "status" "OK"
fi
summary() {
  echo "==== ICET GPU check ($(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' + local changes'))"
  printf '%s\n' "${summary_lines[@]}"
  echo "===="
}
if [ "$dry" = 1 ]; then
  summary
else
  summary | tee "$logs/summary.txt"
  printf '{"gpu":"%s","bandwidth_tbs":"%s","decode_tokens_per_second":"%s","decode_bytes_per_token":"%s","bound_tokens_per_second":"%s","ratio":"%s","lppo_step_s":"%s","gpu_mem_peak_decode_mib":"%s","gpu_mem_peak_lppo_mib":"%s","tests":"%s","failures":"%s"}\n' \
    "$gpu_name" "$bw" "$tps" "$bytes" "$bound" "$ratio" "$step_s" "$decode_peak" "$train_peak" "$tests_status" \
    "${failures[*]:-}" >"$logs/summary.json"
  if [ -n "${ICET_GPU_CHECK_OUT:-}" ]; then
    mkdir -p "$ICET_GPU_CHECK_OUT" && cp -r "$logs"/. "$ICET_GPU_CHECK_OUT"/
  fi
  say "logs in $logs"
fi

case " ${failures[*]:-} " in
  *" tests "*) exit 1 ;;
  "  ") exit 0 ;;
  *) exit 3 ;;
esac
