// `chainrule compress MODEL IN OUT` and `chainrule decompress MODEL IN OUT`: lossless compression
// by arithmetic coding with the model's next-token distribution. A token the model gives
// probability q costs -log2 q bits (plus under 2^-12 of coding overhead), so the compressed size
// is the model's cross-entropy on the file: the bits/token `chainrule eval` reports.
//
// Symbols. The input is cut into chunks of about --chunk-bytes (moved back to a UTF-8 character
// start), each coded independently from an end-of-text token, as a document starts in training.
// A chunk becomes a sequence of symbols whose bytes concatenate to it exactly: the tokenizer's
// tokens where decoding them gives the text back byte for byte (checked, not assumed), else
// single-byte tokens, else an escape symbol followed by the raw byte (coded uniformly, 8 bits).
// The model reads the end-of-text token in place of an escaped byte. So any byte string
// round-trips, whatever the tokenizer: bytes a char vocabulary lacks, invalid UTF-8, NULs.
//
// Frequencies. The model's logits over the tokenizer's V tokens become integer frequencies
// totalling 2^28: f_i = 1 + floor(p_i * (2^28 - V - e)) with p the float64 softmax, e the escape
// symbol's, and the rounding remainder added to the likeliest token. Every symbol keeps f >= 1,
// so nothing is uncodable. The escape's probability is learnt as the chunk goes (the
// Krichevsky-Trofimov estimate (escapes + 1/2) / (symbols + 1), kept in [2^-20, 7/8]): text the
// tokenizer covers pays about 0.7 ln(n) bits in all for it, and a byte that only an escape can
// code costs about 8.2 bits. (Random bytes cost more with a model whose single-byte tokens are
// unlikely: 9.8 to 12 bits a byte with char, SentencePiece and BPE models, 8.7 with byte ones.)
// With a tokenizer that has a token for every byte value no escape can occur, and e = 1.
//
// Context. A chunk longer than the model's context slides it: when block_size positions are
// full, the last T - S + 1 tokens (S = T / 2) are re-read into a fresh cache. Each token is then
// predicted from exactly the context `chainrule score --stride S` uses, so the coded size
// matches score's total surprisal (plus the header and the coding overhead).
//
// Parallelism and reproducibility. The chunks of a batch are decoded side by side as one batch
// of sequences through the KV cache (GPT::decode_batch), one token each per step; a finished
// chunk is fed end-of-text tokens until the batch ends. The decoder repeats the encoder's
// computation exactly: the same batches (the header records the batch size), the same OpenMP
// thread count (recorded, and set again on decompression: the GEMM's rounding depends on it),
// the same code. Identical decompression therefore needs the same binary and the same CPU type
// (AVX-512 and AVX2 GEMM kernels round differently); a per-chunk CRC32C reports a difference.
//
// Container (all integers little-endian):
//   magic        8 bytes  89 'C' 'R' 'Z' 0D 0A 1A 0A   (PNG's trick: catches text-mode damage)
//   version      u32      1
//   model        32 bytes SHA-256 of the model (config fields and f32 weights)
//   tokenizer    32 bytes SHA-256 of the tokenizer (its JSON, as saved in dataset.json)
//   size         u64      original bytes
//   crc          u32      CRC32C of the original bytes
//   chunk_bytes  u64      the --chunk-bytes asked for
//   chunks       u64      number of chunks
//   batch        u32      chunks coded side by side
//   threads      u32      OpenMP threads of the compressing process
//   total_bits   u32      frequencies total 2^total_bits (28)
//   escape       u32      0: no escapes (a token for every byte), 1: the adaptive escape
//   per chunk:   u32 bytes, u32 symbols, u32 CRC32C of its bytes, u64 coded bytes
//   header_crc   u32      CRC32C of everything above
//   then each chunk's range-coded bytes, in order.
#include <omp.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/common/error.h"
#include "core/common/log.h"
#include "core/data/utf8.h"
#include "core/io/atomic_file.h"
#include "core/io/crc32c.h"
#include "core/io/range_coder.h"
#include "launcher/commands.h"
#include "launcher/evaluate.h"

