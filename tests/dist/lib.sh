# Shared start of the distributed tests (sourced, not run): the cli helpers and a fresh temp dir
# (see tests/cli/lib.sh), Open MPI allowed as root and oversubscribed, one thread per rank, and
# a small char-level dataset in ./data.
# Runs compared bit for bit must use the same threads per rank: oneDNN's GEMM may round
# differently at different thread counts (AVX2-only CPUs do). Every mpirun here forwards
# OMP_NUM_THREADS=1; `chainrule launch` defaults to cores / ranks, so pass it --threads
# "$OMP_NUM_THREADS" where its results are compared with such runs.
source "$(dirname "${BASH_SOURCE[0]}")/../cli/lib.sh"

# dist_init CHAINRULE SOURCE_DIR CORPUS_LINES   (sets BIN to the binary's absolute path)
dist_init() {
  cli_init "$1" "$2"
  BIN=$CR
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
  export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
  make_text corpus.txt "$3" 5
  "$BIN" prepare --input corpus.txt --tokenizer char --out data >/dev/null
}
