// Tokenizers for `chainrule prepare`, and the decoding `chainrule sample`, `eval` and the HF
// export need. Four kinds:
//   byte: every byte is a token (ids 0..255) plus the end-of-text token 256 (V = 257); lossless
//         for any input.
//   char: every distinct Unicode code point of the training text is a token, in code-point
//         order, plus the end-of-text token after them. Bytes that are not valid UTF-8 are read
//         as Latin-1 code points.
//   hf:   a Hugging Face `tokenizers` tokenizer.json holding a byte-level BPE model (GPT-2,
//         Llama 3, Qwen, ...): core/data/bpe_tokenizer.h.
//   sp:   a SentencePiece model (Llama 1/2, T5), loaded from a .model file or trained on the
//         corpus with SentencePiece's C++ trainer: core/data/sp_tokenizer.h.
//
// End of text (EOT). Documents are packed llm.c style, [eot] + encode(doc) for every document,
// so every tokenizer made today has an EOT id: the tokenizer's own special token for hf
// ("<|endoftext|>", "<|end_of_text|>", "</s>") and sp (the model's eos), an appended one for byte
// (256) and char (after the code points). Only a legacy tokenizer read from an old dataset.json
// (no "eot" field) has eot_id() == -1 and its old vocabulary size, so old data dirs keep working.
// encode() of byte and char never produces the EOT (the text "<|endoftext|>" is plain text to
// them); hf matches its added tokens in the text as Hugging Face does, sp never does.
//
// A tokenizer is saved as JSON ({"type": "byte"|"char"|"hf"|"sp", ...}) into dataset.json and the
// run dir's tokenizer.chainrule.json; hf embeds the whole tokenizer.json text and sp its
// serialized ModelProto (base64), so a data dir or a run dir is self-contained.
//
// Thread safety: a Tokenizer is an immutable value (cheap to copy: the hf/sp models are shared);
// every const method, encode() included, may be called from many threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace cr {

class BpeModel;       // core/data/bpe_tokenizer.h
class SentencePiece;  // core/data/sp_tokenizer.h

// Options of Tokenizer::train_sentencepiece (SentencePiece's TrainerSpec names in brackets).
struct SentencePieceTrainOptions {
  std::string model_type = "bpe";  // [model_type] "bpe" (Llama 1/2) or "unigram" (T5)
  // [input_sentence_size] at most this many lines are sampled (shuffled) from the corpus: the
  // trainer holds them in memory, so this bounds its memory on a corpus of any size.
  int64_t max_sentences = 1000000;
  int num_threads = 0;             // [num_threads] 0 = all cores
  double character_coverage = 0.9995;  // [character_coverage] the rest falls back to bytes
};

class Tokenizer {
 public:
  enum class Kind { Byte, Char, HF, SP };

  // The byte tokenizer with its EOT (id 256, V = 257).
  static Tokenizer byte_level();
  // A char tokenizer whose vocabulary is the code points of `text`, then the EOT.
  static Tokenizer char_level_from(std::string_view text);
  // The same from code points collected by the caller (prepare's first pass over a corpus):
  // `sorted_unique` ascending, no duplicates, each <= 0x10FFFF. Throws InputError when there
  // are more than kMaxCharVocab of them (the token shards hold ids as uint32).
  static Tokenizer char_level_from_codepoints(const std::vector<uint32_t>& sorted_unique);
  static constexpr size_t kMaxCharVocab = 1u << 24;

  // From the --tokenizer flag: "byte", "hf:PATH/tokenizer.json" (or hf:DIR holding one) or
  // "sp:PATH.model". Throws a one-line InputError naming the spec, path or JSON key for an
  // unknown spec, an unreadable file, or a tokenizer.json outside what
  // core/data/bpe_tokenizer.h supports. ("char" and
  // "sentencepiece" need the corpus: char_level_from* and train_sentencepiece.)
  static Tokenizer from_spec(const std::string& spec);

  // Trains a SentencePiece model (SentencePiece's C++ trainer) on the texts that next_text
  // yields (it fills its argument and returns true, or returns false at the end; each text is
  // split into lines, as SentencePiece reads a text file). The options make decode(encode(x))
  // == x byte for byte for any valid UTF-8 (see sp_tokenizer.cpp): byte_fallback, identity
  // normalization, no dummy prefix, whitespace kept, digits split as Llama does. The model's
  // eos "</s>" is the EOT. Throws InputError for vocab_size < 300 (bytes + specials + a few
  // merges) or when SentencePiece rejects the input (the message names the problem).
  using NextText = std::function<bool(std::string& text)>;
  static Tokenizer train_sentencepiece(const NextText& next_text, int vocab_size,
                                       const SentencePieceTrainOptions& options = {});

  // JSON as written by to_json(); `where` names the file in errors. Legacy {"type": "byte"} and
  // {"type": "char", "chars": [...]} without "eot" load with eot_id() == -1.
  static Tokenizer from_json(const nlohmann::json& j, const std::string& where);
  // A file holding to_json() bare, or as the "tokenizer" field of a dataset.json.
  static Tokenizer load(const std::string& path);
  nlohmann::json to_json() const;

  Kind kind() const { return kind_; }
  std::string name() const;  // "byte", "char", "hf", "sp"
  int vocab_size() const;    // ids are in [0, vocab_size())
  int32_t eot_id() const { return eot_; }  // -1 only for a legacy tokenizer

  // Encodes text. If byte_counts is given, it receives how many input bytes each token covers
  // (for bits-per-byte; they sum to text.size() for byte/char/hf; for sp, to the bytes of the
  // text SentencePiece saw). Throws InputError for a code point the char vocabulary lacks.
  std::vector<int32_t> encode(std::string_view text, std::vector<uint8_t>* byte_counts = nullptr) const;
  // The text of the tokens, concatenated. Special tokens (the EOT) decode to their text, e.g.
  // "<|endoftext|>". Byte-level tokens may end inside a UTF-8 character: decode_one() of
  // consecutive tokens concatenates to decode() of them (streaming output in `sample`).
  std::string decode(const std::vector<int32_t>& tokens) const;
  std::string decode_one(int32_t token) const;

  // The original tokenizer.json text of an hf tokenizer (the HF export copies it); "" else.
  const std::string& hf_tokenizer_json() const;

  static constexpr const char* kEotText = "<|endoftext|>";  // byte/char EOT's text

 private:
  Kind kind_ = Kind::Byte;
  int32_t eot_ = 256;
  std::vector<uint32_t> chars_;  // token id -> code point (char tokenizer)
  std::shared_ptr<const BpeModel> bpe_;
  std::shared_ptr<const SentencePiece> sp_;
};

// Splits UTF-8 text into code points; invalid bytes become Latin-1 code points. lens (optional)
// receives the byte length of each code point.
std::vector<uint32_t> utf8_codepoints(std::string_view s, std::vector<uint8_t>* lens = nullptr);
std::string utf8_encode(uint32_t cp);

}  // namespace cr
