# Link-only LibTorch config (packaging/cuda/libtorch.cmake, ICET_LIBTORCH_CONFIG=link-only).
#
# LibTorch's own TorchConfig.cmake enables the CUDA language and looks up the CUDA toolkit
# (nvcc, cudart, cuBLAS, NVTX, ...) so that extensions can compile .cu files against it. ICET
# compiles no CUDA code: it needs LibTorch's headers and its shared libraries, whose CUDA
# dependencies (cudart, cuBLAS, cuDNN, NCCL) ship inside the distribution and are found through
# their own RUNPATH. This file defines what the top CMakeLists.txt uses from find_package(Torch):
# the `torch` target, TORCH_LIBRARIES, TORCH_INCLUDE_DIRS, TORCH_CXX_FLAGS, Torch_VERSION.
#
# Input: ICET_LIBTORCH_ROOT (set by libtorch.cmake); ICET_LIBTORCH_ALLOW_CPU=ON accepts a
# LibTorch without CUDA libraries (to test this file on a CPU machine).
if(TARGET torch)
  return()
endif()
if(NOT ICET_LIBTORCH_ROOT)
  message(FATAL_ERROR "torch-link-only: load it through packaging/cuda/libtorch.cmake (ICET_LIBTORCH_ROOT unset)")
endif()
set(_lt "${ICET_LIBTORCH_ROOT}")

# libX.so as LibTorch names it (the zip: lib/libtorch.so; a Debian-style tree: lib/<arch>/).
function(_icet_torch_lib var name required)
  find_library(${var} NAMES ${name} PATHS "${_lt}/lib" "${_lt}/lib/${CMAKE_LIBRARY_ARCHITECTURE}"
               NO_DEFAULT_PATH NO_CACHE)
  if(NOT ${var})
    if(required)
      message(FATAL_ERROR "torch-link-only: lib${name}.so not found under ${_lt}/lib")
    endif()
    set(${var} "" PARENT_SCOPE)
  else()
    set(${var} "${${var}}" PARENT_SCOPE)
  endif()
endfunction()

set(_cuda_required ON)
if(ICET_LIBTORCH_ALLOW_CPU)
  set(_cuda_required OFF)
endif()
_icet_torch_lib(_c10 c10 ON)
_icet_torch_lib(_torch_cpu torch_cpu ON)
_icet_torch_lib(_torch torch ON)
_icet_torch_lib(_c10_cuda c10_cuda ${_cuda_required})
_icet_torch_lib(_torch_cuda torch_cuda ${_cuda_required})

# The C++ ABI: from the distribution's own config when present (libtorch.cmake refuses 0).
set(_abi 1)
if(ICET_LIBTORCH_CXX11_ABI STREQUAL "0")
  set(_abi 0)
endif()
set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=${_abi}")

set(TORCH_INCLUDE_DIRS "${_lt}/include" "${_lt}/include/torch/csrc/api/include")
foreach(_d ${TORCH_INCLUDE_DIRS})
  if(NOT IS_DIRECTORY "${_d}")
    message(FATAL_ERROR "torch-link-only: ${_d} missing: not a LibTorch distribution")
  endif()
endforeach()

foreach(_n c10 torch_cpu c10_cuda torch_cuda)
  if(_${_n})
    add_library(${_n} SHARED IMPORTED)
    set_target_properties(${_n} PROPERTIES IMPORTED_LOCATION "${_${_n}}")
  endif()
endforeach()

# torch: the ATen/torch API library plus its backends. Nothing in ICET calls into torch_cpu or
# torch_cuda directly, so with --as-needed (Ubuntu's default) the linker would drop them and no
# CUDA kernel would be registered at run time: they are linked with --no-as-needed, as
# LibTorch's own config does.
add_library(torch SHARED IMPORTED)
set(_links "-Wl,--no-as-needed,${_torch_cpu}" "-Wl,--as-needed")
if(_torch_cuda)
  list(APPEND _links "-Wl,--no-as-needed,${_torch_cuda}" "-Wl,--as-needed" c10_cuda torch_cuda)
endif()
list(APPEND _links torch_cpu c10)
set_target_properties(torch PROPERTIES
  IMPORTED_LOCATION "${_torch}"
  INTERFACE_INCLUDE_DIRECTORIES "${TORCH_INCLUDE_DIRS}"
  INTERFACE_COMPILE_OPTIONS "${TORCH_CXX_FLAGS}"
  INTERFACE_LINK_LIBRARIES "${_links}")
set(TORCH_LIBRARIES torch)
set(TORCH_LIBRARY "${_torch}")

# Version: the zip's build-version file ("2.5.1+cu124"), or a pip package's version.py.
set(Torch_VERSION "")
if(EXISTS "${_lt}/build-version")
  file(STRINGS "${_lt}/build-version" Torch_VERSION LIMIT_COUNT 1)
elseif(EXISTS "${_lt}/version.py")
  file(STRINGS "${_lt}/version.py" _v REGEX "^__version__")
  if(_v MATCHES "'([^']+)'")
    set(Torch_VERSION "${CMAKE_MATCH_1}")
  endif()
endif()
if(NOT Torch_VERSION)
  set(Torch_VERSION "unknown")
endif()
set(TORCH_FOUND TRUE)
set(Torch_FOUND TRUE)
