// UTF-8 well-formedness (RFC 3629, Unicode's Table 3-7): no overlong forms, no surrogates, no code
// points past U+10FFFF. Used where bytes must be told apart from characters: `chainrule score`
// showing byte-level tokens that hold part of a character, and `chainrule compress` sending only
// whole characters to a tokenizer.
#pragma once

#include <cstddef>
#include <string_view>

namespace cr {

// The length (1-4) of the well-formed UTF-8 sequence starting at s[i], or 0 when none does
// (i < s.size()).
inline size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return (unsigned char)s[k]; };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return 0;
  if (i + n > s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; k++)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  return n;
}

}  // namespace cr
