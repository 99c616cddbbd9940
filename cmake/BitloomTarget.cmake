# Shared settings for Bitloom's own targets: warnings (as errors unless BITLOOM_WERROR is OFF).
function(bitloom_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wno-missing-field-initializers>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${BITLOOM_WERROR}>>:-Werror>
    $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${BITLOOM_WERROR}>>:-Werror=all-warnings>)
endfunction()

# bitloom_library(name SOURCES ... DEPS ...): one library with PUBLIC include/ and PRIVATE src/.
function(bitloom_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(bitloom_${name} ${ARG_SOURCES})
  add_library(bitloom::${name} ALIAS bitloom_${name})
  target_include_directories(bitloom_${name}
    PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(bitloom_${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  bitloom_warnings(bitloom_${name})
endfunction()

# bitloom_test(name SOURCES ... DEPS ... [LABELS ...]): one GoogleTest binary registered with CTest.
# Tests that need the real fixture models read BITLOOM_MODEL_CACHE and skip with a message when the
# models are absent. Tests that need a GPU skip when none is present.
function(bitloom_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  bitloom_warnings(${name})
  target_compile_definitions(${name} PRIVATE
    BITLOOM_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    BITLOOM_BINARY_DIR="${PROJECT_BINARY_DIR}")
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT 900)
  if(ARG_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
endfunction()
