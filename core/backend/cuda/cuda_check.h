// Checked CUDA, cuBLAS(Lt) and cuDNN calls (DESIGN convention 4). One generator macro,
// CR_LIB_CHECK, makes every check: a failed call throws cr::Error (which the launcher reports
// with rank and host) whose message names the library and its version, the status, the call and
// its file:line. Kernel launches are checked with cudaGetLastError right after the launch.
#pragma once

#include <cuda_runtime.h>

#include "core/common/error.h"

namespace cr::cuda {

// "CUDA runtime 13000, driver 13000, cuBLASLt 130100, cuDNN 91900" (what is linked and loaded).
const char* library_versions();
[[noreturn]] void throw_library_error(const char* lib, long code, const char* status,
                                      const char* call, const char* file, int line);

}  // namespace cr::cuda

// ok: the success value; describe(status) -> const char*.
#define CR_LIB_CHECK(lib, expr, ok, describe)                                                  \
  do {                                                                                         \
    auto cr_status_ = (expr);                                                                  \
    if (cr_status_ != (ok)) [[unlikely]]                                                       \
      ::cr::cuda::throw_library_error(lib, (long)cr_status_, describe(cr_status_), #expr,     \
                                      __FILE__, __LINE__);                                     \
  } while (0)

#define CR_CUDA_CHECK(expr) CR_LIB_CHECK("CUDA", expr, cudaSuccess, cudaGetErrorString)
// After every kernel launch: the launch's own error (bad configuration, no kernel image for this
// GPU), named by op (a const char*, the op's name, which stands where the call would).
#define CR_CUDA_CHECK_LAUNCH(op)                                                               \
  do {                                                                                         \
    cudaError_t cr_launch_status_ = cudaGetLastError();                                        \
    if (cr_launch_status_ != cudaSuccess) [[unlikely]]                                         \
      ::cr::cuda::throw_library_error("CUDA", (long)cr_launch_status_,                         \
                                      cudaGetErrorString(cr_launch_status_),                   \
                                      op, __FILE__, __LINE__);                                 \
  } while (0)
// The library checks expand to names of the library's own header (cublasLt.h, cudnn.h), which
// the file using them includes; this header itself needs neither.
#define CR_CUBLAS_CHECK(expr) \
  CR_LIB_CHECK("cuBLASLt", expr, CUBLAS_STATUS_SUCCESS, cublasLtGetStatusString)
#define CR_CUDNN_CHECK(expr) CR_LIB_CHECK("cuDNN", expr, CUDNN_STATUS_SUCCESS, cudnnGetErrorString)
