# ICET Studio against the official LibTorch 2.x CUDA distribution (packaging/cuda/README.md).
#
# Loaded by the "cuda" preset as CMAKE_PROJECT_INCLUDE, i.e. right after project() in the top
# CMakeLists.txt and before its find_package(Torch), so the build needs no edit of its own:
#
#   LIBTORCH              the unpacked libtorch/ folder (cache variable, or the environment
#                         variable of that name); a pip torch package folder works too
#   ICET_LIBTORCH_CONFIG  auto (default): "official" when nvcc is found, else "link-only"
#                         official:  LibTorch's own TorchConfig.cmake. It insists on a CUDA
#                                    toolkit (nvcc, CUDAToolkit) even though ICET compiles no
#                                    CUDA code.
#                         link-only: packaging/cuda/torch-link-only/TorchConfig.cmake: the same
#                                    headers and libraries, no toolkit lookups (a driver is all
#                                    the GPU machine needs).
#   TORCH_CUDA_ARCH_LIST  official config only (LibTorch's nvcc flags for CUDA sources; ICET has
#                         none, but without a list LibTorch runs a GPU-detection program at
#                         configure time). Default "8.0;8.6;8.9;9.0" (A100, RTX 30, L4/L40/RTX 40,
#                         H100/H200).
#
# What it guards against:
# - Debian's libtorch-dev (1.13, CPU) on the same machine: Torch_DIR and Caffe2_DIR are pinned to
#   LIBTORCH, and the end-of-configure check fails when the Torch found is another one.
# - LibTorch ships its own {fmt} headers (include/fmt, a newer major than Debian's libfmt-dev 9
#   that libspdlog.so is built against): with -isystem LIBTORCH/include first in the search
#   path, spdlog's inline code would compile against LibTorch's fmt and fail to link against
#   Debian's libspdlog/libfmt. The system copies of fmt, spdlog, nlohmann and CLI are put ahead
#   of LIBTORCH/include through a folder of links in the build tree.
# - A pre-cxx11-ABI LibTorch (cannot link with Debian's Qt, OpenCV, spdlog): refused.
include_guard(GLOBAL)

if(NOT LIBTORCH AND DEFINED ENV{LIBTORCH})
  set(LIBTORCH "$ENV{LIBTORCH}")
endif()
set(LIBTORCH "${LIBTORCH}" CACHE PATH "The unpacked official LibTorch 2.x CUDA distribution (its libtorch/ folder)")
if(NOT LIBTORCH OR NOT IS_DIRECTORY "${LIBTORCH}/lib" OR NOT IS_DIRECTORY "${LIBTORCH}/include")
  message(FATAL_ERROR
    "icet cuda: LIBTORCH='${LIBTORCH}' is not an unpacked LibTorch (expected lib/ and include/ in it). "
    "Set LIBTORCH to the libtorch/ folder of libtorch-cxx11-abi-shared-with-deps-<version>+cu<NNN>.zip, "
    "or let packaging/cuda/gpu_check.sh fetch it (packaging/cuda/README.md).")
endif()
get_filename_component(ICET_LIBTORCH_ROOT "${LIBTORCH}" REALPATH)

set(_icet_official_dir "")
foreach(_d share/cmake/Torch lib/cmake/Torch "lib/${CMAKE_LIBRARY_ARCHITECTURE}/cmake/Torch")
  if(EXISTS "${ICET_LIBTORCH_ROOT}/${_d}/TorchConfig.cmake")
    set(_icet_official_dir "${ICET_LIBTORCH_ROOT}/${_d}")
    break()
  endif()
endforeach()

# The C++ ABI LibTorch was built with, from its own config (TORCH_CXX_FLAGS).
set(ICET_LIBTORCH_CXX11_ABI "")
if(_icet_official_dir)
  file(STRINGS "${_icet_official_dir}/TorchConfig.cmake" _icet_abi REGEX "_GLIBCXX_USE_CXX11_ABI=[01]")
  if(_icet_abi MATCHES "_GLIBCXX_USE_CXX11_ABI=([01])")
    set(ICET_LIBTORCH_CXX11_ABI "${CMAKE_MATCH_1}")
  endif()
endif()
if(ICET_LIBTORCH_CXX11_ABI STREQUAL "0")
  message(FATAL_ERROR
    "icet cuda: ${ICET_LIBTORCH_ROOT} is a pre-cxx11-ABI LibTorch (_GLIBCXX_USE_CXX11_ABI=0); Debian's Qt, "
    "OpenCV and spdlog use the cxx11 ABI. Use the libtorch-cxx11-abi-shared-with-deps zip.")
