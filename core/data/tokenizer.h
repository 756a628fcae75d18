// Tokenizers for `chainrule prepare`, and the decoding `chainrule sample` needs.
//   byte: every byte is a token (V = 256); lossless for any input.
//   char: every distinct Unicode code point of the training text is a token, in code-point
//         order. Bytes that are not valid UTF-8 are read as Latin-1 code points.
// A tokenizer is saved as JSON ({"type": ..., "chars": [...]}) so a data dir or a run dir is
// self-describing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace cr {

class Tokenizer {
 public:
  enum class Kind { Byte, Char };

  static Tokenizer byte_level();
  // Builds a char tokenizer whose vocabulary is the code points of `text`.
  static Tokenizer char_level_from(std::string_view text);
  static Tokenizer from_json(const nlohmann::json& j, const std::string& where);
  static Tokenizer load(const std::string& path);
  nlohmann::json to_json() const;

  Kind kind() const { return kind_; }
  std::string name() const { return kind_ == Kind::Byte ? "byte" : "char"; }
  int vocab_size() const { return kind_ == Kind::Byte ? 256 : (int)chars_.size(); }

  // Encodes text. If byte_counts is given, it receives how many input bytes each token covers
  // (for bits-per-byte). Throws InputError for a code point the vocabulary lacks.
  std::vector<int32_t> encode(std::string_view text, std::vector<uint8_t>* byte_counts = nullptr) const;
  std::string decode(const std::vector<int32_t>& tokens) const;
  std::string decode_one(int32_t token) const;

 private:
  Kind kind_ = Kind::Byte;
  std::vector<uint32_t> chars_;  // token id -> code point (char tokenizer)
};

// Splits UTF-8 text into code points; invalid bytes become Latin-1 code points. lens (optional)
// receives the byte length of each code point.
std::vector<uint32_t> utf8_codepoints(std::string_view s, std::vector<uint8_t>* lens = nullptr);
std::string utf8_encode(uint32_t cp);

}  // namespace cr
