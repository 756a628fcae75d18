// Shared helpers of the emulated-kernel tests (tests/emu/test_emu_*.cpp): the tolerance type and
// element-wise comparison, seeded inputs, round trips through kernel storage (f32 or bf16),
// NaN-poisoned outputs and the emulator launcher. Each test file keeps its own tolerance table
// (why each bound is what it is); only the mechanics live here. Needs CR_CUDA_EMULATE.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/backend/cuda/cuda_compat.cuh"
#include "core/common/rng.h"

namespace cr::emu_test {

// |got - want| <= rel * |want| + abs, evaluated in R: float, or double where both sides sum in
// double. `constexpr Tol kX{1e-5f, 1e-6f};` deduces Tol<float>.
template <class R = float>
struct Tol {
  R rel, abs;
};

// Every element within tol (equal values pass, infinities included; NaN fails); reports the first
// few misses and their count.
template <class R>
void expect_close(const std::vector<float>& got, const std::vector<float>& want, Tol<R> tol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); i++) {
    if (got[i] == want[i]) continue;  // also -inf == -inf
    const R err = std::fabs((R)got[i] - (R)want[i]);
    if (!(err <= tol.rel * std::fabs((R)want[i]) + tol.abs)) {  // NaN fails too
      if (bad < 3) ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
      bad++;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " elements off";
}

// n values uniform in [lo, hi), from cr::Rng(seed).
inline std::vector<float> uniform(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  cr::Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = lo + (float)rng.uniform() * (hi - lo);
  return v;
}
// n values normal(0, scale), from cr::Rng(seed).
inline std::vector<float> normal(size_t n, uint64_t seed, double scale = 1.0) {
  cr::Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = (float)(rng.normal() * scale);
  return v;
}

// Storage of type T holding x (rounded for bf16), and back to float.
template <class T>
std::vector<T> to_storage(const std::vector<float>& x) {
  std::vector<T> r(x.size());
  for (size_t i = 0; i < x.size(); i++) r[i] = cr::cuda::from_f32<T>(x[i]);
  return r;
}
template <class T>
std::vector<float> to_float(const std::vector<T>& x) {
  std::vector<float> r(x.size());
  for (size_t i = 0; i < x.size(); i++) r[i] = cr::cuda::to_f32(x[i]);
  return r;
}
// x as T stores it, so the oracle runs on exactly what the kernel reads.
template <class T>
std::vector<float> stored(std::vector<float> x) {
  for (auto& v : x) v = cr::cuda::to_f32(cr::cuda::from_f32<T>(v));
  return x;
}
// n elements of NaN: an element a kernel forgets to write fails the comparison.
template <class T>
std::vector<T> poisoned(size_t n) {
  return std::vector<T>(n, cr::cuda::from_f32<T>(NAN));
}

// The default emulator launch (race checks on, blocks in order).
inline const cr::emu::Launch kLaunch{};

}  // namespace cr::emu_test