endif()

set(ICET_LIBTORCH_CONFIG "auto" CACHE STRING "How LibTorch is found: auto, official or link-only (packaging/cuda/libtorch.cmake)")
set_property(CACHE ICET_LIBTORCH_CONFIG PROPERTY STRINGS auto official link-only)
set(_icet_mode "${ICET_LIBTORCH_CONFIG}")
if(_icet_mode STREQUAL "auto")
  set(_icet_nvcc "")
  if(CMAKE_CUDA_COMPILER)
    set(_icet_nvcc "${CMAKE_CUDA_COMPILER}")
  elseif(DEFINED ENV{CUDACXX})
    set(_icet_nvcc "$ENV{CUDACXX}")
  else()
    find_program(ICET_NVCC nvcc HINTS "$ENV{CUDA_HOME}/bin" "$ENV{CUDA_PATH}/bin" /usr/local/cuda/bin)
    if(ICET_NVCC)
      set(_icet_nvcc "${ICET_NVCC}")
    endif()
  endif()
  # The CUDA version LibTorch was built for: "2.5.1+cu124" (the zip's build-version) or
  # cuda = '12.4' (a pip package's version.py).
  set(_icet_lt_cuda "")
  if(EXISTS "${ICET_LIBTORCH_ROOT}/build-version")
    file(STRINGS "${ICET_LIBTORCH_ROOT}/build-version" _v LIMIT_COUNT 1)
    if(_v MATCHES "\\+cu([0-9]+)([0-9])$")
      set(_icet_lt_cuda "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}")
    endif()
  elseif(EXISTS "${ICET_LIBTORCH_ROOT}/version.py")
    file(STRINGS "${ICET_LIBTORCH_ROOT}/version.py" _v REGEX "^cuda")
    if(_v MATCHES "'([0-9]+\\.[0-9]+)'")
      set(_icet_lt_cuda "${CMAKE_MATCH_1}")
    endif()
  endif()
  set(_icet_nvcc_version "")
  if(_icet_nvcc)
    execute_process(COMMAND "${_icet_nvcc}" --version OUTPUT_VARIABLE _v ERROR_QUIET)
    if(_v MATCHES "release ([0-9]+\\.[0-9]+)")
      set(_icet_nvcc_version "${CMAKE_MATCH_1}")
    endif()
  endif()
  # LibTorch's config only with the toolkit it was built against (the recipe installs it):
  # another one fails there in ways that say nothing about ICET (e.g. CUDA 12.9+ without the
  # nvToolsExt that LibTorch 2.5 links). ICET needs no toolkit at all, so otherwise link-only.
  if(_icet_nvcc AND _icet_official_dir AND _icet_lt_cuda AND _icet_nvcc_version STREQUAL _icet_lt_cuda)
    set(_icet_mode official)
    if(NOT CMAKE_CUDA_COMPILER)
      # LibTorch's cuda.cmake calls enable_language(CUDA) and FindCUDA: point both at this nvcc.
      set(CMAKE_CUDA_COMPILER "${_icet_nvcc}" CACHE FILEPATH "nvcc for LibTorch's CMake config")
      get_filename_component(_icet_cuda_root "${_icet_nvcc}" DIRECTORY)
      get_filename_component(_icet_cuda_root "${_icet_cuda_root}" DIRECTORY)
      set(CUDA_TOOLKIT_ROOT_DIR "${_icet_cuda_root}" CACHE PATH "CUDA toolkit for LibTorch's CMake config")
    endif()
  else()
    set(_icet_mode link-only)
    message(STATUS "icet cuda: link-only LibTorch config (nvcc: '${_icet_nvcc}' ${_icet_nvcc_version}; "
                   "LibTorch built for CUDA '${_icet_lt_cuda}')")
  endif()
endif()
if(NOT _icet_mode MATCHES "^(official|link-only)$")
  message(FATAL_ERROR "icet cuda: ICET_LIBTORCH_CONFIG='${ICET_LIBTORCH_CONFIG}': expected auto, official or link-only")
endif()
set(ICET_LIBTORCH_MODE "${_icet_mode}" CACHE INTERNAL "LibTorch config in use")