namespace cr {

namespace fs = std::filesystem;

namespace {

constexpr uint8_t kMagic[8] = {0x89, 'C', 'R', 'Z', '\r', '\n', 0x1a, '\n'};
constexpr uint32_t kVersion = 1;
constexpr int kTotalBits = RangeEncoder::kMaxTotalBits;
constexpr uint32_t kTotal = 1u << kTotalBits;
constexpr int kMaxBatch = 64;       // the default batch's limit
constexpr uint32_t kMaxBatchFlag = 4096;  // --batch's
constexpr uint32_t kMaxThreads = 1024;
constexpr size_t kCacheBudget = size_t(1) << 30;  // KV cache bytes for one batch

using Digest = std::array<uint8_t, 32>;

std::string hex(const Digest& d) {
  std::string s;
  for (uint8_t b : d) s += fmt::format("{:02x}", b);
  return s;
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    CR_CHECK(ctx_ && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1, "SHA-256 init failed");
  }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256& update(const void* p, size_t n) {
    CR_CHECK(EVP_DigestUpdate(ctx_, p, n) == 1, "SHA-256 update failed");
    return *this;
  }
  Sha256& update(std::string_view s) { return update(s.data(), s.size()); }
  Digest final() {
    Digest d{};
    unsigned n = 0;
    CR_CHECK(EVP_DigestFinal_ex(ctx_, d.data(), &n) == 1 && n == d.size(), "SHA-256 final failed");
    return d;
  }

 private:
  EVP_MD_CTX* ctx_;
};

// What the decoder must match: every config field and every weight, bit for bit.
Digest model_digest(const GPT& model) {
  const ModelConfig& c = model.config();
  Sha256 h;
  h.update(fmt::format("chainrule-model family={} n_layer={} n_head={} n_kv_head={} n_embd={} "
                       "block_size={} vocab_size={} ffn_hidden={} rope_theta={} norm_eps={} "
                       "tie={} bias={}\n",
                       family_name(c.family), c.n_layer, c.n_head, c.kv_heads(), c.n_embd,
                       c.block_size, c.vocab_size, c.ffn_hidden_size(), c.rope_theta, c.norm_eps,
                       c.tie_embeddings, c.bias));
  h.update(model.params(), model.num_params() * sizeof(float));
  return h.final();
}

Digest tokenizer_digest(const Tokenizer& tok) { return Sha256().update(tok.to_json().dump()).final(); }

// ---- symbols -----------------------------------------------------------------------------------

// Cuts text into symbols: s < V a token, s >= V the escape of byte s - V.
class Segmenter {
 public:
  explicit Segmenter(const Tokenizer& tok) : tok_(tok), V_(tok.vocab_size()) {
    bytes_of_.resize(V_);
    for (int32_t id = 0; id < V_; id++) {
      bytes_of_[id] = tok.decode_one(id);
      // Short tokens only: the fallback looks up single characters and single bytes.
      if (!bytes_of_[id].empty() && bytes_of_[id].size() <= 4) by_bytes_.emplace(bytes_of_[id], id);
    }
    for (int b = 0; b < 256; b++) {
      auto it = by_bytes_.find(std::string(1, (char)b));
      byte_token_[b] = it == by_bytes_.end() ? -1 : it->second;
      byte_complete_ = byte_complete_ && byte_token_[b] >= 0;
    }
  }
  int vocab() const { return V_; }
  bool byte_complete() const { return byte_complete_; }
  const std::string& bytes_of(int32_t id) const { return bytes_of_[id]; }

  void segment(std::string_view text, std::vector<int32_t>& out) const {
    // Valid UTF-8 runs go to the tokenizer; invalid bytes are coded one by one.
    size_t i = 0;
    while (i < text.size()) {
      size_t j = i;
      while (j < text.size()) {
        const size_t n = utf8_sequence_length(text, j);
        if (n == 0) break;
        j += n;
      }
      if (j > i) run(text.substr(i, j - i), out);
      if (j < text.size()) single_byte((uint8_t)text[j++], out);
      i = j;
    }
  }

