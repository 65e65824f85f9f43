# Runs a GPU test binary with GANTRAIN_EXPECT_GPU=1 and no visible device (CUDA_VISIBLE_DEVICES empty): it must fail and print the CUDA error, never skip.
# Usage: cmake -DEXE=<test binary> -DFILTER=<gtest filter> -P check_expect_gpu.cmake
# An empty CUDA_VISIBLE_DEVICES hides every GPU, so this holds on a GPU machine as on one without.
execute_process(COMMAND ${CMAKE_COMMAND} -E env GANTRAIN_EXPECT_GPU=1 CUDA_VISIBLE_DEVICES= ${EXE} --gtest_filter=${FILTER}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
set(all "${out}${err}")
message("${all}")
if(rc EQUAL 0)
  message(FATAL_ERROR "${EXE} exited 0 with GANTRAIN_EXPECT_GPU=1 and no visible GPU: a missing device passed")
endif()
if(NOT all MATCHES "GANTRAIN_EXPECT_GPU is set, but there is no usable CUDA device: cudaError[A-Za-z]+: ")
  message(FATAL_ERROR "${EXE} failed (exit ${rc}) without naming the CUDA error of the missing device")
endif()
if(all MATCHES "\\[  SKIPPED \\]")
  message(FATAL_ERROR "${EXE} skipped a test although a GPU is expected")
endif()
if(NOT all MATCHES "\\[  FAILED  \\]")
  message(FATAL_ERROR "${EXE} did not report a failed test")
endif()
message(STATUS "failed as it must, naming the CUDA error (exit ${rc})")
