// Residual stream add: x_{l+1} = x_l + f(x_l). Its backward is the identity, handled in place
// by the model's backward pass.
#include "core/backend/cpu/ops.h"

namespace cr::cpu {

void residual_forward(float* out, const float* a, const float* b, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

}  // namespace cr::cpu
