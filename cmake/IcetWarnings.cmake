# icet_warnings: an interface target every first-party target links privately.
add_library(icet_warnings INTERFACE)
target_compile_options(icet_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Woverloaded-virtual
  -Wimplicit-fallthrough)
if(ICET_WERROR)
  target_compile_options(icet_warnings INTERFACE -Werror)
  # GCC 12 at -O2/-O3 reports false positives from inlined libstdc++ code (std::string and
  # std::vector copies: GCC bugs 105329, 105651, 106199). Keep them visible, not fatal.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(icet_warnings INTERFACE
      -Wno-error=array-bounds -Wno-error=stringop-overflow -Wno-error=restrict)
  endif()
endif()

if(ICET_SANITIZE)
  target_compile_options(icet_warnings INTERFACE
    -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  target_link_options(icet_warnings INTERFACE -fsanitize=address,undefined)
endif()

# Qt defines shared by every target that touches Qt (STYLE.md: LibTorch has a member named
# `slots`, so Qt's keywords are off everywhere).
add_library(icet_qt_defs INTERFACE)
target_compile_definitions(icet_qt_defs INTERFACE
  QT_NO_KEYWORDS QT_NO_CAST_FROM_ASCII QT_NO_NARROWING_CONVERSIONS_IN_CONNECT)
# Executables that link Qt export none of the Qt code compiled into them: Qt 5 comes in with
# LibTorch's OpenCV and must not bind to it (cmake/qt_executable.map says more).
target_link_options(icet_qt_defs INTERFACE
  "$<$<STREQUAL:$<TARGET_PROPERTY:TYPE>,EXECUTABLE>:LINKER:--version-script=${CMAKE_CURRENT_LIST_DIR}/qt_executable.map>")
set_property(TARGET icet_qt_defs APPEND PROPERTY
  INTERFACE_LINK_DEPENDS "${CMAKE_CURRENT_LIST_DIR}/qt_executable.map")
