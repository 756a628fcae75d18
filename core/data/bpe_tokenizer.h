// Byte-level BPE as Hugging Face `tokenizers` defines it in tokenizer.json (GPT-2, Llama 3, Qwen
// 2 without its NFC normalizer, ...). Reached through Tokenizer (core/data/tokenizer.h) as
// "hf:PATH/tokenizer.json"; this header is the implementation's interface.
//
// Encoding a text, in the order `tokenizers` applies the stages:
//   1. added_tokens: found in the raw text first, leftmost-longest (the tokens with
//      "normalized": false, then those with true), with lstrip / rstrip / single_word. Each match
//      is one token; the text between matches goes on to 2. Special tokens such as
//      <|endoftext|> are matched too (tokenizers' encode(text, add_special_tokens=False)).
//   2. pre_tokenizer: ByteLevel (use_regex: GPT-2's pattern), or Sequence[Split(regex,
//      "Isolated")..., ByteLevel(use_regex: false)] as Llama 3 and Qwen write it. Regexes run on
//      PCRE2 in UTF + UCP mode (Unicode properties for \s, \p{L}, \p{N}) with JIT.
//      ByteLevel's add_prefix_space is honoured.
//   3. model BPE: each pre-token's bytes map to GPT-2's byte->unicode alphabet; with
//      ignore_merges (Llama 3) a pre-token that is itself in the vocab is one token; otherwise
//      pairs merge lowest rank first, leftmost among equals (`tokenizers`' Word::merge_all).
//      merges may be "a b" strings or ["a", "b"] pairs. A bounded per-thread cache holds the
//      result per pre-token.
// post_processor is not applied (no BOS: documents are separated by the EOT when prepared);
// truncation and padding are ignored. decoder must be ByteLevel.
//
// Anything else (another model type, a normalizer, byte_fallback, a continuing_subword_prefix,
// another pre-tokenizer or split behaviour) is a one-line InputError naming the key and saying
// what is supported. Input that is not valid UTF-8 is still encoded losslessly: PCRE2's
// MATCH_INVALID_UTF leaves invalid bytes between matches, and they become byte tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace cr {

class BpeModel {
 public:
  // Parses tokenizer.json text; `where` names the file in errors. When the file has no
  // end-of-text special token ("<|endoftext|>", "<|end_of_text|>", "</s>"), "<|endoftext|>" is
  // added after the largest id, and json_text() lists it among the added tokens.
  static std::shared_ptr<const BpeModel> from_json_text(std::string text, const std::string& where);
  ~BpeModel();

  int vocab_size() const { return (int)token_bytes_.size(); }  // largest id + 1
  int32_t eot_id() const { return eot_; }
  const std::string& json_text() const { return json_text_; }

  // Appends the ids of text to out (and each token's input byte count to counts if given).
  void encode(std::string_view text, std::vector<int32_t>& out, std::vector<uint8_t>* counts) const;
  // The bytes a token stands for (ByteLevel decoder); "" for an id no token has.
  const std::string& token_bytes(int32_t id) const;

  struct Regex;  // a compiled PCRE2 pattern (bpe_tokenizer.cpp)
  struct AddedToken {
    int32_t id;
    std::string content;
    bool single_word, lstrip, rstrip, normalized, special;
  };

 private:
  BpeModel() = default;
  void parse_model(const nlohmann::json& model, const std::string& where);
  void parse_pre_tokenizer(const nlohmann::json& pre, const std::string& where);
  void encode_segment(std::string_view seg, std::vector<int32_t>& out,
                      std::vector<uint8_t>* counts) const;
  void encode_pretoken(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe_merge(std::string_view piece, std::vector<int32_t>& out) const;

  std::string json_text_;
  std::vector<std::string> token_bytes_;                // id -> bytes ("" for gaps)
  std::unordered_map<std::string, int32_t> vocab_;      // raw bytes -> id (model vocab)
  struct Merge {
    int32_t rank, new_id;
  };
  std::unordered_map<uint64_t, Merge> merges_;          // (left id << 32 | right id) -> merge
  int32_t byte_id_[256];                                 // the token of each single byte, or -1
  bool ignore_merges_ = false;
  std::vector<std::unique_ptr<Regex>> splits_;          // Split pre-tokenizers, in order
  std::unique_ptr<Regex> byte_level_regex_;             // ByteLevel use_regex (GPT-2's pattern)
  bool add_prefix_space_ = false;
  std::vector<AddedToken> added_;                       // longest first
  int32_t eot_ = -1;
  uint64_t instance_ = 0;                               // keys the per-thread cache
};

}  // namespace cr
