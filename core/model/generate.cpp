#include "core/model/generate.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "core/common/error.h"

namespace cr {

Generator::Generator(const GPT& model)
    : model_(model),
      w_(bind_weights(model.config(), model.layout(), const_cast<float*>(model.params()))) {
  const auto& c = model.config();
  CR_CHECK(model.tp_size() == 1, "generation runs on a whole (tp 1) model");
  const size_t C = c.n_embd;
  kcache_.resize((size_t)c.n_layer * c.block_size * C);
  vcache_.resize((size_t)c.n_layer * c.block_size * C);
  x_.resize(C), ln_.resize(C), qkv_.resize(3 * C), atty_.resize(C), proj_.resize(C);
  fch_.resize(4 * C), fch_gelu_.resize(4 * C), logits_.resize(c.padded_vocab());
  mean_.resize(1), rstd_.resize(1);
}

const float* Generator::step(int32_t token) {
  const auto& c = model_.config();
  const int C = c.n_embd;
  CR_CHECK(pos_ < c.block_size, "context full: {} tokens (model.block_size)", c.block_size);
  CR_CHECK(token >= 0 && token < c.vocab_size, "token {} outside vocabulary", token);
  cpu::embedding_forward(x_.data(), &token, w_.wte, w_.wpe + (size_t)pos_ * C, 1, 1, C);
  for (int l = 0; l < c.n_layer; l++) {
    const LayerWeights& w = w_.layers[l];
    float* kc = kcache_.data() + (size_t)l * c.block_size * C;
    float* vc = vcache_.data() + (size_t)l * c.block_size * C;
    cpu::layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x_.data(), w.ln1w, w.ln1b, 1,
                           C, c.ln_eps());
    cpu::matmul_forward(qkv_.data(), ln_.data(), w.qkvw, w.qkvb, 1, C, 3 * C);
    std::memcpy(kc + (size_t)pos_ * C, qkv_.data() + C, C * sizeof(float));
    std::memcpy(vc + (size_t)pos_ * C, qkv_.data() + 2 * C, C * sizeof(float));
    cpu::attention_decode(atty_.data(), qkv_.data(), kc, vc, pos_ + 1, C, c.n_head);
    cpu::matmul_forward(proj_.data(), atty_.data(), w.attprojw, w.attprojb, 1, C, C);
    cpu::residual_forward(x_.data(), x_.data(), proj_.data(), C);
    cpu::layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x_.data(), w.ln2w, w.ln2b, 1,
                           C, c.ln_eps());
    cpu::matmul_forward(fch_.data(), ln_.data(), w.fcw, w.fcb, 1, C, 4 * C);
    cpu::gelu_forward(fch_gelu_.data(), fch_.data(), 4 * C);
    cpu::matmul_forward(proj_.data(), fch_gelu_.data(), w.fcprojw, w.fcprojb, 1, 4 * C, C);
    cpu::residual_forward(x_.data(), x_.data(), proj_.data(), C);
  }
  cpu::layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x_.data(), w_.lnfw, w_.lnfb, 1,
                         C, c.ln_eps());
  cpu::matmul_forward(logits_.data(), ln_.data(), w_.wte, nullptr, 1, C, c.padded_vocab());
  pos_++;
  return logits_.data();
}

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
