#include "core/io/range_coder.h"

#include "core/common/error.h"

namespace cr {

void RangeEncoder::encode(uint32_t cum, uint32_t freq, uint32_t total) {
  CR_CHECK(freq >= 1 && (uint64_t)cum + freq <= total && total <= (1u << kMaxTotalBits),
           "range coder: symbol [{}, {}) of {}", cum, (uint64_t)cum + freq, total);
  const uint64_t r = range_ / total;
  low_ += r * cum;
  range_ = r * freq;
  while (range_ < kTop) {
    range_ <<= 8;
    shift_low();
  }
}

// Moves the top byte of `low` out. It is held back (cache_) while it could still change: a
// 0xFF byte followed by more 0xFF bytes can all be incremented by one later carry.
void RangeEncoder::shift_low() {
  const uint64_t carry = low_ >> kBits;  // 0 or 1
  if ((low_ & kMask) < (uint64_t(0xFF) << (kBits - 8)) || carry != 0) {
    uint8_t byte = cache_;
    do {
      out_.push_back(uint8_t(byte + carry));
      byte = 0xFF;
    } while (--cache_size_ != 0);
    cache_ = uint8_t(low_ >> (kBits - 8));
  }
  cache_size_++;
  low_ = (low_ << 8) & kMask;
}

std::vector<uint8_t>& RangeEncoder::finish() {
  for (int i = 0; i < kBits / 8 + 1; i++) shift_low();
  return out_;
}

RangeDecoder::RangeDecoder(const uint8_t* data, size_t n) : data_(data), n_(n) {
  // The encoder's first byte is its initial cache (always 0); then kBits / 8 bytes of `low`.
  for (int i = 0; i < kBits / 8 + 1; i++) code_ = ((code_ << 8) | next()) & kMask;
}

uint32_t RangeDecoder::slot(uint32_t total) {
  r_ = range_ / total;
  const uint64_t s = code_ / r_;
  // Past the last symbol only in a damaged stream (the encoder never leaves low + r * total).
  return s < total ? (uint32_t)s : total - 1;
}

void RangeDecoder::consume(uint32_t cum, uint32_t freq) {
  code_ -= r_ * cum;
  range_ = r_ * freq;
  while (range_ < kTop) {
    code_ = ((code_ << 8) | next()) & kMask;
    range_ <<= 8;
  }
}

}  // namespace cr
