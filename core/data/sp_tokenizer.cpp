// SentencePiece through libsentencepiece: load, train, encode, decode. See sp_tokenizer.h.
#include "core/data/sp_tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "core/common/error.h"

namespace cr {

// ---- base64 ---------------------------------------------------------------------------------

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t)in[i] << 16 | (uint8_t)in[i + 1] << 8 | (uint8_t)in[i + 2];
    for (int s = 18; s >= 0; s -= 6) out += kB64[(v >> s) & 63];
  }
  if (i < in.size()) {
    const bool two = i + 1 < in.size();
    const uint32_t v = (uint8_t)in[i] << 16 | (two ? (uint8_t)in[i + 1] << 8 : 0);
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += two ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_decode(std::string_view in, const std::string& where) {
  int8_t value[256];
  std::fill(std::begin(value), std::end(value), (int8_t)-1);
  for (int k = 0; k < 64; k++) value[(uint8_t)kB64[k]] = (int8_t)k;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    if (value[(uint8_t)c] < 0) CR_INPUT_ERROR("{}: invalid base64 character '{}'", where, c);
    acc = acc << 6 | (uint32_t)value[(uint8_t)c];
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += (char)((acc >> bits) & 0xFF);
    }
  }
  return out;
}

// ---- load -----------------------------------------------------------------------------------

SentencePiece::~SentencePiece() = default;

std::shared_ptr<const SentencePiece> SentencePiece::from_serialized(std::string proto,
                                                                    const std::string& where) {
  std::shared_ptr<SentencePiece> t(new SentencePiece());
  t->sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = t->sp_->LoadFromSerializedProto(proto);
  if (!status.ok())
    CR_INPUT_ERROR("{}: not a SentencePiece model: {}", where, status.ToString());
  t->proto_ = std::move(proto);
  t->pieces_ = t->sp_->GetPieceSize();
  t->eot_ = t->sp_->eos_id();
  t->vocab_size_ = t->pieces_;
  if (t->eot_ < 0) t->eot_ = t->vocab_size_++;  // no eos of its own: append one
  return t;
}

std::shared_ptr<const SentencePiece> SentencePiece::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) CR_INPUT_ERROR("{}: cannot open SentencePiece model", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return from_serialized(ss.str(), path);
}

// ---- train ----------------------------------------------------------------------------------

namespace {

// Feeds SentencePiece's trainer the lines of the caller's texts, as it reads a text file.
// Lines longer than kMaxLine bytes are cut (at a UTF-8 boundary) into pieces of at most that
// size: the trainer skips longer "sentences" (max_sentence_length), and a corpus without
// newlines would otherwise train on nothing.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  static constexpr size_t kMaxLine = 4096;
  explicit LineIterator(const Tokenizer::NextText& next) : next_(next) { Next(); }
  bool done() const override { return done_; }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }
  void Next() override {
    while (true) {
      if (pos_ >= text_.size()) {
        text_.clear();
        pos_ = 0;
        if (!next_(text_)) {
          done_ = true;
          return;
        }
      }
      size_t end = text_.find('\n', pos_);
      if (end == std::string::npos) end = text_.size();
      size_t stop = std::min(end, pos_ + kMaxLine);
      while (stop < end && stop > pos_ && ((uint8_t)text_[stop] & 0xC0) == 0x80) stop--;
      line_.assign(text_, pos_, stop - pos_);
      pos_ = stop == end ? end + 1 : stop;
      if (!line_.empty()) return;
    }
  }

 private:
  const Tokenizer::NextText& next_;
  std::string text_, line_;
  size_t pos_ = 0;
  bool done_ = false;
};

}  // namespace

