// bfloat16 on the host: the top 16 bits of an IEEE fp32 (8 exponent bits, 7 mantissa bits).
// float -> bf16 rounds to nearest, ties to even, as CUDA's __float2bfloat16 does; NaN stays a
// (quiet) NaN. bf16 -> float is exact.
#pragma once

#include <cstdint>
#include <cstring>

namespace cr {

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);  // NaN: keep quiet
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// The float nearest to f that bf16 can hold (what a bf16 store and load give back).
inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

}  // namespace cr