 private:
  // The whole run through the tokenizer; failing that, line by line; failing that, characters.
  void run(std::string_view text, std::vector<int32_t>& out) const {
    if (tokens(text, out)) return;
    for (size_t i = 0; i < text.size();) {
      const size_t nl = text.find('\n', i);
      const size_t end = nl == std::string_view::npos ? text.size() : nl + 1;
      const std::string_view line = text.substr(i, end - i);
      if (line.size() == text.size() || !tokens(line, out))
        for (size_t k = 0; k < line.size();) {
          const size_t n = utf8_sequence_length(line, k);
          auto it = by_bytes_.find(std::string(line.substr(k, n)));
          if (it != by_bytes_.end()) {
            out.push_back(it->second);
          } else {
            for (size_t b = 0; b < n; b++) single_byte((uint8_t)line[k + b], out);
          }
          k += n;
        }
      i = end;
    }
  }
  // Appends tok.encode(text) when its tokens decode back to text exactly.
  bool tokens(std::string_view text, std::vector<int32_t>& out) const {
    std::vector<int32_t> ids;
    try {
      ids = tok_.encode(text);
    } catch (const InputError&) {  // a character the vocabulary lacks
      return false;
    }
    size_t at = 0;
    for (int32_t id : ids) {
      if (id < 0 || id >= V_) return false;
      const std::string& b = bytes_of_[id];
      if (b.empty() || text.compare(at, b.size(), b) != 0) return false;
      at += b.size();
    }
    if (at != text.size()) return false;
    out.insert(out.end(), ids.begin(), ids.end());
    return true;
  }
  void single_byte(uint8_t b, std::vector<int32_t>& out) const {
    out.push_back(byte_token_[b] >= 0 ? byte_token_[b] : V_ + b);
  }