std::shared_ptr<const SentencePiece> SentencePiece::train(const Tokenizer::NextText& next_text,
                                                          int vocab_size,
                                                          const SentencePieceTrainOptions& opt) {
  if (vocab_size < 300)
    CR_INPUT_ERROR("--vocab-size {}: SentencePiece needs at least 300 (256 byte pieces, <unk>, "
                   "<s>, </s>, and the corpus's characters and merges)", vocab_size);
  if (opt.model_type != "bpe" && opt.model_type != "unigram")
    CR_INPUT_ERROR("SentencePiece model type '{}' is not supported: bpe or unigram", opt.model_type);
  const int threads = opt.num_threads > 0 ? opt.num_threads
                                          : (int)std::max(1u, std::thread::hardware_concurrency());
  // Why each option: decode(encode(x)) == x byte for byte for any valid UTF-8.
  //   byte_fallback: a character outside the vocabulary becomes its UTF-8 bytes (<0xAB>
  //     pieces), never <unk>; "\n" and "\t" are such characters.
  //   normalization_rule_name=identity: no NFKC, so the text is not changed.
  //   remove_extra_whitespaces=false: runs of spaces and leading/trailing spaces are kept.
  //   add_dummy_prefix=false: no space is invented at the start of a text.
  //   split_digits: one digit a piece, as Llama does (numbers tokenize uniformly).
  //   allow_whitespace_only_pieces: runs of spaces (code indentation) may be pieces.
  //   input_sentence_size + shuffle_input_sentence: at most max_sentences lines, sampled,
  //     are held in memory whatever the corpus size.
  //   hard_vocab_limit=false: a small corpus yields a smaller vocabulary instead of failing.
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", opt.model_type},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"input_sentence_size", std::to_string(opt.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"character_coverage", std::to_string(opt.character_coverage)},
      {"num_threads", std::to_string(threads)},
      {"hard_vocab_limit", "false"},
      {"max_sentence_length", std::to_string(LineIterator::kMaxLine * 2)},
      {"minloglevel", "1"},
  };
  LineIterator lines(next_text);
  std::string proto;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &lines, &proto);
  if (!status.ok())
    CR_INPUT_ERROR("SentencePiece training (--vocab-size {}) failed: {}", vocab_size,
                   status.ToString());
  return from_serialized(std::move(proto), "trained SentencePiece model");
}

// ---- encode / decode ------------------------------------------------------------------------

void SentencePiece::encode(std::string_view text, std::vector<int32_t>& out,
                           std::vector<uint8_t>* counts) const {
  if (!counts) {
    std::vector<int> ids;
    const auto status = sp_->Encode(text, &ids);
    if (!status.ok()) CR_INPUT_ERROR("SentencePiece encode failed: {}", status.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  const sentencepiece::ImmutableSentencePieceText spt = sp_->EncodeAsImmutableProto(text);
  for (const auto& p : spt.pieces()) {
    out.push_back((int32_t)p.id());
    const uint32_t n = p.end() - p.begin();
    if (n > 255) CR_INPUT_ERROR("piece {} covers {} bytes; at most 255 are counted", p.id(), n);
    counts->push_back((uint8_t)n);
  }
}

bool SentencePiece::is_special(int32_t id) const {
  return id >= pieces_ || sp_->IsControl(id);
}

std::string SentencePiece::decode_one(int32_t id) const {
  CR_CHECK(id >= 0 && id < vocab_size_, "token {} outside vocabulary {}", id, vocab_size_);
  if (id >= pieces_) return Tokenizer::kEotText;
  const std::string& piece = sp_->IdToPiece(id);
  if (sp_->IsControl(id)) return piece;
  if (sp_->IsByte(id)) return std::string(1, (char)std::stoi(piece.substr(3, 2), nullptr, 16));
  if (sp_->IsUnknown(id)) return " \xE2\x81\x87 ";  // SentencePiece's unk surface
  std::string s;
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, 3, "\xE2\x96\x81") == 0) {  // U+2581 stands for a space
      s += ' ';
      i += 3;
    } else {
      s += piece[i++];
    }
  }
  return s;
}

std::string SentencePiece::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  std::vector<int> run;
  auto flush = [&] {
    if (run.empty()) return;
    std::string s;
    const auto status = sp_->Decode(run, &s);
    CR_CHECK(status.ok(), "SentencePiece decode failed: {}", status.ToString());
    out += s;
    run.clear();
  };
  for (int32_t id : ids) {
    CR_CHECK(id >= 0 && id < vocab_size_, "token {} outside vocabulary {}", id, vocab_size_);
    if (is_special(id)) {
      flush();
      out += decode_one(id);
    } else {
      run.push_back(id);
    }
  }
  flush();
  return out;
}

}  // namespace cr
