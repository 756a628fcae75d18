// Our own CPU kernels are bit-deterministic for any thread count (README, "Tests" and
// "Performance"): static schedules, reductions split over channels or rows but never reordered
// by the number of threads. This test holds them to it: every cpu:: op of core/backend/cpu/ops.h
// runs at 1, 2, 3 and 5 OpenMP threads on ragged shapes (not multiples of the vector width, the
// channel blocks of 32/64, the attention blocks of 64 queries x 256 keys, nor of any thread
// count) and every output must equal the 1-thread output bit for bit.
//
// Not covered: the GEMM engine (oneDNN / OpenBLAS, core/backend/cpu/gemm.cpp), whose rounding
// may depend on the thread count on some CPUs (AVX2-only ones); the README says so. matmul_*
// are checked only in their own code (bias add, bias gradient), with a zero weight that makes
// the GEMM's contribution exactly +0.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "tests/unit/test_util.h"

namespace cr {
namespace {

using testing::randn;
using Outputs = std::vector<std::vector<float>>;

// Runs op (which must build its inputs afresh each call and return every output it writes) at
// each thread count; all must equal the 1-thread run bitwise. Reports the first differing
// element of each output.
void expect_thread_invariant(const std::string& name, const std::function<Outputs()>& op) {
  const int saved = omp_get_max_threads();
  const int saved_dynamic = omp_get_dynamic();
  omp_set_dynamic(0);  // exactly the requested number of threads
  omp_set_num_threads(1);
  const Outputs want = op();
  for (int threads : {2, 3, 5}) {
    omp_set_num_threads(threads);
    int team = 0;  // the ops' parallel regions really get this many threads
#pragma omp parallel
#pragma omp single
    team = omp_get_num_threads();
    ASSERT_EQ(team, threads);
    const Outputs got = op();
    ASSERT_EQ(got.size(), want.size()) << name;
    for (size_t k = 0; k < want.size(); k++) {
      ASSERT_EQ(got[k].size(), want[k].size()) << name << " output " << k;
      if (std::memcmp(got[k].data(), want[k].data(), want[k].size() * sizeof(float)) == 0) continue;
      size_t i = 0;
      while (std::memcmp(&got[k][i], &want[k][i], sizeof(float)) == 0) i++;
      ADD_FAILURE() << name << ": output " << k << " differs at " << threads
                    << " threads from 1 thread, first at element " << i << " of " << want[k].size()
                    << ": " << got[k][i] << " vs " << want[k][i];
    }
  }
  omp_set_num_threads(saved);
  omp_set_dynamic(saved_dynamic);
}

std::vector<float> positive(size_t n, uint64_t seed) {
  auto v = randn(n, seed);
  for (auto& x : v) x = std::fabs(x) + 0.1f;
  return v;
}


// Ragged sizes shared by the cases below.
constexpr int kB = 3, kT = 37, kN = kB * kT, kC = 133;

TEST(ThreadInvariance, Embedding) {
  const int V = 101;
  const auto tokens = testing::random_tokens(kN, V, 1);
  const auto wte = randn((size_t)V * kC, 2), wpe = randn((size_t)kT * kC, 3);
  const auto dout = randn((size_t)kN * kC, 4);
  // Whole vocabulary, and a vocabulary-parallel shard [40, 40 + 33) with no position table.
  for (auto [start, count, with_wpe] : {std::tuple{0, V, true}, std::tuple{40, 33, false}}) {
    const std::string tag = " vocab [" + std::to_string(start) + ", +" + std::to_string(count) + ")";
    expect_thread_invariant("embedding_forward" + tag, [&] {
      std::vector<float> out((size_t)kN * kC);
      cpu::embedding_forward(out.data(), tokens.data(), wte.data() + (size_t)start * kC,
                             with_wpe ? wpe.data() : nullptr, kB, kT, kC, start, count);
      return Outputs{out};
    });
    expect_thread_invariant("embedding_backward" + tag, [&] {
      auto dwte = randn((size_t)count * kC, 5), dwpe = randn((size_t)kT * kC, 6);
      cpu::embedding_backward(dwte.data(), with_wpe ? dwpe.data() : nullptr, dout.data(),
                              tokens.data(), kB, kT, kC, start, count);
      return Outputs{dwte, dwpe};
    });
  }
}

TEST(ThreadInvariance, LayerNorm) {
  const auto inp = randn((size_t)kN * kC, 10), a = randn((size_t)kN * kC, 11);
  const auto w = randn(kC, 12), bias = randn(kC, 13), dout = randn((size_t)kN * kC, 14);
  expect_thread_invariant("layernorm_forward", [&] {
    std::vector<float> out((size_t)kN * kC), mean(kN), rstd(kN);
    cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), bias.data(),
                           kN, kC, 1e-5f);
    std::vector<float> again((size_t)kN * kC);
    cpu::layernorm_apply(again.data(), inp.data(), mean.data(), rstd.data(), w.data(), bias.data(),
                         kN, kC);
    return Outputs{out, mean, rstd, again};
  });
  expect_thread_invariant("residual_layernorm_forward", [&] {
    std::vector<float> x((size_t)kN * kC), out((size_t)kN * kC), mean(kN), rstd(kN);
    cpu::residual_layernorm_forward(x.data(), out.data(), mean.data(), rstd.data(), a.data(),
                                    inp.data(), w.data(), bias.data(), kN, kC, 1e-5f);
    return Outputs{x, out, mean, rstd};
  });
  expect_thread_invariant("layernorm_backward", [&] {
    std::vector<float> out((size_t)kN * kC), mean(kN), rstd(kN);
    cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), bias.data(),
                           kN, kC, 1e-5f);
    auto dinp = randn((size_t)kN * kC, 15), dw = randn(kC, 16), db = randn(kC, 17);
    cpu::layernorm_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(),
                            mean.data(), rstd.data(), kN, kC);
    return Outputs{dinp, dw, db};
  });
}

