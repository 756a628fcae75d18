// The NCCL entry points of nccl_api.h in a build without NCCL (no CUDA, or no nccl.h/libnccl
// found): there is no NCCL API, so every group uses MPI. nccl.cmake compiles this file or
// nccl_cuda.cpp, never both.
#include "parallel/comm/nccl_api.h"

namespace cr {

std::shared_ptr<NcclApi> make_nccl_api() { return nullptr; }
std::string nccl_build_version() { return ""; }

}  // namespace cr
