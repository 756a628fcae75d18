// End-to-end CPU training benchmark of chainrule's model: one process, one configuration.
//
// Trains GPT-2 (fp32, one rank) on random tokens and reports, as one JSON line on stdout:
//   tokens/s; ms per step split into forward (trunk, LM head, loss), backward and optimizer
//   (clipping + AdamW); model GFLOP/s with flops/token = 6 N + 12 n_layer n_embd T (N = every
//   parameter but wpe, the padded wte included: the definition bench/cpu/torch_gpt2_bench.py
//   shares); the sgemm ceiling measured in this process (after training) on the GEMM shapes of this model's step,
//   through the same GEMM entry point the model uses (cpu::gemm); MFU = model GFLOP/s / ceiling;
//   peak RSS.
// bench/cpu/run.sh runs it per configuration and environment next to the PyTorch baseline and
// prints the table. Not a test: nothing here asserts a speed.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/backend/cpu/gemm.h"
#include "core/model/gpt.h"
#include "core/optim/adamw.h"

using namespace cr;
using Clock = std::chrono::steady_clock;

namespace {

double secs(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// GFLOP/s of cpu::gemm over the GEMMs of one training step of cfg at B x T, weighted by their
// FLOPs: forward Y = X W^T, backward dX = dY W and dW += dY^T X, for qkv, attention proj, fc,
// fc proj (x n_layer) and the LM head. The best of `reps` passes.
double sgemm_ceiling(const ModelConfig& cfg, int B, int T, int reps) {
  const int N = B * T, C = cfg.n_embd, V = cfg.padded_vocab();
  struct Shape { int in, out, count; };
  const std::vector<Shape> shapes = {{C, 3 * C, cfg.n_layer}, {C, C, cfg.n_layer},
                                     {C, 4 * C, cfg.n_layer}, {4 * C, C, cfg.n_layer}, {C, V, 1}};
  size_t maxio = 0, maxw = 0;
  for (auto s : shapes) {
    maxio = std::max<size_t>(maxio, (size_t)std::max(s.in, s.out));
    if (s.out != V) maxw = std::max<size_t>(maxw, (size_t)s.in * s.out);
  }
  std::vector<float> X((size_t)N * maxio, 0.01f), Y((size_t)N * maxio, 0.02f), W(maxw, 0.001f),
      dW(maxw, 0.f);
  std::vector<float> Wv((size_t)V * C, 0.001f), dWv((size_t)V * C, 0.f);
  double best = 0;
  for (int r = 0; r < reps; r++) {
    double flops = 0, t = 0;
    for (auto s : shapes) {
      float* w = s.out == V ? Wv.data() : W.data();
      float* dw = s.out == V ? dWv.data() : dW.data();
      const auto t0 = Clock::now();
      // Each distinct shape once, weighted by how often a step runs it.
      cpu::gemm(false, true, N, s.out, s.in, 1.f, X.data(), s.in, w, s.in, 0.f, Y.data(), s.out);
      cpu::gemm(false, false, N, s.in, s.out, 1.f, Y.data(), s.out, w, s.in, 0.f, X.data(), s.in);
      cpu::gemm(true, false, s.out, s.in, N, 1.f, Y.data(), s.out, X.data(), s.in, 1.f, dw, s.in);
      t += secs(t0) * s.count;
      flops += 3 * 2.0 * N * s.in * s.out * s.count;
    }
    best = std::max(best, flops / t / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"chainrule CPU training benchmark (one configuration)"};
  std::string name = "gpt2-124m";
  int B = 8, T = 256, steps = 5, warmup = 1, reps = 3;
  app.add_option("--config", name, "gpt2-124m or char")->capture_default_str();
  app.add_option("-B,--batch", B, "Sequences per step")->capture_default_str();
  app.add_option("-T,--seq", T, "Tokens per sequence (= block_size)")->capture_default_str();
  app.add_option("--steps", steps, "Timed steps")->capture_default_str();
  app.add_option("--warmup", warmup, "Untimed steps first")->capture_default_str();
  app.add_option("--ceiling-reps", reps, "Passes of the sgemm ceiling measurement")
      ->capture_default_str();
  bool recompute = false;
  app.add_flag("--recompute", recompute, "train.recompute");
  CLI11_PARSE(app, argc, argv);

  ModelConfig cfg;
  if (name == "gpt2-124m") {
    cfg = {12, 12, 768, T, 50257};
  } else if (name == "char") {
    cfg = {6, 6, 384, T, 113};
  } else {
    fmt::print(stderr, "train_bench: --config {}: expected gpt2-124m or char\n", name);
    return 2;
  }
  GPT model(cfg);
  model.init(1337);
  model.set_recompute(recompute);
  AdamW opt(model.layout(), {0.9f, 0.95f, 1e-8f, 0.1f});
  std::vector<int32_t> tokens((size_t)B * (T + 1));
  uint64_t x = 42;
  for (auto& t : tokens) {  // a fixed pseudo-random batch, like the PyTorch side's
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    t = (int32_t)((x >> 33) % (uint64_t)cfg.vocab_size);
  }
  std::vector<int32_t> in((size_t)B * T), tgt((size_t)B * T);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      in[(size_t)b * T + t] = tokens[(size_t)b * (T + 1) + t];
      tgt[(size_t)b * T + t] = tokens[(size_t)b * (T + 1) + t + 1];
    }

  std::vector<double> fwd, bwd, optim, total;
  float loss = 0;
  for (int s = 0; s < warmup + steps; s++) {
    const auto t0 = Clock::now();
    model.zero_grad();
    loss = model.forward_backward(in.data(), tgt.data(), B, T, 1.f);
    const auto t1 = Clock::now();
    clip_grad_norm(model.grads(), model.num_params(), 1.f);
    opt.step(model.params(), model.grads(), 6e-4f);
    const double o = secs(t1), all = secs(t0);
    fmt::print(stderr, "{} B={} T={}: step {} loss {:.4f} {:.0f} ms (fwd {:.0f}, bwd {:.0f}, opt {:.0f})\n",
               name, B, T, s + 1, loss, all * 1e3, model.last_timing().forward * 1e3,
               model.last_timing().backward * 1e3, o * 1e3);
    if (s < warmup) continue;
    fwd.push_back(model.last_timing().forward);
    bwd.push_back(model.last_timing().backward);
    optim.push_back(o);
    total.push_back(all);
  }
  const double step = median(total), tok_s = B * T / step;
  const double n_params = (double)model.num_params() - (double)cfg.block_size * cfg.n_embd;
  const double flops_per_token = 6 * n_params + 12.0 * cfg.n_layer * cfg.n_embd * T;
  const double gflops = flops_per_token * tok_s / 1e9;
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);  // before the ceiling's own buffers
  const double ceiling = sgemm_ceiling(cfg, B, T, reps);
  const auto env = [](const char* k) { const char* v = std::getenv(k); return v ? std::string(v) : ""; };
  nlohmann::json j = {{"engine", "chainrule"}, {"gemm", cpu::gemm_engine()}, {"config", name},
                      {"B", B}, {"T", T}, {"threads", std::atoi(env("OMP_NUM_THREADS").c_str())},
                      {"params", (int64_t)n_params}, {"recompute", recompute},
                      {"tokens_per_s", tok_s}, {"ms_step", step * 1e3},
                      {"ms_fwd", median(fwd) * 1e3}, {"ms_bwd", median(bwd) * 1e3},
                      {"ms_opt", median(optim) * 1e3}, {"gflops", gflops},
                      {"sgemm_ceiling_gflops", ceiling}, {"mfu", gflops / ceiling},
                      {"peak_rss_mb", ru.ru_maxrss / 1024.0}, {"final_loss", loss},
                      {"env", {{"OPENBLAS_CORETYPE", env("OPENBLAS_CORETYPE")},
                               {"OMP_WAIT_POLICY", env("OMP_WAIT_POLICY")}}}};
  fmt::print("{}\n", j.dump());
  return 0;
}
