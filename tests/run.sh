#!/usr/bin/env bash
# The test command: install what is missing, build, run the whole suite with ctest. Then the
# sanitizer stage: an AddressSanitizer + UndefinedBehaviorSanitizer build (CR_SANITIZE=ON) in
# build-asan/, running the unit and cli tests (SANITIZE=0 skips it). Arguments go to the first
# ctest. Exits non-zero when either stage fails; both run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install_deps.sh
# Without a GPU the CUDA backend can only be compiled, not run: one architecture (sm_90) proves
# that in half the device-compile time. With a GPU, deploy/build.sh's default (80;90).
if [[ -z ${CMAKE_CUDA_ARCHITECTURES:-} ]] && ! nvidia-smi -L >/dev/null 2>&1; then
  bash deploy/build.sh -DCMAKE_CUDA_ARCHITECTURES=90
else
  bash deploy/build.sh
fi
rc=0
ctest --test-dir build --output-on-failure -j2 "$@" || rc=$?

if [[ ${SANITIZE:-1} != 0 ]]; then
  start=$SECONDS
  # -O1 -g0: a fraction of the compile time of -O2 -g; asserts on. Reports name functions (the
  # symbol table); for file:line, rebuild build-asan with -g1 by hand.
  cmake -S . -B build-asan -DCR_SANITIZE=ON -DCR_ENABLE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g0" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g0" >/dev/null
  cmake --build build-asan -j"$(nproc)" --target chainrule cr_unit_tests cr_emu_tests
  # detect_leaks=0: Open MPI (and libgomp) keep allocations until exit, which LeakSanitizer
  # would report from every rank. Left out here, run in the main suite: the finite-difference
  # GradCheck.* and GPT.BackwardMatchesFiniteDifferencesPerTensor (90 s under ASan; numerical
  # checks, and ThreadInvariance.* runs every CPU op forward and backward on ragged shapes under
  # ASan already), and cli.eval_signal (29 s; signal timing during a long evaluation, whose code
  # cli.ragged_eval and cli.score_eval run under ASan); gpu.ops_harness (the GPU tests' own
  # harness checked on the CPU: test code, not the product's, so test_gpu_ops is not built here).
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j2 -L 'unit|cli' \
    -E '^(GradCheck\.|GPT\.BackwardMatchesFiniteDifferencesPerTensor$|cli\.eval_signal$|gpu\.ops_harness$)' || rc=$?
  echo "sanitizer stage (build + unit and cli tests): $((SECONDS - start)) s"
fi
exit $rc