TEST(ThreadInvariance, RmsNorm) {
  const auto inp = randn((size_t)kN * kC, 20), a = randn((size_t)kN * kC, 21);
  const auto w = randn(kC, 22), dout = randn((size_t)kN * kC, 23);
  expect_thread_invariant("rmsnorm_forward", [&] {
    std::vector<float> out((size_t)kN * kC), rstd(kN), again((size_t)kN * kC);
    cpu::rmsnorm_forward(out.data(), rstd.data(), inp.data(), w.data(), kN, kC, 1e-6f);
    cpu::rmsnorm_apply(again.data(), inp.data(), rstd.data(), w.data(), kN, kC);
    return Outputs{out, rstd, again};
  });
  expect_thread_invariant("residual_rmsnorm_forward", [&] {
    std::vector<float> x((size_t)kN * kC), out((size_t)kN * kC), rstd(kN);
    cpu::residual_rmsnorm_forward(x.data(), out.data(), rstd.data(), a.data(), inp.data(), w.data(),
                                  kN, kC, 1e-6f);
    return Outputs{x, out, rstd};
  });
  expect_thread_invariant("rmsnorm_backward", [&] {
    std::vector<float> out((size_t)kN * kC), rstd(kN);
    cpu::rmsnorm_forward(out.data(), rstd.data(), inp.data(), w.data(), kN, kC, 1e-6f);
    auto dinp = randn((size_t)kN * kC, 24), dw = randn(kC, 25);
    cpu::rmsnorm_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), rstd.data(),
                          kN, kC);
    return Outputs{dinp, dw};
  });
}