  const Tokenizer& tok_;
  int V_;
  std::vector<std::string> bytes_of_;
  std::unordered_map<std::string, int32_t> by_bytes_;
  int32_t byte_token_[256];
  bool byte_complete_ = true;
};

// ---- the model as a probability model ------------------------------------------------------------

// The integer frequencies of one position: V tokens then the escape; total kTotal.
void quantise(const float* logits, int V, uint32_t escape_freq, std::vector<double>& e,
              std::vector<uint32_t>& freq) {
  e.resize(V);
  freq.resize((size_t)V + 1);
  float mx = logits[0];
  int arg = 0;
  for (int i = 1; i < V; i++)
    if (logits[i] > mx) mx = logits[i], arg = i;
  double sum = 0;
  for (int i = 0; i < V; i++) sum += (e[i] = std::exp((double)logits[i] - (double)mx));
  const double budget = (double)(kTotal - (uint32_t)V - escape_freq);
  uint64_t used = escape_freq;
  for (int i = 0; i < V; i++) {
    freq[i] = 1 + (uint32_t)std::floor(e[i] / sum * budget);
    used += freq[i];
  }
  CR_CHECK(used <= kTotal, "quantised frequencies sum to {} > {}", used, kTotal);
  freq[arg] += (uint32_t)(kTotal - used);
  freq[V] = escape_freq;
}

// What one batch of chunks needs: per chunk its symbols (given to the encoder, produced by the
// decoder) and its coder.
struct ChunkJob {
  std::vector<int32_t> symbols;
  uint32_t n_symbols = 0;
  uint32_t escapes = 0;             // escapes coded so far
  RangeEncoder enc;
  std::vector<uint8_t> coded;       // the decoder's input
  std::unique_ptr<RangeDecoder> dec;
};

struct CodingSetup {
  int V = 0;              // tokenizer vocabulary (symbols >= V are escapes)
  int32_t start = 0;      // the token every chunk starts from (end-of-text)
  uint32_t escape = 0;    // 0: none possible (frequency 1), 1: adaptive (escape_freq)
};

// The escape's frequency before symbol `step` of a chunk (integer arithmetic: both sides agree).
uint32_t escape_freq(const CodingSetup& cs, const ChunkJob& j, uint32_t step) {
  if (cs.escape == 0) return 1;
  const uint64_t f = (2 * (uint64_t)j.escapes + 1) * kTotal / (2 * ((uint64_t)step + 1));
  return (uint32_t)std::clamp<uint64_t>(f, kTotal >> 20, kTotal / 8 * 7);
}

// Codes (or decodes) one batch of chunks side by side, one symbol each per step.
void code_batch(GPT& model, const CodingSetup& cs, std::vector<ChunkJob*>& jobs, bool encode) {
  const int B = (int)jobs.size(), T = model.config().block_size, Vp = model.config().padded_vocab();
  uint32_t steps = 0;
  for (ChunkJob* j : jobs) steps = std::max(steps, j->n_symbols);
  KVCache cache = model.make_cache(B);
  std::vector<std::vector<int32_t>> history(B, std::vector<int32_t>{cs.start});
  std::vector<int32_t> feed(B, cs.start);
  const float* logits = model.decode_batch(feed.data(), B, 1, cache);
  std::vector<std::vector<double>> scratch(B);
  std::vector<std::vector<uint32_t>> freq(B);
  for (uint32_t step = 0; step < steps; step++) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
      ChunkJob& j = *jobs[b];
      feed[b] = cs.start;  // a finished chunk reads end-of-text tokens until the batch ends
      if (step >= j.n_symbols) continue;
      quantise(logits + (size_t)b * Vp, cs.V, escape_freq(cs, j, step), scratch[b], freq[b]);
      const std::vector<uint32_t>& f = freq[b];
      int32_t s;
      if (encode) {
        s = j.symbols[step];
        const int sym = s < cs.V ? s : cs.V;
        uint64_t cum = 0;
        for (int i = 0; i < sym; i++) cum += f[i];
        j.enc.encode((uint32_t)cum, f[sym], kTotal);
      } else {
        const uint32_t slot = j.dec->slot(kTotal);
        uint64_t cum = 0;
        int sym = 0;
        while (cum + f[sym] <= slot) cum += f[sym++];
        j.dec->consume((uint32_t)cum, f[sym]);
        s = sym;
      }
      if (s >= cs.V) {  // an escape: the raw byte, uniform over 256 values
        j.escapes++;
        if (encode) {
          j.enc.encode((uint32_t)(s - cs.V) << (kTotalBits - 8), 1u << (kTotalBits - 8), kTotal);
        } else {
          const uint32_t byte = j.dec->slot(kTotal) >> (kTotalBits - 8);
          j.dec->consume(byte << (kTotalBits - 8), 1u << (kTotalBits - 8));
          s = cs.V + (int32_t)byte;
        }
      }
      if (!encode) j.symbols.push_back(s);
      feed[b] = s < cs.V ? s : cs.start;
    }
    if (step + 1 == steps) break;
    for (int b = 0; b < B; b++) history[b].push_back(feed[b]);
    if (cache.len < T) {
      logits = model.decode_batch(feed.data(), B, 1, cache);
      continue;
    }
    // The context is full: re-read the last T - S + 1 tokens of every sequence into a fresh
    // cache (the model has no positions past block_size), S = T / 2. Every token is then coded
    // with the context and position `chainrule score --stride S` scores it with.
    const int keep = T - std::max(1, T / 2) + 1;
    std::vector<int32_t> window((size_t)B * keep);
    for (int b = 0; b < B; b++)
      std::copy(history[b].end() - keep, history[b].end(), window.begin() + (size_t)b * keep);
    cache.len = 0;
    logits = model.decode_batch(window.data(), B, keep, cache);
  }
}

// ---- files ---------------------------------------------------------------------------------------

