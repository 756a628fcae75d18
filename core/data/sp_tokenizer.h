// SentencePiece models (Kudo & Richardson 2018; Llama 1/2, T5) through Debian's
// libsentencepiece: loading a .model, training one on a corpus, encoding and decoding. Reached
// through Tokenizer (core/data/tokenizer.h) as "sp:PATH.model" or `--tokenizer sentencepiece`;
// this header is the implementation's interface.
//
// The model travels as its serialized ModelProto (the bytes of the .model file). The EOT is the
// model's eos ("</s>"); a model without one gets "<|endoftext|>" appended after its pieces.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/data/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace cr {

class SentencePiece {
 public:
  // From the bytes of a .model file; `where` names it in errors.
  static std::shared_ptr<const SentencePiece> from_serialized(std::string proto,
                                                              const std::string& where);
  static std::shared_ptr<const SentencePiece> load(const std::string& path);
  // Trains on the lines of next_text's texts; see Tokenizer::train_sentencepiece.
  static std::shared_ptr<const SentencePiece> train(const Tokenizer::NextText& next_text,
                                                    int vocab_size,
                                                    const SentencePieceTrainOptions& options);
  ~SentencePiece();

  int vocab_size() const { return vocab_size_; }
  int32_t eot_id() const { return eot_; }
  const std::string& serialized() const { return proto_; }

  // Appends ids (and the input bytes each covers, from SentencePiece's offsets) to out.
  void encode(std::string_view text, std::vector<int32_t>& out, std::vector<uint8_t>* counts) const;
  // SentencePiece's own decoding for runs of ordinary pieces (it drops the dummy-prefix space
  // at the start); control pieces (bos, eos) decode to their piece text, e.g. "</s>".
  std::string decode(const std::vector<int32_t>& ids) const;
  // One piece for streaming: "▁" as a space, <0xAB> byte pieces as the byte.
  std::string decode_one(int32_t id) const;

 private:
  SentencePiece() = default;
  bool is_special(int32_t id) const;

  std::string proto_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  int pieces_ = 0;      // the model's own pieces
  int vocab_size_ = 0;  // pieces_, plus one where the EOT is appended
  int32_t eot_ = -1;
};

// RFC 4648 base64 (the serialized model inside JSON).
std::string base64_encode(std::string_view bytes);
// Throws InputError naming `where` for a character outside the alphabet.
std::string base64_decode(std::string_view text, const std::string& where);

}  // namespace cr
