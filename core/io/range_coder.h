// A range coder (arithmetic coding with integer arithmetic and byte output; G. N. N. Martin,
// "Range encoding", 1979), the carry-propagating form LZMA uses, widened to a 48-bit range so
// that a symbol's frequency can be as fine as 1 / 2^28 of the total: a 50k-token vocabulary
// where every token keeps frequency >= 1 gives up less than 0.2% of the probability mass.
//
// Coding a symbol of frequency f out of a total F (cumulative frequency c below it) narrows the
// interval [low, low + range) to [low + r c, low + r (c + f)) with r = floor(range / F), and
// costs log2(F / f) bits plus at most F / range of rounding (range >= 2^40 after
// normalisation, F <= 2^28: under 2^-12 bits a symbol). Bytes leave the top of `low` as the
// range shrinks below 2^40; a carry out of `low` is propagated into the bytes not yet written
// (the cache byte and a run of 0xFF bytes).
//
// Both sides must see the same (c, f, F) sequence: the model's distribution is quantised to
// integer frequencies deterministically (launcher/compress.cpp), so the decoder, which computes
// the same distribution from the symbols decoded so far, inverts the encoder exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cr {

class RangeEncoder {
 public:
  static constexpr int kMaxTotalBits = 28;  // F <= 2^28

  // Codes the symbol [cum, cum + freq) of total (freq >= 1, cum + freq <= total <= 2^28).
  void encode(uint32_t cum, uint32_t freq, uint32_t total);
  // Writes the final bytes; the encoder is done after this. Returns the coded bytes.
  std::vector<uint8_t>& finish();
  const std::vector<uint8_t>& bytes() const { return out_; }

 private:
  static constexpr int kBits = 48;                        // the range's width
  static constexpr uint64_t kMask = (uint64_t(1) << kBits) - 1;
  static constexpr uint64_t kTop = uint64_t(1) << (kBits - 8);  // normalise below this
  void shift_low();
  uint64_t low_ = 0, range_ = kMask;
  uint8_t cache_ = 0;
  uint64_t cache_size_ = 1;  // the cache byte plus the 0xFF bytes waiting for a carry
  std::vector<uint8_t> out_;
};

class RangeDecoder {
 public:
  // data: what RangeEncoder::finish() returned. Reading past its end reads zeros (a damaged or
  // truncated stream decodes to wrong symbols, which the caller's checksum reports).
  RangeDecoder(const uint8_t* data, size_t n);
  // The cumulative-frequency slot the next symbol occupies, in [0, total): the caller finds the
  // symbol s with cum(s) <= slot < cum(s) + freq(s), then calls consume(cum(s), freq(s)).
  uint32_t slot(uint32_t total);
  void consume(uint32_t cum, uint32_t freq);
  size_t position() const { return pos_; }  // bytes read so far

 private:
  static constexpr int kBits = 48;
  static constexpr uint64_t kMask = (uint64_t(1) << kBits) - 1;
  static constexpr uint64_t kTop = uint64_t(1) << (kBits - 8);
  uint8_t next() { return pos_ < n_ ? data_[pos_++] : (pos_++, 0); }
  const uint8_t* data_;
  size_t n_, pos_ = 0;
  uint64_t code_ = 0, range_ = kMask, r_ = 0;
};

}  // namespace cr
