// The error path of every checked CUDA, cuBLASLt and cuDNN call (cuda_check.h): the message
// names the library, its status, the failed call and the versions actually loaded, so a report
// from a GPU machine says which runtime, driver and libraries it ran with.
#include <cublasLt.h>
#if CR_HAVE_CUDNN
#include <cudnn.h>
#endif

#include <string>

#include "core/backend/cuda/cuda_check.h"

namespace cr::cuda {

namespace {

// Never throws: it runs on the error path, and with no driver the queries fail (reported as 0).
std::string query_versions() {
  int runtime = 0, driver = 0;
  if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  std::string s = "CUDA runtime " + std::to_string(runtime) + ", driver " + std::to_string(driver) +
                  ", cuBLASLt " + std::to_string(cublasLtGetVersion());
#if CR_HAVE_CUDNN
  s += ", cuDNN " + std::to_string(cudnnGetVersion());
#else
  s += ", no cuDNN";
#endif
  return s;
}

}  // namespace

const char* library_versions() {
  static const std::string versions = query_versions();  // thread-safe, once per process
  return versions.c_str();
}

void throw_library_error(const char* lib, long code, const char* status, const char* call,
                         const char* file, int line) {
  throw Error(fmt::format("{} error {} ({}) in {} [{}]", lib, code, status ? status : "?", call,
                          library_versions()),
              file, line);
}

}  // namespace cr::cuda
