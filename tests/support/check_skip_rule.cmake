# cmake -DSKIP_REGEX=... -DWORK_DIR=... -P check_skip_rule.cmake
#
# Runs ctest on three fake Qt Test outputs under the skip rule tests/CMakeLists.txt gives every
# test, and fails unless each gets the verdict it must: a skipped function beside a failed one
# is a failure, a class skipped in initTestCase is "Skipped", a skip beside passes is a pass.
if(NOT SKIP_REGEX OR NOT WORK_DIR)
  message(FATAL_ERROR "usage: cmake -DSKIP_REGEX=<regex> -DWORK_DIR=<dir> -P check_skip_rule.cmake")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

# name, exit code, output lines (as Qt Test prints them)
set(cases
  "skip_and_fail|1|SKIP   : Fake::needsData() no data|FAIL!  : Fake::broken() 'false' returned FALSE.|Totals: 2 passed, 1 failed, 1 skipped"
  "class_skipped|0|SKIP   : Fake::initTestCase() no GPU|Totals: 1 passed, 0 failed, 1 skipped"
  "skip_and_pass|0|SKIP   : Fake::needsData() no data|PASS   : Fake::works()|Totals: 3 passed, 0 failed, 1 skipped")
set(expected_skip_and_fail "Failed")
set(expected_class_skipped "Skipped")
set(expected_skip_and_pass "Passed")

set(testfile "")
foreach(c IN LISTS cases)
  string(REPLACE "|" ";" parts "${c}")
  list(POP_FRONT parts name code)
  set(script "${WORK_DIR}/${name}.cmake")
  set(body "")
  foreach(line IN LISTS parts)
    string(APPEND body "execute_process(COMMAND \"${CMAKE_COMMAND}\" -E echo \"${line}\")\n")
  endforeach()
  if(NOT code EQUAL 0)
    string(APPEND body "message(FATAL_ERROR \"exit ${code}\")\n")
  endif()
  file(WRITE "${script}" "${body}")
  string(APPEND testfile "add_test(${name} \"${CMAKE_COMMAND}\" -P \"${script}\")\n")
  string(APPEND testfile "set_tests_properties(${name} PROPERTIES SKIP_REGULAR_EXPRESSION [==[${SKIP_REGEX}]==])\n")
endforeach()
file(WRITE "${WORK_DIR}/CTestTestfile.cmake" "${testfile}")

execute_process(COMMAND "${CMAKE_CTEST_COMMAND}" --test-dir "${WORK_DIR}" -V
                OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
set(problems "")
foreach(name skip_and_fail class_skipped skip_and_pass)
  set(want "${expected_${name}}")
  if(want STREQUAL "Passed")
    set(pattern "Test #[0-9]+: ${name} [.]+ +Passed")
  else()
    set(pattern "Test #[0-9]+: ${name} [.]+[*]+${want}")
  endif()
  if(NOT out MATCHES "${pattern}")
    string(APPEND problems "  ${name}: expected ${want}\n")
  endif()
endforeach()
if(rc EQUAL 0)
  string(APPEND problems "  ctest exited 0 although a test failed\n")
endif()
if(problems)
  message(FATAL_ERROR "skip rule [${SKIP_REGEX}] hides results:\n${problems}ctest said:\n${out}${err}")
endif()
message(STATUS "skip rule [${SKIP_REGEX}]: a failure beside a skip fails, a class skip is Skipped, a skip beside passes passes")
