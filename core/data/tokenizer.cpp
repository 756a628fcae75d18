#include "core/data/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <set>
#include <unordered_map>

#include "core/common/error.h"
#include "core/data/bpe_tokenizer.h"
#include "core/data/sp_tokenizer.h"

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

// ---- construction ---------------------------------------------------------------------------

Tokenizer Tokenizer::byte_level() { return Tokenizer{}; }

Tokenizer Tokenizer::char_level_from(std::string_view text) {
  const auto cps = utf8_codepoints(text);
  std::set<uint32_t> distinct(cps.begin(), cps.end());
  return char_level_from_codepoints(std::vector<uint32_t>(distinct.begin(), distinct.end()));
}

Tokenizer Tokenizer::char_level_from_codepoints(const std::vector<uint32_t>& sorted_unique) {
  if (sorted_unique.size() > kMaxCharVocab)
    CR_INPUT_ERROR("the corpus has {} distinct characters; a char tokenizer holds at most {}",
                   sorted_unique.size(), kMaxCharVocab);
  for (size_t i = 0; i < sorted_unique.size(); i++) {
    CR_CHECK(sorted_unique[i] <= 0x10FFFF && (i == 0 || sorted_unique[i - 1] < sorted_unique[i]),
             "char_level_from_codepoints: code points must be ascending, unique, <= 0x10FFFF");
  }
  Tokenizer t;
  t.kind_ = Kind::Char;
  t.chars_ = sorted_unique;
  t.eot_ = (int32_t)t.chars_.size();
  return t;
}

namespace {
std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) CR_INPUT_ERROR("{}: cannot open {}", path, what);
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) CR_INPUT_ERROR("{}: cannot read {}", path, what);
  return ss.str();
}
}  // namespace

Tokenizer Tokenizer::from_spec(const std::string& spec) {
  if (spec == "byte") return byte_level();
  Tokenizer t;
  if (spec.rfind("hf:", 0) == 0) {
    std::string path = spec.substr(3);
    if (std::filesystem::is_directory(path)) path += "/tokenizer.json";  // a model's directory
    t.kind_ = Kind::HF;
    t.bpe_ = BpeModel::from_json_text(read_file(path, "Hugging Face tokenizer.json"), path);
    t.eot_ = t.bpe_->eot_id();
    return t;
  }
  if (spec.rfind("sp:", 0) == 0) {
    t.kind_ = Kind::SP;
    t.sp_ = SentencePiece::load(spec.substr(3));
    t.eot_ = t.sp_->eot_id();
    return t;
  }
  if (spec == "char" || spec == "sentencepiece")
    CR_INPUT_ERROR("--tokenizer {}: built from the corpus by prepare, not loadable by name", spec);
  CR_INPUT_ERROR("--tokenizer '{}' is unknown: expected byte, char, hf:PATH/tokenizer.json, "
                 "sentencepiece (with --vocab-size N) or sp:PATH.model", spec);
}

Tokenizer Tokenizer::train_sentencepiece(const NextText& next_text, int vocab_size,
                                         const SentencePieceTrainOptions& options) {
  Tokenizer t;
  t.kind_ = Kind::SP;
  t.sp_ = SentencePiece::train(next_text, vocab_size, options);
  t.eot_ = t.sp_->eot_id();
  return t;
}

// ---- JSON -----------------------------------------------------------------------------------

namespace {
// "eot" of a byte/char tokenizer: absent in legacy files (-1), else exactly `want`.
int32_t json_eot(const nlohmann::json& j, int32_t want, const std::string& where) {
  if (!j.contains("eot")) return -1;
  if (!j["eot"].is_number_integer() || j["eot"].get<int64_t>() != want)
    CR_INPUT_ERROR("{}: tokenizer \"eot\" must be {} (after the base vocabulary)", where, want);
  return want;
}
std::string json_string(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_string())
    CR_INPUT_ERROR("{}: {} tokenizer needs a string \"{}\"", where, j.value("type", "?"), key);
  return j[key];
}
}  // namespace