std::string read_input(const std::string& path) {
  std::string data;
  if (path == "-") {
    data.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    return data;
  }
  std::error_code ec;
  if (fs::exists(path, ec) && !fs::is_regular_file(path, ec))
    CR_INPUT_ERROR("{}: not a regular file (give a file, or - for stdin)", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) CR_INPUT_ERROR("{}: cannot open: {}", path, std::strerror(errno));
  data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (in.bad()) CR_INPUT_ERROR("{}: read failed", path);
  return data;
}

void check_output(const CompressOptions& opt) {
  if (opt.out == "-") return;
  if (opt.in != "-" && fs::exists(opt.out) && fs::equivalent(opt.in, opt.out))
    CR_INPUT_ERROR("{}: the output is the input file", opt.out);
  // The output replaces OUT by a rename: a device, FIFO or symlink there would be replaced, not
  // written through, so only a regular file may be overwritten (--force).
  const fs::file_status st = fs::symlink_status(opt.out);
  if (fs::exists(st) && !fs::is_regular_file(st))
    CR_INPUT_ERROR("{}: exists and is not a regular file (a directory, device, FIFO or symlink); "
                   "give a new file name, or - for stdout", opt.out);
  if (fs::exists(st) && !opt.force)
    CR_INPUT_ERROR("{}: exists (pass --force to overwrite)", opt.out);
  const fs::path dir = fs::path(opt.out).parent_path();
  if (!dir.empty() && !fs::is_directory(dir))
    CR_INPUT_ERROR("{}: no such directory {}", opt.out, dir.string());
}

// Without --force, an OUT that appeared while we worked is not replaced either.
void write_output(const std::string& path, const std::vector<std::string_view>& parts, bool force) {
  if (path != "-") return write_file_atomically(path, parts, /*replace=*/force);
  for (std::string_view p : parts)
    if (std::fwrite(p.data(), 1, p.size(), stdout) != p.size()) CR_INPUT_ERROR("stdout: write failed");
  if (std::fflush(stdout) != 0) CR_INPUT_ERROR("stdout: write failed");
}

class Writer {
 public:
  template <typename T>
  void put(T v) {
    s_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void bytes(const void* p, size_t n) { s_.append(static_cast<const char*>(p), n); }
  std::string& str() { return s_; }

 private:
  std::string s_;
};

class Reader {
 public:
  Reader(const std::string& data, std::string where) : d_(data), where_(std::move(where)) {}
  template <typename T>
  T get() {
    T v;
    bytes(&v, sizeof(T));
    return v;
  }
  void bytes(void* p, size_t n) {
    if (n > d_.size() - at_)
      CR_INPUT_ERROR("{}: truncated header ({} bytes; needs more than {})", where_, d_.size(), at_);
    std::memcpy(p, d_.data() + at_, n);
    at_ += n;
  }
  size_t at() const { return at_; }

 private:
  const std::string& d_;
  std::string where_;
  size_t at_ = 0;
};

struct Header {
  Digest model{}, tokenizer{};
  uint64_t size = 0, chunk_bytes = 0;
  uint32_t crc = 0, batch = 1, threads = 1, escape = 0;
  struct Chunk {
    uint32_t bytes = 0, symbols = 0, crc = 0;
    uint64_t coded = 0;
  };
  std::vector<Chunk> chunks;

