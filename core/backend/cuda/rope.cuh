// Rotary position embedding kernels (the CUDA side of core/backend/cpu/rope.cpp): in place on
// the first n_heads heads of each of B*T rows (rows ld elements apart), Hugging Face's
// rotate-half convention, position pos0 + t for row t of each sequence.
//
// The angles follow the CPU op's fp32 recipe so f32 results agree to ~1e-6 at any position:
// inv_freq[i] = (float)(1 / theta^(2i/hs)) is computed on the host in double (rope_freqs), as the
// CPU does, and travels to the kernel by value (at most kRopeMaxHalf floats of kernel parameter
// space, no copy and no table in device memory); angle = (float)(pos) * inv_freq[i] is one float
// multiply on both sides. Only cos/sin of that float angle differ: cosf/sinf (<= 2 ulp) here,
// correctly rounded double cos/sin there.
#pragma once

#include <cmath>

#include "core/backend/cuda/cuda_compat.cuh"

namespace cr::cuda {

constexpr int kRopeMaxHalf = 256;  // head sizes up to 512 channels

// The inverse frequencies of one head, by value (a kernel parameter).
struct RopeFreqs {
  float inv_freq[kRopeMaxHalf];
};

// Host: inv_freq[i] = 1 / theta^(2i/hs) for i < hs/2, rounded exactly as cpu/rope.cpp rounds.
// Requires hs even and hs / 2 <= kRopeMaxHalf (checked by the caller).
inline RopeFreqs rope_freqs(int hs, float theta) {
  RopeFreqs f{};
  for (int i = 0; i < hs / 2; i++) {
    const float exponent = (float)(2 * i) / (float)hs;
    f.inv_freq[i] = 1.f / (float)std::pow((double)theta, (double)exponent);
  }
  return f;
}

// One thread per rotated pair (row, head, i): pairs = B*T * n_heads * half, row-major in that
// order so neighbouring threads touch neighbouring channels. sign = +1 forward, -1 backward (the
// transposed rotation).
template <class T>
__global__ void rope_kernel(T* x, long long pairs, int T_, int ld, int n_heads, int half,
                            RopeFreqs freqs, int pos0, float sign) {
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= pairs) return;  // no barrier in this kernel: the tail may leave early
  const int per_row = n_heads * half;
  const long long row = idx / per_row;
  const int rem = (int)(idx - row * per_row);
  const int h = rem / half, i = rem - h * half;
  const int t = (int)(row % T_);
  const float a = (float)(pos0 + t) * freqs.inv_freq[i];
  const float c = cosf(a), s = sign * sinf(a);
  T* v = x + row * ld + (long long)h * (2 * half);
  const float x0 = to_f32(v[i]), x1 = to_f32(v[i + half]);
  v[i] = from_f32<T>(x0 * c - x1 * s);
  v[i + half] = from_f32<T>(x1 * c + x0 * s);
}

// x [B*T rows, ld apart], n_heads * hs <= ld, hs even, hs / 2 <= kRopeMaxHalf; sign as above.
template <class L, class T>
void run_rope(const L& launch, T* x, int B, int T_, int ld, int n_heads, int hs, float theta,
              int pos0, float sign) {
  const int half = hs / 2;
  const long long pairs = (long long)B * T_ * n_heads * half;
  constexpr int kBlock = 256;
  launch(dim3((unsigned)ceil_div(pairs, kBlock)), dim3(kBlock), rope_kernel<T>, x, pairs, T_, ld,
         n_heads, half, rope_freqs(hs, theta), pos0, sign);
}

}  // namespace cr::cuda
