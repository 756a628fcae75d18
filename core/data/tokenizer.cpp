#include "core/data/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <unordered_map>

#include "core/common/error.h"

namespace cr {

std::vector<uint32_t> utf8_codepoints(std::string_view s, std::vector<uint8_t>* lens) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = (uint8_t)s[i];
    int len = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : (b0 >> 3) == 0x1E ? 4 : 0;
    uint32_t cp = 0;
    bool ok = len > 0 && i + len <= s.size();
    if (ok) {
      cp = len == 1 ? b0 : (b0 & (0x7F >> len));
      for (int k = 1; k < len && ok; k++) {
        const auto b = (uint8_t)s[i + k];
        ok = (b >> 6) == 0x2;
        cp = (cp << 6) | (b & 0x3F);
      }
      // Reject overlong forms and surrogates: they would not round-trip.
      ok = ok && !(len == 2 && cp < 0x80) && !(len == 3 && cp < 0x800) &&
           !(len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) && !(cp >= 0xD800 && cp <= 0xDFFF);
    }
    if (!ok) {
      cp = b0;  // Latin-1 fallback for a stray byte
      len = 1;
    }
    out.push_back(cp);
    if (lens) lens->push_back((uint8_t)len);
    i += len;
  }
  return out;
}

std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += (char)cp;
  } else if (cp < 0x800) {
    s += (char)(0xC0 | (cp >> 6));
    s += (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += (char)(0xE0 | (cp >> 12));
    s += (char)(0x80 | ((cp >> 6) & 0x3F));
    s += (char)(0x80 | (cp & 0x3F));
  } else {
    s += (char)(0xF0 | (cp >> 18));
    s += (char)(0x80 | ((cp >> 12) & 0x3F));
    s += (char)(0x80 | ((cp >> 6) & 0x3F));
    s += (char)(0x80 | (cp & 0x3F));
  }
  return s;
}

Tokenizer Tokenizer::byte_level() { return Tokenizer{}; }

Tokenizer Tokenizer::char_level_from(std::string_view text) {
  const auto cps = utf8_codepoints(text);
  std::set<uint32_t> distinct(cps.begin(), cps.end());
  Tokenizer t;
  t.kind_ = Kind::Char;
  t.chars_.assign(distinct.begin(), distinct.end());
  return t;
}

Tokenizer Tokenizer::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    CR_INPUT_ERROR("{}: tokenizer must be an object with a string \"type\"", where);
  const std::string type = j["type"];
  if (type == "byte") return byte_level();
  if (type != "char")
    CR_INPUT_ERROR("{}: tokenizer type '{}' is unknown, expected byte or char", where, type);
  if (!j.contains("chars") || !j["chars"].is_array() || j["chars"].empty())
    CR_INPUT_ERROR("{}: char tokenizer needs a non-empty \"chars\" array of code points", where);
  Tokenizer t;
  t.kind_ = Kind::Char;
  for (const auto& c : j["chars"]) {
    if (!c.is_number_unsigned() || c.get<uint64_t>() > 0x10FFFF)
      CR_INPUT_ERROR("{}: tokenizer \"chars\" must hold code points in [0, 0x10FFFF]", where);
    t.chars_.push_back(c.get<uint32_t>());
  }
  return t;
}

Tokenizer Tokenizer::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) CR_INPUT_ERROR("{}: cannot open tokenizer file", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    CR_INPUT_ERROR("{}: malformed JSON: {}", path, e.what());
  }
  return from_json(j.contains("tokenizer") ? j["tokenizer"] : j, path);
}

nlohmann::json Tokenizer::to_json() const {
  nlohmann::json j;
  j["type"] = name();
  j["vocab_size"] = vocab_size();
  if (kind_ == Kind::Char) j["chars"] = chars_;
  return j;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, std::vector<uint8_t>* byte_counts) const {
  std::vector<int32_t> out;
  if (byte_counts) byte_counts->clear();
  if (kind_ == Kind::Byte) {
    out.reserve(text.size());
    for (char c : text) out.push_back((uint8_t)c);
    if (byte_counts) byte_counts->assign(text.size(), 1);
    return out;
  }
  std::unordered_map<uint32_t, int32_t> index;
  for (size_t i = 0; i < chars_.size(); i++) index[chars_[i]] = (int32_t)i;
  const auto cps = utf8_codepoints(text, byte_counts);
  out.reserve(cps.size());
  for (uint32_t cp : cps) {
    auto it = index.find(cp);
    if (it == index.end())
      CR_INPUT_ERROR("character U+{:04X} '{}' is not in the char tokenizer's vocabulary", cp,
                     utf8_encode(cp));
    out.push_back(it->second);
  }
  return out;
}

std::string Tokenizer::decode_one(int32_t token) const {
  if (kind_ == Kind::Byte) return std::string(1, (char)(uint8_t)token);
  CR_CHECK(token >= 0 && (size_t)token < chars_.size(), "token {} outside vocabulary {}", token,
           chars_.size());
  return utf8_encode(chars_[token]);
}

std::string Tokenizer::decode(const std::vector<int32_t>& tokens) const {
  std::string s;
  for (int32_t t : tokens) s += decode_one(t);
  return s;
}

}  // namespace cr
