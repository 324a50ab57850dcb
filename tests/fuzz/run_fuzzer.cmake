# Runs one libFuzzer harness for a bounded time over a copy of its corpus.
#
#   cmake -DFUZZER=bin -DSEEDS=dir -DCORPUS=dir -DARTIFACTS=dir [-DDICT=file]
#         -DSECONDS=n [-DSEED=n] -P run_fuzzer.cmake
#
# SEED fixes libFuzzer's random seed so a run can be repeated (CI uses 1, so
# a red run is the same run anywhere); 0 or unset picks a new one each time.
#
# SEEDS (the committed corpus) is copied into CORPUS, which libFuzzer reads
# and adds to; SEEDS itself is never written. Fails, listing the crashing
# inputs left in ARTIFACTS, when the harness crashes, leaks, times out (10 s
# per input) or exceeds 2 GiB.
foreach(v FUZZER SEEDS CORPUS ARTIFACTS SECONDS)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_fuzzer.cmake: -D${v}= is required")
  endif()
endforeach()

file(REMOVE_RECURSE "${ARTIFACTS}")
file(MAKE_DIRECTORY "${CORPUS}" "${ARTIFACTS}")
file(GLOB seeds "${SEEDS}/*")
if(NOT seeds)
  message(FATAL_ERROR "no seed inputs in ${SEEDS}")
endif()
file(COPY ${seeds} DESTINATION "${CORPUS}")

set(args -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
         -artifact_prefix=${ARTIFACTS}/)
if(SEED)
  list(APPEND args -seed=${SEED})
endif()
if(DICT AND EXISTS "${DICT}")
  list(APPEND args -dict=${DICT})
endif()
message(STATUS "${FUZZER} ${args} ${CORPUS}")
execute_process(COMMAND "${FUZZER}" ${args} "${CORPUS}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  file(GLOB found "${ARTIFACTS}/*")
  string(REPLACE ";" "\n  " found "${found}")
  message(FATAL_ERROR "${FUZZER} failed (${rc}). Inputs that fail:\n  ${found}\n"
                      "Reproduce with `${FUZZER} FILE'; once fixed, add FILE to ${SEEDS}/.")
endif()
