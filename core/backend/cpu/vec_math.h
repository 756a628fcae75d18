// exp for the inner loops of the CPU ops, written so the compiler vectorises them
// (no branches, no libm calls): a loop over exp_approx runs 16 lanes at a time with AVX-512.
// exp_approx: relative error < 2e-7 (2 ulp) on [-87, 88]; below that it returns ~1e-38 (never a
// denormal or NaN), above it saturates. Results are identical on every ISA: plain IEEE
// multiplies and adds, no fused multiply-add (we build with -ffp-contract=off semantics).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace cr::cpu {

[[gnu::always_inline]] inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  // x = n ln2 + r, |r| <= ln2 / 2; exp(x) = 2^n exp(r). Adding 1.5 * 2^23 rounds to the nearest
  // integer without a branch (exact while |n| < 2^22).
  const float fn = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = (x - fn * 0.693359375f) + fn * 2.12194440e-4f;  // ln2 split in two for exactness
  // exp(r) by its Taylor series to r^7 (the truncation error is below float rounding here).
  float p = 1.98412698e-4f;
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = ((int32_t)fn + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace cr::cpu
