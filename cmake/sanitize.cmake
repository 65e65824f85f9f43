# GANTRAIN_SANITIZE (e.g. "address,undefined"): sanitizer flags for every C/C++ target, and a pass over
# the executables and tests once they exist (docs/testing.md). Included from the top-level CMakeLists.txt.
if(NOT GANTRAIN_SANITIZE)
  return()
endif()
if(GANTRAIN_CUDA)
  message(FATAL_ERROR "GANTRAIN_SANITIZE=${GANTRAIN_SANITIZE} instruments CPU code only: configure with -DGANTRAIN_CUDA=OFF")
endif()
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  message(FATAL_ERROR "GANTRAIN_SANITIZE needs g++ or clang++ (found ${CMAKE_CXX_COMPILER_ID})")
endif()

# -O1 -g come after the build type's flags, so they win: ASan's usual speed with usable stacks.
# -fno-sanitize-recover: undefined behaviour aborts the process (and fails its test) instead of printing and going on.
set(_gt_san_flags -fsanitize=${GANTRAIN_SANITIZE} -fno-omit-frame-pointer -O1 -g)
if(GANTRAIN_SANITIZE MATCHES "undefined")
  list(APPEND _gt_san_flags -fno-sanitize-recover=undefined)
endif()
add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${_gt_san_flags}>")
add_link_options(-fsanitize=${GANTRAIN_SANITIZE})
# Tests whose figures a sanitizer distorts (resident memory, timings) adapt their bounds and say so.
add_compile_definitions(GANTRAIN_SANITIZED=1)

# Every executable gets the sanitizers' default options and third-party leak suppressions compiled in
# (tests/sanitize/sanitizer_defaults.cpp), so they hold however it is started: ctest, a Python test,
# mpirun, sbatch or by hand; ASAN_OPTIONS, UBSAN_OPTIONS and LSAN_OPTIONS still override them flag by flag.
function(gt_sanitize_executables dir)
  get_property(_targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(_t ${_targets})
    get_target_property(_type ${_t} TYPE)
    if(_type STREQUAL "EXECUTABLE")
      target_sources(${_t} PRIVATE ${CMAKE_SOURCE_DIR}/tests/sanitize/sanitizer_defaults.cpp)
    endif()
  endforeach()
  get_property(_subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(_sub ${_subdirs})
    gt_sanitize_executables(${_sub})
  endforeach()
endfunction()