  std::string serialize() const {
    Writer w;
    w.bytes(kMagic, sizeof(kMagic));
    w.put(kVersion);
    w.bytes(model.data(), model.size());
    w.bytes(tokenizer.data(), tokenizer.size());
    w.put(size), w.put(crc), w.put(chunk_bytes), w.put((uint64_t)chunks.size());
    w.put(batch), w.put(threads), w.put((uint32_t)kTotalBits), w.put(escape);
    for (const Chunk& c : chunks) w.put(c.bytes), w.put(c.symbols), w.put(c.crc), w.put(c.coded);
    w.put(crc32c(w.str().data(), w.str().size()));
    return w.str();
  }
  // Parses and checks the header at the start of data; returns its length.
  size_t parse(const std::string& data, const std::string& where);
};

size_t Header::parse(const std::string& data, const std::string& where) {
  Reader r(data, where);
  uint8_t magic[8];
  r.bytes(magic, 8);
  if (std::memcmp(magic, kMagic, 8) != 0)
    CR_INPUT_ERROR("{}: not a file made by `chainrule compress` (bad magic)", where);
  const auto version = r.get<uint32_t>();
  if (version != kVersion)
    CR_INPUT_ERROR("{}: format version {}; this chainrule reads version {}", where, version, kVersion);
  r.bytes(model.data(), model.size());
  r.bytes(tokenizer.data(), tokenizer.size());
  size = r.get<uint64_t>(), crc = r.get<uint32_t>(), chunk_bytes = r.get<uint64_t>();
  const auto n = r.get<uint64_t>();
  batch = r.get<uint32_t>(), threads = r.get<uint32_t>();
  const auto total_bits = r.get<uint32_t>();
  escape = r.get<uint32_t>();
  // Everything but the table has been read: a damaged count must not drive a huge allocation.
  if (n > data.size() / 20)
    CR_INPUT_ERROR("{}: damaged header ({} chunks in a file of {} bytes)", where, n, data.size());
  chunks.resize(n);
  for (Chunk& c : chunks)
    c.bytes = r.get<uint32_t>(), c.symbols = r.get<uint32_t>(), c.crc = r.get<uint32_t>(),
    c.coded = r.get<uint64_t>();
  const uint32_t expect = crc32c(data.data(), r.at());
  if (r.get<uint32_t>() != expect)
    CR_INPUT_ERROR("{}: damaged header (CRC32C mismatch)", where);
  uint64_t bytes = 0, coded = 0;
  for (const Chunk& c : chunks) bytes += c.bytes, coded += c.coded;
  bool symbols_fit = true;  // a symbol covers at least one byte
  for (const Chunk& c : chunks) symbols_fit = symbols_fit && c.symbols <= c.bytes && c.symbols > 0;
  if (total_bits != (uint32_t)kTotalBits || batch < 1 || batch > kMaxBatchFlag || threads < 1 ||
      threads > kMaxThreads || bytes != size || escape > 1 || !symbols_fit)
    CR_INPUT_ERROR("{}: inconsistent header (sizes or coding parameters)", where);
  if (coded != data.size() - r.at())
    CR_INPUT_ERROR("{}: {} bytes of coded data, the header lists {} (truncated or extended file)",
                   where, data.size() - r.at(), coded);
  return r.at();
}

struct Coding {
  LoadedModel lm;
  Tokenizer tok;
  CodingSetup cs;
  Digest model_hash{}, tok_hash{};
};

Coding load_coding(const CompressOptions& opt) {
  Coding c{load_trained_model(opt.model), Tokenizer::byte_level(), {}, {}, {}};
  c.tok = find_tokenizer(c.lm, opt.data_dir);
  if (c.tok.vocab_size() > c.lm.model->config().vocab_size)
    CR_INPUT_ERROR("tokenizer vocabulary {} exceeds the model's {}", c.tok.vocab_size(),
                   c.lm.model->config().vocab_size);
  c.cs.V = c.tok.vocab_size();
  c.cs.start = std::max(c.tok.eot_id(), 0);
  c.model_hash = model_digest(*c.lm.model);
  c.tok_hash = tokenizer_digest(c.tok);
  return c;
}

// The batch size: at most kMaxBatch chunks and kCacheBudget bytes of KV cache.
int batch_for(const ModelConfig& mc, size_t chunks, int asked) {
  if (asked > 0) return asked;
  const size_t per_seq = 2 * sizeof(float) * (size_t)mc.n_layer * mc.block_size * mc.kv_heads() * mc.head_size();
  const size_t fit = std::max<size_t>(1, kCacheBudget / per_seq);
  return (int)std::max<size_t>(1, std::min({chunks, (size_t)kMaxBatch, fit}));
}

// Where reports go: stdout, unless the coded data goes there.
std::FILE* report_stream(const CompressOptions& opt) { return opt.out == "-" ? stderr : stdout; }

// Codes every chunk, batch by batch. Progress: a line redrawn on stderr when it is a terminal,
// else a line every 30 s on the report stream.
void code_all(Coding& c, std::vector<ChunkJob>& jobs, const std::vector<uint32_t>& chunk_bytes,
              int batch, bool encode, std::FILE* report) {
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t done_bytes = 0, total_bytes = 0;
  for (uint32_t b : chunk_bytes) total_bytes += b;
  const bool tty = ::isatty(::fileno(stderr));
  double last_line = 0;
  for (size_t i = 0; i < jobs.size(); i += batch) {
    std::vector<ChunkJob*> group;
    for (size_t k = i; k < std::min(jobs.size(), i + batch); k++) {
      group.push_back(&jobs[k]);
      done_bytes += chunk_bytes[k];
    }
    code_batch(*c.lm.model, c.cs, group, encode);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const bool last = i + batch >= jobs.size();
    const std::string text = fmt::format(
        "{}: {} of {} chunks, {:.2f} of {:.2f} MB, {:.3f} MB/s", encode ? "compress" : "decompress",
        std::min(jobs.size(), i + batch), jobs.size(), done_bytes / 1e6, total_bytes / 1e6,
        done_bytes / 1e6 / std::max(s, 1e-9));
    if (tty) {
      fmt::print(stderr, "\r{}\x1b[K{}", text, last ? "\n" : "");
    } else if (!last && s - last_line >= 30) {
      fmt::print(report, "{}\n", text);
      std::fflush(report);
      last_line = s;
    }
  }
}

}  // namespace