// matmul's own code: the bias add (forward) and the bias gradient (backward). A zero weight and
// positive inputs make every GEMM product +0, so the GEMM adds exactly nothing.
TEST(ThreadInvariance, MatmulBias) {
  const int C = 19, OC = 141, ldo = OC + 7;
  const auto inp = positive((size_t)kN * C, 30), bias = randn(OC, 31);
  const std::vector<float> zero_w((size_t)OC * C, 0.f);
  expect_thread_invariant("matmul_forward (bias)", [&] {
    std::vector<float> out((size_t)kN * ldo, 0.f);
    cpu::matmul_forward(out.data(), inp.data(), zero_w.data(), bias.data(), kN, C, OC, ldo);
    return Outputs{out};
  });
  const auto dout = randn((size_t)kN * ldo, 32);
  expect_thread_invariant("matmul_backward (dbias)", [&] {
    auto dbias = randn(OC, 33);
    std::vector<float> dw((size_t)OC * C, 0.f);
    cpu::matmul_backward(nullptr, dw.data(), dbias.data(), dout.data(), zero_w.data(), zero_w.data(),
                         kN, C, OC, ldo);
    return Outputs{dbias};
  });
}

TEST(ThreadInvariance, Attention) {
  // (B, T, H, Hkv, hs): several query blocks of 64 and key blocks of 256 (T = 300), grouped
  // heads (H / Hkv = 3), multi-head, and a T below one block.
  struct Shape {
    int B, T, H, Hkv, hs;
  };
  for (const Shape s : {Shape{2, 300, 3, 1, 20}, Shape{3, 77, 4, 4, 12}, Shape{1, 13, 6, 2, 8}}) {
    const std::string tag = " B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) +
                            " H=" + std::to_string(s.H) + " Hkv=" + std::to_string(s.Hkv) +
                            " hs=" + std::to_string(s.hs);
    const int ld = (s.H + 2 * s.Hkv) * s.hs, C = s.H * s.hs;
    const auto qkv = randn((size_t)s.B * s.T * ld, 40), dout = randn((size_t)s.B * s.T * C, 41);
    auto forward = [&] {
      std::vector<float> out((size_t)s.B * s.T * C), lse((size_t)s.B * s.H * s.T);
      cpu::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, s.Hkv, s.hs);
      return Outputs{out, lse};
    };
    expect_thread_invariant("attention_forward" + tag, forward);
    expect_thread_invariant("attention_backward" + tag, [&] {
      const Outputs f = forward();
      std::vector<float> dqkv((size_t)s.B * s.T * ld, 7.f);
      cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), f[0].data(), f[1].data(), s.B,
                              s.T, s.H, s.Hkv, s.hs);
      return Outputs{dqkv};
    });
    expect_thread_invariant("attention_decode" + tag, [&] {
      const int len = s.T;
      const auto q = randn(C, 42), kc = randn((size_t)len * s.Hkv * s.hs, 43),
                 vc = randn((size_t)len * s.Hkv * s.hs, 44);
      std::vector<float> out(C);
      cpu::attention_decode(out.data(), q.data(), kc.data(), vc.data(), len, s.H, s.Hkv, s.hs);
      return Outputs{out};
    });
  }
}

TEST(ThreadInvariance, Rope) {
  const int H = 5, Hkv = 1, hs = 18, ld = (H + 2 * Hkv) * hs;
  const auto x = randn((size_t)kN * ld, 50);
  for (const bool backward : {false, true}) {
    expect_thread_invariant(backward ? "rope_backward" : "rope_forward", [&] {
      auto y = x;  // q and k heads rotated, v left alone
      if (backward)
        cpu::rope_backward(y.data(), kB, kT, ld, H + Hkv, hs, 10000.f, 3);
      else
        cpu::rope_forward(y.data(), kB, kT, ld, H + Hkv, hs, 500000.f, 3);
      return Outputs{y};
    });
  }
}

