#include "core/model/generate.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "core/common/error.h"

namespace cr {

int32_t sample_token(const float* logits, int V, float temperature, int top_k, Rng& rng) {
  if (temperature <= 0.f) return (int32_t)(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  int k = (top_k > 0 && top_k < V) ? top_k : V;
  if (k < V)
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int a, int b) { return logits[a] > logits[b]; });
  double mx = -INFINITY;
  for (int i = 0; i < k; i++) mx = std::max(mx, (double)logits[idx[i]]);
  std::vector<double> p(k);
  double sum = 0;
  for (int i = 0; i < k; i++) sum += p[i] = std::exp((logits[idx[i]] - mx) / temperature);
  double u = rng.uniform() * sum;
  for (int i = 0; i < k; i++) {
    u -= p[i];
    if (u <= 0) return idx[i];
  }
  return idx[k - 1];
}

}  // namespace cr