int run_compress(const CompressOptions& opt) {
  if (opt.chunk_bytes < 16 || opt.chunk_bytes > (int64_t(1) << 30))
    CR_INPUT_ERROR("--chunk-bytes {}: expected 16 .. 2^30", opt.chunk_bytes);
  if (opt.batch < 0 || opt.batch > (int)kMaxBatchFlag)
    CR_INPUT_ERROR("--batch {}: expected 0 .. {}", opt.batch, kMaxBatchFlag);
  if (opt.threads < 0 || opt.threads > (int)kMaxThreads)
    CR_INPUT_ERROR("--threads {}: expected 0 .. {}", opt.threads, kMaxThreads);
  if (opt.threads > 0) omp_set_num_threads(opt.threads);
  check_output(opt);
  const std::string data = read_input(opt.in);
  Coding c = load_coding(opt);
  const Segmenter seg(c.tok);
  Header h;
  h.model = c.model_hash, h.tokenizer = c.tok_hash;
  h.size = data.size(), h.crc = crc32c(data.data(), data.size());
  h.chunk_bytes = (uint64_t)opt.chunk_bytes;
  h.threads = (uint32_t)omp_get_max_threads();
  h.escape = c.cs.escape = seg.byte_complete() ? 0 : 1;
  // Chunk boundaries, each moved back to the start of a UTF-8 character (at most 3 bytes).
  std::vector<size_t> starts;
  for (size_t at = 0; at < data.size();) {
    starts.push_back(at);
    size_t end = std::min(data.size(), at + (size_t)opt.chunk_bytes);
    for (int k = 0; k < 3 && end < data.size() && end > at + 1 && ((uint8_t)data[end] & 0xC0) == 0x80; k++) end--;
    at = end;
  }
  std::vector<ChunkJob> jobs(starts.size());
  std::vector<uint32_t> sizes(starts.size());
  h.chunks.resize(starts.size());
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < starts.size(); i++) {
    const size_t end = i + 1 < starts.size() ? starts[i + 1] : data.size();
    const std::string_view text(data.data() + starts[i], end - starts[i]);
    seg.segment(text, jobs[i].symbols);
    jobs[i].n_symbols = (uint32_t)jobs[i].symbols.size();
    sizes[i] = (uint32_t)text.size();
    h.chunks[i] = {sizes[i], jobs[i].n_symbols, crc32c(text.data(), text.size()), 0};
  }
  h.batch = (uint32_t)batch_for(c.lm.model->config(), jobs.size(), opt.batch);
  code_all(c, jobs, sizes, (int)h.batch, /*encode=*/true, report_stream(opt));
  std::vector<std::string_view> parts(1);
  uint64_t coded = 0;
  for (size_t i = 0; i < jobs.size(); i++) {
    const std::vector<uint8_t>& b = jobs[i].enc.finish();
    h.chunks[i].coded = b.size();
    coded += b.size();
    parts.emplace_back(reinterpret_cast<const char*>(b.data()), b.size());
  }
  const std::string header = h.serialize();
  parts[0] = header;
  write_output(opt.out, parts, opt.force);
  const uint64_t total = header.size() + coded;
  fmt::print(report_stream(opt), "compress: {} -> {} bytes ({} chunks, {} header): {:.4f} bits/byte{}\n",
             data.size(), total, jobs.size(), header.size(),
             data.empty() ? 0.0 : 8.0 * total / data.size(),
             data.empty() ? "" : fmt::format(", {:.4f} without the header", 8.0 * coded / data.size()));
  return 0;
}