TEST(ThreadInvariance, SwiGluGeluResidual) {
  const int F = 67;
  const auto inp = randn((size_t)kN * 2 * F, 60), dout = randn((size_t)kN * F, 61);
  expect_thread_invariant("swiglu_forward", [&] {
    std::vector<float> out((size_t)kN * F);
    cpu::swiglu_forward(out.data(), inp.data(), kN, F);
    return Outputs{out};
  });
  expect_thread_invariant("swiglu_backward", [&] {
    std::vector<float> dinp((size_t)kN * 2 * F);
    cpu::swiglu_backward(dinp.data(), inp.data(), dout.data(), kN, F);
    return Outputs{dinp};
  });
  const size_t n = 100003;  // not a multiple of 16, nor of the thread counts
  const auto x = randn(n, 62, 3.f), d = randn(n, 63), y = randn(n, 64);
  expect_thread_invariant("gelu_forward", [&] {
    std::vector<float> out(n);
    cpu::gelu_forward(out.data(), x.data(), n);
    return Outputs{out};
  });
  expect_thread_invariant("gelu_backward", [&] {
    std::vector<float> dinp(n);
    cpu::gelu_backward(dinp.data(), x.data(), d.data(), n);
    return Outputs{dinp};
  });
  expect_thread_invariant("residual_forward", [&] {
    std::vector<float> out(n);
    cpu::residual_forward(out.data(), x.data(), y.data(), n);
    return Outputs{out};
  });
}

TEST(ThreadInvariance, CrossEntropy) {
  const int V = 1001, Vp = 1024;
  const auto logits = randn((size_t)kN * Vp, 70, 4.f);
  const auto targets = testing::random_tokens(kN, V, 71);
  expect_thread_invariant("crossentropy_forward_backward", [&] {
    std::vector<float> losses(kN), dlogits((size_t)kN * Vp);
    cpu::crossentropy_forward_backward(losses.data(), dlogits.data(), logits.data(),
                                       targets.data(), kN, V, Vp, 0.37f);
    auto inplace = logits;  // dlogits aliasing the logits
    std::vector<float> losses2(kN);
    cpu::crossentropy_forward_backward(losses2.data(), inplace.data(), inplace.data(),
                                       targets.data(), kN, V, Vp, 0.37f);
    return Outputs{losses, dlogits, losses2, inplace};
  });
  // A vocabulary-parallel shard: columns [v0, v0 + Vl) of which n_valid are real tokens.
  const int v0 = 768, Vl = 256, n_valid = V - v0;
  const auto shard = randn((size_t)kN * Vl, 72, 4.f);
  expect_thread_invariant("crossentropy shard pieces", [&] {
    std::vector<float> row_max(kN), sums(2 * kN), dl((size_t)kN * Vl);
    cpu::crossentropy_row_max(row_max.data(), shard.data(), kN, Vl, n_valid);
    cpu::crossentropy_row_sums(sums.data(), shard.data(), row_max.data(), targets.data(), kN, Vl,
                               v0, n_valid);
    cpu::crossentropy_backward(dl.data(), shard.data(), row_max.data(), sums.data(),
                               targets.data(), kN, Vl, v0, n_valid, 0.5f);
    return Outputs{row_max, sums, dl};
  });
}

TEST(ThreadInvariance, AdamWAndNorms) {
  const size_t n = 50021;
  const auto g = randn(n, 80);
  expect_thread_invariant("adamw_step", [&] {
    auto p = randn(n, 81), m = randn(n, 82, 0.1f), v = positive(n, 83);
    cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7);
    return Outputs{p, m, v};
  });
  expect_thread_invariant("adamw_step_segments", [&] {
    auto p = randn(n, 84), m = randn(n, 85, 0.1f), v = positive(n, 86);
    const cpu::AdamWSegment segs[] = {{0, 17, 0.1f}, {17, 30000, 0.f}, {30017, 3, 0.1f},
                                      {30020, n - 30020 - 5, 0.05f}};  // the last 5 untouched
    cpu::adamw_step_segments(p.data(), g.data(), m.data(), v.data(), segs, 4, 3e-4f, 0.9f, 0.95f,
                             1e-8f, 3);
    return Outputs{p, m, v};
  });
  expect_thread_invariant("sum_squares, scale", [&] {
    const double ss = cpu::sum_squares(g.data(), n);
    std::vector<float> bits(2);
    std::memcpy(bits.data(), &ss, sizeof(double));
    auto x = g;
    cpu::scale(x.data(), n, 0.731f);
    return Outputs{bits, x};
  });
}

}  // namespace
}  // namespace cr