# A stray TORCH_INSTALL_PREFIX in the environment would make TorchConfig.cmake look elsewhere.
unset(ENV{TORCH_INSTALL_PREFIX})
list(PREPEND CMAKE_PREFIX_PATH "${ICET_LIBTORCH_ROOT}")
if(_icet_mode STREQUAL "official")
  if(NOT _icet_official_dir)
    message(FATAL_ERROR "icet cuda: no TorchConfig.cmake under ${ICET_LIBTORCH_ROOT}/share/cmake/Torch")
  endif()
  set(Torch_DIR "${_icet_official_dir}" CACHE PATH "LibTorch's CMake config" FORCE)
  get_filename_component(_icet_caffe2 "${_icet_official_dir}/../Caffe2" ABSOLUTE)
  if(EXISTS "${_icet_caffe2}/Caffe2Config.cmake")
    set(Caffe2_DIR "${_icet_caffe2}" CACHE PATH "LibTorch's Caffe2 config" FORCE)
  endif()
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(TORCH_CUDA_ARCH_LIST "8.0;8.6;8.9;9.0" CACHE STRING "CUDA architectures for LibTorch's nvcc flags")
  endif()
  # cuDNN: CAFFE2_USE_CUDNN stays unset (off). ICET calls no cuDNN API; libtorch_cuda loads the
  # cuDNN it ships at run time. Turning it on would make LibTorch's config look for cuDNN headers.
else()
  set(Torch_DIR "${CMAKE_CURRENT_LIST_DIR}/torch-link-only" CACHE PATH "ICET's link-only LibTorch config" FORCE)
endif()

# System headers ahead of LibTorch's bundled copies (see the top of this file).
set(_icet_first "${CMAKE_BINARY_DIR}/icet-include-first")
set(_icet_shadowed "")
foreach(_h fmt spdlog nlohmann CLI)
  if(NOT ICET_LIBTORCH_ROOT STREQUAL "/usr" AND IS_DIRECTORY "${ICET_LIBTORCH_ROOT}/include/${_h}"
     AND IS_DIRECTORY "/usr/include/${_h}")
    file(MAKE_DIRECTORY "${_icet_first}")
    if(NOT EXISTS "${_icet_first}/${_h}")
      file(CREATE_LINK "/usr/include/${_h}" "${_icet_first}/${_h}" SYMBOLIC)
    endif()
    list(APPEND _icet_shadowed "${_h}")
  endif()
endforeach()
if(_icet_shadowed)
  # BEFORE + SYSTEM: an -isystem ahead of LibTorch's -isystem entries, warnings still silenced.
  include_directories(BEFORE SYSTEM "${_icet_first}")
  string(REPLACE ";" ", " _icet_list "${_icet_shadowed}")
  message(STATUS "icet cuda: LibTorch's bundled ${_icet_list} headers shadowed by /usr/include (${_icet_first})")
endif()

# After the top CMakeLists.txt: the Torch found must be this LibTorch, with its CUDA libraries.
function(_icet_libtorch_check)
  if(NOT TARGET torch)
    return()  # a tree without Torch (none today)
  endif()
  get_filename_component(_dir "${Torch_DIR}" REALPATH)
  if(ICET_LIBTORCH_MODE STREQUAL "official")
    string(FIND "${_dir}/" "${ICET_LIBTORCH_ROOT}/" _at)
    if(NOT _at EQUAL 0)
      message(FATAL_ERROR "icet cuda: Torch was found in ${_dir}, not in LIBTORCH=${ICET_LIBTORCH_ROOT}. "
                          "Remove the build folder and configure again with the cuda preset.")
    endif()
    if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
      message(FATAL_ERROR "icet cuda: ${ICET_LIBTORCH_ROOT} uses the pre-cxx11 ABI (TORCH_CXX_FLAGS ${TORCH_CXX_FLAGS})")
    endif()
  endif()
  if(NOT TARGET torch_cuda AND NOT TORCH_LIBRARIES MATCHES "torch_cuda|c10_cuda" AND NOT ICET_LIBTORCH_ALLOW_CPU)
    message(FATAL_ERROR "icet cuda: ${ICET_LIBTORCH_ROOT} has no torch_cuda library: a CPU-only LibTorch? "
                        "Download a +cuNNN zip (packaging/cuda/README.md).")
  endif()
  message(STATUS "icet cuda: LibTorch ${Torch_VERSION} from ${ICET_LIBTORCH_ROOT} (${ICET_LIBTORCH_MODE} config)")
endfunction()
cmake_language(DEFER CALL _icet_libtorch_check)