Tokenizer Tokenizer::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    CR_INPUT_ERROR("{}: tokenizer must be an object with a string \"type\"", where);
  const std::string type = j["type"];
  Tokenizer t;
  if (type == "byte") {
    t.eot_ = json_eot(j, 256, where);
  } else if (type == "char") {
    if (!j.contains("chars") || !j["chars"].is_array() || j["chars"].empty())
      CR_INPUT_ERROR("{}: char tokenizer needs a non-empty \"chars\" array of code points", where);
    t.kind_ = Kind::Char;
    for (const auto& c : j["chars"]) {
      if (!c.is_number_unsigned() || c.get<uint64_t>() > 0x10FFFF)
        CR_INPUT_ERROR("{}: tokenizer \"chars\" must hold code points in [0, 0x10FFFF]", where);
      const auto cp = c.get<uint32_t>();
      if (!t.chars_.empty() && cp <= t.chars_.back())
        CR_INPUT_ERROR("{}: tokenizer \"chars\" must be ascending without repeats", where);
      t.chars_.push_back(cp);
    }
    t.eot_ = json_eot(j, (int32_t)t.chars_.size(), where);
  } else if (type == "hf") {
    t.kind_ = Kind::HF;
    t.bpe_ = BpeModel::from_json_text(json_string(j, "tokenizer_json", where), where);
    t.eot_ = t.bpe_->eot_id();
  } else if (type == "sp") {
    t.kind_ = Kind::SP;
    const std::string b64 = json_string(j, "model_proto_base64", where);
    t.sp_ = SentencePiece::from_serialized(base64_decode(b64, where), where);
    t.eot_ = t.sp_->eot_id();
  } else {
    CR_INPUT_ERROR("{}: tokenizer type '{}' is unknown, expected byte, char, hf or sp", where, type);
  }
  if (j.contains("vocab_size") && j["vocab_size"] != t.vocab_size())
    CR_INPUT_ERROR("{}: tokenizer \"vocab_size\" {} does not match its vocabulary ({})", where,
                   j["vocab_size"].dump(), t.vocab_size());
  return t;
}

Tokenizer Tokenizer::load(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path, "tokenizer file"));
  } catch (const nlohmann::json::exception& e) {
    CR_INPUT_ERROR("{}: malformed JSON: {}", path, e.what());
  }
  return from_json(j.is_object() && j.contains("tokenizer") ? j["tokenizer"] : j, path);
}

nlohmann::json Tokenizer::to_json() const {
  nlohmann::json j;
  j["type"] = name();
  j["vocab_size"] = vocab_size();
  if (eot_ >= 0) j["eot"] = eot_;
  if (kind_ == Kind::Char) j["chars"] = chars_;
  if (kind_ == Kind::HF) j["tokenizer_json"] = bpe_->json_text();
  if (kind_ == Kind::SP) j["model_proto_base64"] = base64_encode(sp_->serialized());
  return j;
}

// ---- properties -----------------------------------------------------------------------------

std::string Tokenizer::name() const {
  switch (kind_) {
    case Kind::Byte: return "byte";
    case Kind::Char: return "char";
    case Kind::HF: return "hf";
    case Kind::SP: return "sp";
  }
  return "?";
}

int Tokenizer::vocab_size() const {
  switch (kind_) {
    case Kind::Byte: return eot_ >= 0 ? 257 : 256;
    case Kind::Char: return (int)chars_.size() + (eot_ >= 0 ? 1 : 0);
    case Kind::HF: return bpe_->vocab_size();
    case Kind::SP: return sp_->vocab_size();
  }
  return 0;
}

const std::string& Tokenizer::hf_tokenizer_json() const {
  static const std::string none;
  return kind_ == Kind::HF ? bpe_->json_text() : none;
}

// ---- encode / decode ------------------------------------------------------------------------

std::vector<int32_t> Tokenizer::encode(std::string_view text, std::vector<uint8_t>* byte_counts) const {
  std::vector<int32_t> out;
  if (byte_counts) byte_counts->clear();
  switch (kind_) {
    case Kind::Byte:
      out.reserve(text.size());
      for (char c : text) out.push_back((uint8_t)c);
      if (byte_counts) byte_counts->assign(text.size(), 1);
      return out;
    case Kind::HF:
      bpe_->encode(text, out, byte_counts);
      return out;
    case Kind::SP:
      sp_->encode(text, out, byte_counts);
      return out;
    case Kind::Char:
      break;
  }
  const auto cps = utf8_codepoints(text, byte_counts);
  out.reserve(cps.size());
  for (uint32_t cp : cps) {
    auto it = std::lower_bound(chars_.begin(), chars_.end(), cp);  // chars_ is ascending
    if (it == chars_.end() || *it != cp)
      CR_INPUT_ERROR("character U+{:04X} '{}' is not in the char tokenizer's vocabulary", cp,
                     utf8_encode(cp));
    out.push_back((int32_t)(it - chars_.begin()));
  }
  return out;
}

std::string Tokenizer::decode_one(int32_t token) const {
  CR_CHECK(token >= 0 && token < vocab_size(), "token {} outside vocabulary {}", token,
           vocab_size());
  if (token == eot_ && (kind_ == Kind::Byte || kind_ == Kind::Char)) return kEotText;
  switch (kind_) {
    case Kind::Byte: return std::string(1, (char)(uint8_t)token);
    case Kind::Char: return utf8_encode(chars_[token]);
    case Kind::HF: return bpe_->token_bytes(token);
    case Kind::SP: return sp_->decode_one(token);
  }
  return {};
}

std::string Tokenizer::decode(const std::vector<int32_t>& tokens) const {
  if (kind_ == Kind::SP) return sp_->decode(tokens);
  std::string s;
  for (int32_t t : tokens) s += decode_one(t);
  return s;
}

}  // namespace cr
