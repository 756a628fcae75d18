// The range coder (core/io/range_coder.h): random symbol streams under random and extreme
// distributions decode to themselves, the coded size is the information content to within the
// coder's stated overhead, and carries propagate through runs of 0xFF bytes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "core/io/range_coder.h"

namespace cr {
namespace {

constexpr uint32_t kTotal = 1u << RangeEncoder::kMaxTotalBits;

// Frequencies totalling kTotal, every one >= 1; `skew` > 0 concentrates the mass (a confident
// model), with many symbols left at frequency 1.
std::vector<uint32_t> random_freqs(std::mt19937_64& rng, int n, double skew) {
  std::vector<double> w(n);
  std::exponential_distribution<double> e(1.0);
  double sum = 0;
  for (double& x : w) sum += (x = std::pow(e(rng), 1.0 + skew));
  std::vector<uint32_t> f(n);
  uint64_t used = 0;
  for (int i = 0; i < n; i++) used += (f[i] = 1 + (uint32_t)(w[i] / sum * (kTotal - n)));
  f[0] += (uint32_t)(kTotal - used);
  return f;
}

struct Stream {
  std::vector<std::vector<uint32_t>> freqs;  // one distribution per position
  std::vector<int> symbols;
  double info_bits = 0;  // sum of -log2(f / total)
};

Stream random_stream(uint64_t seed, int n_symbols, int alphabet, double skew) {
  std::mt19937_64 rng(seed);
  Stream s;
  for (int i = 0; i < n_symbols; i++) {
    if (i % 50 == 0) s.freqs.push_back(random_freqs(rng, alphabet, skew));
    else s.freqs.push_back(s.freqs.back());
    const std::vector<uint32_t>& f = s.freqs.back();
    // Draw from the distribution itself, as a model's data would be.
    std::discrete_distribution<int> d(f.begin(), f.end());
    const int sym = d(rng);
    s.symbols.push_back(sym);
    s.info_bits -= std::log2((double)f[sym] / kTotal);
  }
  return s;
}

std::vector<uint8_t> encode(const Stream& s) {
  RangeEncoder enc;
  for (size_t i = 0; i < s.symbols.size(); i++) {
    const std::vector<uint32_t>& f = s.freqs[i];
    uint64_t cum = 0;
    for (int k = 0; k < s.symbols[i]; k++) cum += f[k];
    enc.encode((uint32_t)cum, f[s.symbols[i]], kTotal);
  }
  return enc.finish();
}

std::vector<int> decode(const Stream& s, const std::vector<uint8_t>& bytes) {
  RangeDecoder dec(bytes.data(), bytes.size());
  std::vector<int> out;
  for (size_t i = 0; i < s.symbols.size(); i++) {
    const std::vector<uint32_t>& f = s.freqs[i];
    const uint32_t slot = dec.slot(kTotal);
    uint64_t cum = 0;
    int sym = 0;
    while (cum + f[sym] <= slot) cum += f[sym++];
    dec.consume((uint32_t)cum, f[sym]);
    out.push_back(sym);
  }
  return out;
}

TEST(RangeCoder, RoundTripsAndCostsTheInformationContent) {
  // (alphabet, skew, symbols): a large vocabulary costs O(V) a symbol here, so fewer of them.
  for (auto [alphabet, skew, n] : {std::tuple{2, 0.0, 20000}, {257, 0.0, 20000}, {257, 4.0, 20000},
                                   {50257, 2.0, 600}}) {
    const Stream s = random_stream(alphabet + (uint64_t)skew, n, alphabet, skew);
    const std::vector<uint8_t> bytes = encode(s);
    EXPECT_EQ(decode(s, bytes), s.symbols) << "alphabet " << alphabet << " skew " << skew;
    // Overhead: under 2^-12 bits a symbol of rounding, plus the 7 flushed bytes.
    const double bits = 8.0 * bytes.size();
    EXPECT_LE(bits, s.info_bits + s.symbols.size() * std::pow(2.0, -12) + 8 * 8)
        << "alphabet " << alphabet;
    EXPECT_GE(bits, s.info_bits - 8) << "alphabet " << alphabet;
  }
}

TEST(RangeCoder, CarriesPropagateThroughRunsOfFF) {
  // Symbols at the very top of the interval push `low` up to a carry over and over; symbols of
  // frequency 1 make long runs of pending 0xFF bytes.
  Stream s;
  std::vector<uint32_t> top(3);
  top[0] = 1, top[1] = kTotal - 2, top[2] = 1;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 50000; i++) {
    s.freqs.push_back(top);
    s.symbols.push_back(i % 97 == 0 ? 0 : (rng() % 3 == 0 ? 2 : 1));
  }
  const std::vector<uint8_t> bytes = encode(s);
  int ff_runs = 0;
  for (size_t i = 0; i + 3 < bytes.size(); i++) ff_runs += bytes[i] == 0xFF && bytes[i + 1] == 0xFF;
  EXPECT_GT(ff_runs, 0) << "the stream never exercised pending 0xFF bytes";
  EXPECT_EQ(decode(s, bytes), s.symbols);
}

TEST(RangeCoder, DamageChangesTheDecodedSymbols) {
  const Stream s = random_stream(3, 5000, 257, 1.0);
  std::vector<uint8_t> bytes = encode(s);
  bytes[bytes.size() / 2] ^= 0x10;
  EXPECT_NE(decode(s, bytes), s.symbols);
  // A truncated stream reads zeros past its end and decodes wrongly, without reading past it.
  std::vector<uint8_t> cut(encode(s));
  cut.resize(cut.size() / 2);
  EXPECT_NE(decode(s, cut), s.symbols);
}

TEST(RangeCoder, EmptyStream) {
  RangeEncoder enc;
  const std::vector<uint8_t> bytes = enc.finish();
  EXPECT_EQ(bytes.size(), 7u);  // the initial cache byte and six bytes of `low`
  RangeDecoder dec(bytes.data(), bytes.size());
  EXPECT_EQ(dec.position(), 7u);
}

}  // namespace
}  // namespace cr
