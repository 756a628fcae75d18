// The CUDA entry points of core/backend/backend.h in a build without the CUDA backend (no nvcc,
// or CR_ENABLE_CUDA=OFF): no GPU is ever available. CMake compiles this file or
// core/backend/cuda/cuda_backend.cu, never both.
#include "core/backend/backend.h"

namespace cr {

bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
Backend& cuda_backend(int) {
  CR_INPUT_ERROR(
      "train.device: cuda: this chainrule was built without the CUDA backend (no nvcc found at "
      "configure time); rebuild on a machine with the CUDA toolkit, or use train.device: cpu");
}

}  // namespace cr