int run_decompress(const CompressOptions& opt) {
  check_output(opt);
  const std::string data = read_input(opt.in);
  Header h;
  size_t at = h.parse(data, opt.in);
  Coding c = load_coding(opt);
  if (h.model != c.model_hash)
    CR_INPUT_ERROR("{} was compressed with model sha256 {}, but {} is sha256 {}", opt.in,
                   hex(h.model).substr(0, 16), opt.model, hex(c.model_hash).substr(0, 16));
  if (h.tokenizer != c.tok_hash)
    CR_INPUT_ERROR("{} was compressed with tokenizer sha256 {}, but this one is sha256 {}", opt.in,
                   hex(h.tokenizer).substr(0, 16), hex(c.tok_hash).substr(0, 16));
  c.cs.escape = h.escape;
  if ((int)h.threads != omp_get_max_threads()) {
    fmt::print(report_stream(opt),
               "decompress: using {} threads, as the compressing process did (the GEMM's "
               "rounding depends on the thread count)\n", h.threads);
    omp_set_num_threads((int)h.threads);
  }
  std::vector<ChunkJob> jobs(h.chunks.size());
  std::vector<uint32_t> sizes(h.chunks.size());
  for (size_t i = 0; i < jobs.size(); i++) {
    const Header::Chunk& k = h.chunks[i];
    jobs[i].n_symbols = k.symbols;
    jobs[i].coded.assign(data.begin() + (ptrdiff_t)at, data.begin() + (ptrdiff_t)(at + k.coded));
    jobs[i].dec = std::make_unique<RangeDecoder>(jobs[i].coded.data(), jobs[i].coded.size());
    jobs[i].symbols.reserve(k.symbols);
    sizes[i] = k.bytes;
    at += k.coded;
  }
  code_all(c, jobs, sizes, (int)h.batch, /*encode=*/false, report_stream(opt));
  const Segmenter seg(c.tok);
  std::string out;
  out.reserve(h.size);
  for (size_t i = 0; i < jobs.size(); i++) {
    const size_t start = out.size();
    for (int32_t s : jobs[i].symbols) {
      if (s < c.cs.V)
        out += seg.bytes_of(s);
      else
        out += (char)(uint8_t)(s - c.cs.V);
    }
    if (out.size() - start != h.chunks[i].bytes || crc32c(out.data() + start, out.size() - start) != h.chunks[i].crc)
      CR_INPUT_ERROR("{}: chunk {} of {} decodes to bytes that fail its CRC32C: the file is damaged, "
                     "or this machine's arithmetic differs from the compressing one (identical "
                     "decoding needs the same chainrule binary and CPU type)",
                     opt.in, i, jobs.size());
  }
  if (crc32c(out.data(), out.size()) != h.crc) CR_INPUT_ERROR("{}: whole-file CRC32C mismatch", opt.in);
  write_output(opt.out, {out}, opt.force);
  return 0;
}

}  // namespace cr
