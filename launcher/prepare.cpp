// `chainrule prepare`: text -> tokenizer + train/val token shards (+ loss masks) in a data dir.
//
// The pipeline streams, so memory stays flat whatever the corpus size:
//   DocumentReader (core/data/text_source.h: files, .jsonl, .gz/.zst -> batches of pieces)
//   -> encode the pieces of a batch on all cores (order kept), while the next batch is read
//   -> [EOT] + tokens of every document, in order -> blocks of 1024 tokens -> train or val
//   -> shards of --shard-tokens tokens (llm.c .bin; NAME.mask beside for --format pairs)
//   written into a temporary directory, committed into --out only when everything succeeded.
//
// The split is by blocks of 1024 tokens spread evenly through the token stream (block b goes to
// val when floor((b+1)F) > floor(bF)), so train and val see the same mix of sources rather than
// val being one file's tail.
//
// Safety (issue 14): nothing in --out changes until the new dataset is complete and fsynced. The
// files prepare owns in --out are those the old dataset.json lists (and, for a dataset.json of
// the older prepare that lists none, its train_NNNNNN.bin / val_NNNNNN.bin); only those are ever
// replaced or removed. A train/val shard in --out that no dataset.json lists would be read as
// part of the new dataset, so prepare refuses to start; a file of another name (gpt2_124M.bin)
// is left alone.
#include <omp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <regex>
#include <set>

#include <fcntl.h>

#include "core/common/error.h"
#include "core/common/log.h"
#include "core/data/loader.h"
#include "core/data/shard.h"
#include "core/data/split_files.h"
#include "core/data/text_source.h"
#include "core/data/tokenizer.h"
#include "launcher/commands.h"
#include "launcher/progress.h"

namespace cr {

namespace fs = std::filesystem;

namespace {

constexpr size_t kSplitBlock = 1024;

// ---- options ---------------------------------------------------------------------------------

bool is_pairs(const PrepareOptions& o) { return o.format == "pairs"; }

void check_options(const PrepareOptions& o) {
  const std::string& t = o.tokenizer;
  if (!(t == "byte" || t == "char" || t == "sentencepiece" || t.rfind("hf:", 0) == 0 ||
        t.rfind("sp:", 0) == 0))
    CR_INPUT_ERROR("--tokenizer {}: expected byte or char, hf:PATH/tokenizer.json, sp:PATH.model "
                   "or sentencepiece (with --vocab-size)", t);
  if (!(o.val_fraction > 0 && o.val_fraction < 1))
    CR_INPUT_ERROR("--val-fraction {}: expected a number in (0, 1)", o.val_fraction);
  if (t == "sentencepiece" && o.vocab_size <= 0)
    CR_INPUT_ERROR("--tokenizer sentencepiece needs --vocab-size N (e.g. 32000)");
  if (t != "sentencepiece" && o.vocab_size != 0)
    CR_INPUT_ERROR("--vocab-size {}: only --tokenizer sentencepiece trains a vocabulary (got "
                   "--tokenizer {})", o.vocab_size, t);
  if (o.shard_tokens < 1 || o.shard_tokens > INT32_MAX)
    CR_INPUT_ERROR("--shard-tokens {}: expected 1 .. {} (the shard header's int32 count)",
                   o.shard_tokens, INT32_MAX);
  if (o.format != "text" && o.format != "pairs")
    CR_INPUT_ERROR("--format {}: expected text or pairs", o.format);
  if (o.piece_bytes < 64 || o.piece_bytes > (1ll << 30))
    CR_INPUT_ERROR("--piece-bytes {}: expected 64 .. 2^30", o.piece_bytes);
  if (o.threads < 0) CR_INPUT_ERROR("--threads {}: expected >= 0 (0: all cores)", o.threads);
  if (o.name.empty() || o.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV"
                                                 "WXYZ0123456789._-") != std::string::npos)
    CR_INPUT_ERROR("--name '{}': expected letters, digits, '.', '_' or '-'", o.name);
  // The loader decides a shard's split by the components of its name (split_files.h), so the
  // prefix itself must not say train or val: "train_set_val_000000.bin" would be both.
  if (split_of_shard_name(o.name + ".bin") != ShardSplit::None)
    CR_INPUT_ERROR("--name '{}': a name component 'train' or 'val' would confuse the splits",
                   o.name);
}

// ---- signals: an interrupted prepare cleans up like a failed one ----------------------------

volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_signal(int sig) { g_signal = sig; }

class SignalGuard {
 public:
  SignalGuard() {
    for (int s : {SIGINT, SIGTERM, SIGHUP}) old_[s] = std::signal(s, on_signal);
  }
  ~SignalGuard() {
    for (int s : {SIGINT, SIGTERM, SIGHUP}) std::signal(s, old_[s]);
  }
  static void check() {
    if (g_signal)
      CR_INPUT_ERROR("interrupted by signal {} ({}); --out is as it was", (int)g_signal,
                     strsignal(g_signal));
  }

 private:
  using Handler = void (*)(int);
  Handler old_[NSIG] = {};
};

// ---- output: a temporary directory committed into --out ------------------------------------

void fsync_path(const fs::path& p, bool dir) {
  const int fd = ::open(p.c_str(), dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) CR_INPUT_ERROR("{}: cannot open for fsync: {}", p.string(), std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) CR_INPUT_ERROR("{}: fsync failed: {}", p.string(), std::strerror(errno));
}

bool pid_alive(const std::string& name) {  // name: "...prepare-tmp-<pid>-XXXXXX"
  const auto k = name.rfind("prepare-tmp-");
  const long pid = std::atol(name.c_str() + k + 12);
  return pid > 0 && (::kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

class OutputDir {
 public:
  explicit OutputDir(const std::string& out);
  ~OutputDir();
  const fs::path& temp() const { return temp_; }
  // Moves the files (names in temp(); dataset.json last) into --out, removes the old dataset's
  // files that the new one does not replace, and fsyncs.
  void commit(const std::vector<std::string>& files);

 private:
  void read_ownership();
  void remove_stale_temps(const fs::path& dir, const std::string& stem);
  fs::path out_, temp_;
  bool existed_ = false, committed_ = false;
  std::set<std::string> owned_;          // files of --out the old dataset.json claims
  std::vector<fs::path> created_parents_;  // created for a new --out; removed on failure
};

OutputDir::OutputDir(const std::string& out_arg) {
  out_ = fs::absolute(fs::path(out_arg)).lexically_normal();
  if (out_.filename().empty()) out_ = out_.parent_path();  // "dir/" -> "dir"
  std::error_code ec;
  existed_ = fs::exists(out_, ec);
  if (existed_ && !fs::is_directory(out_, ec))
    CR_INPUT_ERROR("--out {}: exists and is not a directory", out_arg);
  const std::string tmp_stem = fmt::format("prepare-tmp-{}-", (long)::getpid());
  std::string pattern;
  if (existed_) {
    read_ownership();
    remove_stale_temps(out_, ".prepare-tmp-");
    pattern = (out_ / ("." + tmp_stem + "XXXXXX")).string();
  } else {
    for (fs::path p = out_.parent_path(); !p.empty() && !fs::exists(p, ec); p = p.parent_path())
      created_parents_.push_back(p);
    fs::create_directories(out_.parent_path(), ec);
    if (ec) CR_INPUT_ERROR("--out {}: cannot create its parent directory: {}", out_arg, ec.message());
    remove_stale_temps(out_.parent_path(), "." + out_.filename().string() + ".prepare-tmp-");
    // Beside --out, so that one rename(2) on the same file system makes the whole dir appear.
    pattern = (out_.parent_path() / ("." + out_.filename().string() + "." + tmp_stem + "XXXXXX"))
                  .string();
  }
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data()))
    CR_INPUT_ERROR("--out {}: cannot create a temporary directory there: {}", out_arg,
                   std::strerror(errno));
  temp_ = buf.data();
  // mkdtemp makes it 0700; the data dir it becomes gets what mkdir would give it.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::chmod(temp_.c_str(), 0777 & ~mask);
}

// Reads which files of an existing --out belong to the dataset prepare wrote there before, and
// refuses an --out holding train/val shards that no dataset.json claims.
void OutputDir::read_ownership() {
  const fs::path info = out_ / kDatasetInfoFile;
  std::error_code ec;
  if (fs::exists(info, ec)) {
    nlohmann::json j;
    try {
      std::ifstream in(info);
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception&) {
      CR_INPUT_ERROR("--out {}: its dataset.json is not valid JSON; prepare replaces only a "
                     "dataset it can read (move the directory's files away)", out_.string());
    }
    owned_.insert(kDatasetInfoFile);
    if (j.is_object() && j.contains("files") && j["files"].is_array()) {
      for (const auto& f : j["files"])
        if (f.is_string() && f.get<std::string>().find('/') == std::string::npos)
          owned_.insert(f.get<std::string>());
    } else {  // the older prepare: train_000000.bin, val_000000.bin, ... and no file list
      static const std::regex legacy("(train|val)_[0-9]{6}\\.bin");
      for (const auto& e : fs::directory_iterator(out_))
        if (std::regex_match(e.path().filename().string(), legacy))
          owned_.insert(e.path().filename().string());
    }
  }
  for (const auto& e : fs::directory_iterator(out_)) {
    const std::string n = e.path().filename().string();
    if (!e.is_regular_file() || owned_.count(n) || e.path().extension() != ".bin") continue;
    bool shard = true;
    try {
      shard = split_of_shard_name(n) != ShardSplit::None;
    } catch (const InputError&) {  // both train and val: the loader would reject the dir
    }
    if (shard)
      CR_INPUT_ERROR("--out {} holds {}, a train/val token shard that prepare did not write "
                     "(no dataset.json there lists it); it would mix into the new dataset: "
                     "move it away or choose another --out", out_.string(), n);
  }
}

// Removes temporary directories of earlier prepare runs that were killed (their pid is gone).
void OutputDir::remove_stale_temps(const fs::path& dir, const std::string& stem) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(stem, 0) != 0 || !e.is_directory() || e.is_symlink() || pid_alive(n)) continue;
    log::info("removing {}, left by an interrupted prepare", e.path().string());
    fs::remove_all(e.path(), ec);
  }
}

OutputDir::~OutputDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(temp_, ec);  // holds only what this run wrote
  for (const auto& p : created_parents_) fs::remove(p, ec);  // only if still empty
}

void OutputDir::commit(const std::vector<std::string>& files) {
  std::error_code ec;
  for (const auto& f : files) fsync_path(temp_ / f, false);
  fsync_path(temp_, true);
  if (!existed_) {
    if (fs::exists(out_, ec))
      CR_INPUT_ERROR("--out {}: appeared while prepare ran; the new dataset is not moved there",
                     out_.string());
    if (::rename(temp_.c_str(), out_.c_str()) != 0)
      CR_INPUT_ERROR("--out {}: cannot rename {} to it: {}", out_.string(), temp_.string(),
                     std::strerror(errno));
    committed_ = true;
    fsync_path(out_.parent_path(), true);
    return;
  }
  // Nothing foreign may be overwritten: check every name before moving any.
  for (const auto& f : files)
    if (fs::exists(out_ / f, ec) && !owned_.count(f))
      CR_INPUT_ERROR("--out {} holds {}, which prepare did not write and would overwrite: move "
                     "it away or choose another --name", out_.string(), f);
  const std::set<std::string> fresh(files.begin(), files.end());
  // From here --out changes: new shards first, then the old dataset's leftovers go, and the new
  // dataset.json lands last, so a reader sees the old description until the end.
  for (const auto& f : files) {
    if (f == kDatasetInfoFile) continue;
    if (::rename((temp_ / f).c_str(), (out_ / f).c_str()) != 0)
      CR_INPUT_ERROR("{}: cannot move into --out: {}", (out_ / f).string(), std::strerror(errno));
  }
  for (const auto& f : owned_)
    if (!fresh.count(f) && f != kDatasetInfoFile) fs::remove(out_ / f, ec);
  if (::rename((temp_ / kDatasetInfoFile).c_str(), (out_ / kDatasetInfoFile).c_str()) != 0)
    CR_INPUT_ERROR("{}: cannot move into --out: {}", (out_ / kDatasetInfoFile).string(),
                   std::strerror(errno));
  fsync_path(out_, true);
  fs::remove_all(temp_, ec);
  committed_ = true;
}

// ---- token stream -> train/val splits -> shards ------------------------------------------

struct SplitCounts {
  uint64_t tokens = 0, bytes = 0, counted_tokens = 0, counted_bytes = 0;
  std::vector<std::string> shards;  // token shard names, in order
};

// One split's sequence of shards: NAME_<split>_000000.bin, ... (and .mask).
class SplitWriter {
 public:
  SplitWriter(fs::path dir, std::string prefix, std::string split, ShardWriter::Kind kind,
              size_t shard_tokens, bool masks)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), split_(std::move(split)), kind_(kind),
        shard_tokens_(shard_tokens), masks_(masks) {}

  void push(const int32_t* tok, const uint8_t* nbytes, const uint8_t* mask, size_t n) {
    while (n > 0) {
      if (!tokens_ || tokens_->size() == shard_tokens_) roll();
      const size_t k = std::min(n, shard_tokens_ - tokens_->size());
      tokens_->append(tok, k);
      if (masks_) mask_->append(mask, k);
      c_.tokens += k;
      for (size_t i = 0; i < k; i++) {
        c_.bytes += nbytes[i];
        if (mask && mask[i]) c_.counted_tokens++, c_.counted_bytes += nbytes[i];
      }
      tok += k, nbytes += k, n -= k;
      if (mask) mask += k;
    }
  }
  void finish() {
    if (tokens_) tokens_->close();
    if (mask_) mask_->close();
  }
  const SplitCounts& counts() const { return c_; }
  std::vector<std::string> files() const {
    std::vector<std::string> f;
    for (const auto& s : c_.shards) {
      f.push_back(s);
      if (masks_) f.push_back(fs::path(loss_mask_path(s)).string());
    }
    return f;
  }

 private:
  void roll() {
    finish();
    const std::string name = fmt::format("{}_{}_{:06d}.bin", prefix_, split_, c_.shards.size());
    tokens_ = std::make_unique<ShardWriter>((dir_ / name).string(), kind_);
    if (masks_)
      mask_ = std::make_unique<ShardWriter>(loss_mask_path((dir_ / name).string()),
                                            ShardWriter::Kind::Mask);
    c_.shards.push_back(name);
  }
  fs::path dir_;
  std::string prefix_, split_;
  ShardWriter::Kind kind_;
  size_t shard_tokens_;
  bool masks_;
  std::unique_ptr<ShardWriter> tokens_, mask_;
  SplitCounts c_;
};

// Routes the token stream: block b of 1024 tokens goes to val when floor((b+1)F) > floor(bF).
class SplitRouter {
 public:
  SplitRouter(double val_fraction, SplitWriter& train, SplitWriter& val)
      : f_(val_fraction), train_(train), val_(val) {}
  void push(const int32_t* tok, const uint8_t* nbytes, const uint8_t* mask, size_t n) {
    while (n > 0) {
      const uint64_t b = pos_ / kSplitBlock;
      const size_t k = std::min<size_t>(n, kSplitBlock - pos_ % kSplitBlock);
      const bool is_val = std::floor((b + 1) * f_) > std::floor(b * f_);
      (is_val ? val_ : train_).push(tok, nbytes, mask, k);
      tok += k, nbytes += k, n -= k, pos_ += k;
      if (mask) mask += k;
    }
  }
  uint64_t tokens() const { return pos_; }

 private:
  double f_;
  SplitWriter &train_, &val_;
  uint64_t pos_ = 0;
};

// ---- encoding on all cores -------------------------------------------------------------------

struct Encoded {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> nbytes, mask;
};

// Encodes every piece of the batch in parallel, then lays the stream out in piece order:
// [EOT] before a document's first piece, mask 1 on a completion's tokens.
void encode_batch(const Tokenizer& tok, const TextBatch& batch, int threads, bool masks,
                  std::vector<Encoded>& parts, Encoded& stream) {
  const long n = (long)batch.pieces.size();
  parts.resize(n);
  std::exception_ptr error;
  std::atomic<bool> failed{false};
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
  for (long i = 0; i < n; i++) {
    if (failed.load(std::memory_order_relaxed)) continue;
    try {
      const TextPiece& p = batch.pieces[i];
      parts[i].tokens = tok.encode(std::string_view(batch.text).substr(p.begin, p.end - p.begin),
                                   &parts[i].nbytes);
    } catch (...) {
#pragma omp critical
      if (!error) error = std::current_exception();
      failed = true;
    }
  }
  if (error) std::rethrow_exception(error);
  stream.tokens.clear(), stream.nbytes.clear(), stream.mask.clear();
  const int32_t eot = tok.eot_id();
  for (long i = 0; i < n; i++) {
    const TextPiece& p = batch.pieces[i];
    if (p.doc_start) {
      stream.tokens.push_back(eot);
      stream.nbytes.push_back(0);
      if (masks) stream.mask.push_back(0);
    }
    const Encoded& e = parts[i];
    stream.tokens.insert(stream.tokens.end(), e.tokens.begin(), e.tokens.end());
    stream.nbytes.insert(stream.nbytes.end(), e.nbytes.begin(), e.nbytes.end());
    if (masks) stream.mask.insert(stream.mask.end(), e.tokens.size(), p.counted ? 1 : 0);
  }
}

// ---- tokenizers that need the corpus -------------------------------------------------------

// char: a first streaming pass collects the distinct code points (as the char tokenizer reads
// them: invalid UTF-8 bytes as Latin-1), in parallel over the pieces of each batch.
Tokenizer char_tokenizer(const std::vector<std::string>& files, const DocumentOptions& dopt,
                         int threads) {
  DocumentReader reader(files, dopt);
  RateProgress progress("char vocabulary:", reader.total_file_bytes());
  std::vector<std::vector<uint8_t>> seen(threads, std::vector<uint8_t>(0x110000, 0));
  TextBatch batch;
  while (reader.next(batch)) {
    SignalGuard::check();
    const long n = (long)batch.pieces.size();
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
    for (long i = 0; i < n; i++) {
      const TextPiece& p = batch.pieces[i];
      auto& mine = seen[omp_get_thread_num()];
      for (uint32_t c : utf8_codepoints(std::string_view(batch.text).substr(p.begin, p.end - p.begin)))
        mine[c] = 1;
    }
    progress.update(reader.file_bytes_read(), 0);
  }
  std::vector<uint32_t> cps;
  for (uint32_t c = 0; c < 0x110000; c++) {
    bool any = false;
    for (const auto& s : seen) any = any || s[c];
    if (any) cps.push_back(c);
  }
  if (cps.empty()) CR_INPUT_ERROR("the inputs hold no text");
  return Tokenizer::char_level_from_codepoints(cps);
}

// sentencepiece: trains on a sample of about kSpSampleBytes spread evenly over the corpus (a
// batch is fed while the fed share trails the read share), so training memory and time do not
// grow with the corpus; SentencePiece further samples max_sentences lines of it.
constexpr uint64_t kSpSampleBytes = 256ull << 20;

Tokenizer sentencepiece_tokenizer(const std::vector<std::string>& files,
                                  const DocumentOptions& dopt, int vocab_size, int threads) {
  DocumentReader reader(files, dopt);
  const uint64_t total = reader.total_file_bytes();
  uint64_t fed = 0;
  TextBatch batch;
  size_t piece = 0;
  bool have = false;
  auto next_text = [&](std::string& text) -> bool {
    for (;;) {
      SignalGuard::check();
      if (have && piece < batch.pieces.size()) {
        const TextPiece& p = batch.pieces[piece++];
        text.assign(batch.text, p.begin, p.end - p.begin);
        fed += text.size();
        return true;
      }
      // The next batch that keeps the sample spread: skip batches while ahead of the read share.
      do {
        have = reader.next(batch);
        piece = 0;
      } while (have && total > kSpSampleBytes &&
               (double)fed > (double)kSpSampleBytes * reader.file_bytes_read() / total);
      if (!have || fed >= kSpSampleBytes) return false;
    }
  };
  SentencePieceTrainOptions so;
  so.num_threads = threads;
  log::info("training a SentencePiece model of {} pieces on up to {} MB of the corpus",
            vocab_size, kSpSampleBytes >> 20);
  return Tokenizer::train_sentencepiece(next_text, vocab_size, so);
}

Tokenizer make_tokenizer(const PrepareOptions& o, const std::vector<std::string>& files,
                         const DocumentOptions& dopt, int threads) {
  Tokenizer tok = o.tokenizer == "char"            ? char_tokenizer(files, dopt, threads)
                  : o.tokenizer == "sentencepiece" ? sentencepiece_tokenizer(files, dopt,
                                                                             o.vocab_size, threads)
                                                   : Tokenizer::from_spec(o.tokenizer);
  CR_CHECK(tok.eot_id() >= 0, "tokenizer {} has no end-of-text token", tok.name());
  return tok;
}

// Whether cutting a document after "X\n" before Y keeps its tokens (text_source.cpp, cut 1):
// not for SentencePiece, whose pieces may join a '\n' to what follows, nor for a ByteLevel
// pre-tokenizer with add_prefix_space, which would put a space before Y. Cuts before a word's
// space stay exact for both (a text starting with a space gets no prefix space).
bool newline_cuts_exact(const Tokenizer& tok) {
  if (tok.kind() == Tokenizer::Kind::SP) return false;
  if (tok.kind() != Tokenizer::Kind::HF) return true;
  const auto j = nlohmann::json::parse(tok.hf_tokenizer_json(), nullptr, false);
  bool prefix_space = false;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& p) {
    if (!p.is_object()) return;
    if (p.value("add_prefix_space", false)) prefix_space = true;
    if (p.contains("pretokenizers") && p["pretokenizers"].is_array())
      for (const auto& q : p["pretokenizers"]) walk(q);
  };
  if (j.is_object() && j.contains("pre_tokenizer")) walk(j["pre_tokenizer"]);
  return !prefix_space;
}

// ---- dataset.json ----------------------------------------------------------------------------

nlohmann::json split_json(const SplitCounts& c, bool masks) {
  nlohmann::json j = {{"tokens", c.tokens}, {"bytes", c.bytes}, {"shards", c.shards}};
  if (masks) {
    j["counted_tokens"] = c.counted_tokens;
    j["counted_bytes"] = c.counted_bytes;
  }
  return j;
}

void write_json(const fs::path& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(1) << "\n";
  out.close();
  if (!out) CR_INPUT_ERROR("{}: write failed", path.string());
}

std::vector<std::string> default_inputs(const PrepareOptions& o) {
  if (!o.inputs.empty()) return o.inputs;
  if (!fs::is_directory(kDefaultCorpus))
    CR_INPUT_ERROR("no --input given and the default corpus {} is missing "
                   "(apt-get install fortunes)", kDefaultCorpus);
  return {kDefaultCorpus};
}

}  // namespace

int run_prepare(const PrepareOptions& opt) {
  check_options(opt);
  SignalGuard signals;
  const std::vector<std::string> files = list_input_files(default_inputs(opt));
  if (files.empty()) CR_INPUT_ERROR("--input: no files found in {}", fmt::join(opt.inputs, ", "));
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  const bool masks = is_pairs(opt);
  DocumentOptions dopt;
  dopt.format = masks ? DocumentOptions::Format::Pairs : DocumentOptions::Format::Text;
  dopt.text_field = opt.text_field;
  dopt.prompt_field = opt.prompt_field;
  dopt.completion_field = opt.completion_field;
  dopt.piece_bytes = (size_t)opt.piece_bytes;
  dopt.batch_bytes = std::max<size_t>(16u << 20, 16 * dopt.piece_bytes);

  OutputDir out(opt.out);  // checks --out before the long work, changes nothing yet
  const Tokenizer tok = make_tokenizer(opt, files, dopt, threads);
  dopt.newline_cuts = newline_cuts_exact(tok);
  const auto kind = ShardWriter::tokens_for_vocab(tok.vocab_size());
  SplitWriter train(out.temp(), opt.name, "train", kind, (size_t)opt.shard_tokens, masks);
  SplitWriter val(out.temp(), opt.name, "val", kind, (size_t)opt.shard_tokens, masks);
  SplitRouter router(opt.val_fraction, train, val);

  DocumentReader reader(files, dopt);
  RateProgress progress("prepare:", reader.total_file_bytes());
  TextBatch batch, next;
  std::vector<Encoded> parts;
  Encoded stream;
  bool have = reader.next(batch);
  while (have) {
    SignalGuard::check();
    // Read the next batch while this one is encoded: reading and decompressing are serial.
    auto ahead = std::async(std::launch::async, [&] { return reader.next(next); });
    try {
      encode_batch(tok, batch, threads, masks, parts, stream);
    } catch (...) {
      ahead.wait();
      throw;
    }
    have = ahead.get();
    router.push(stream.tokens.data(), stream.nbytes.data(), masks ? stream.mask.data() : nullptr,
                stream.tokens.size());
    std::swap(batch, next);
    progress.update(reader.file_bytes_read(), router.tokens());
  }
  train.finish();
  val.finish();
  progress.clear();
  const double seconds = progress.seconds();
  if (router.tokens() == 0) CR_INPUT_ERROR("the inputs hold no text");
  if (val.counts().tokens == 0 || train.counts().tokens == 0)
    CR_INPUT_ERROR("corpus of {} tokens is too small to split with --val-fraction {}",
                   router.tokens(), opt.val_fraction);

  std::vector<std::string> written = train.files();
  for (const auto& f : val.files()) written.push_back(f);
  nlohmann::json info = {
      {"tokenizer", tok.to_json()},
      {"train", split_json(train.counts(), masks)},
      {"val", split_json(val.counts(), masks)},
      {"format", opt.format},
      {"loss_mask", masks},
      {"documents", reader.documents()},
      {"shard_version", kind == ShardWriter::Kind::Tokens16 ? 1 : 2},
      {"name", opt.name},
      {"files", written},
  };
  write_json(out.temp() / kDatasetInfoFile, info);
  written.push_back(kDatasetInfoFile);
  SignalGuard::check();
  out.commit(written);

  log::info("read {} text files ({:.2f} MB, {} documents); skipped {} binary files",
            reader.files_used(), reader.text_bytes() / 1e6, reader.documents(),
            reader.files_skipped());
  if (reader.hard_cuts() > 0)
    log::info("{} pieces of large documents had no safe cut within --piece-bytes {} and were cut "
              "at a character boundary (tokens near such a cut may differ from whole-document "
              "encoding)", reader.hard_cuts(), opt.piece_bytes);
  log::info("{} tokenizer, vocabulary {}: {} train tokens, {} val tokens in {} + {} shards "
            "(version {}) -> {}", tok.name(), tok.vocab_size(), train.counts().tokens,
            val.counts().tokens, train.counts().shards.size(), val.counts().shards.size(),
            kind == ShardWriter::Kind::Tokens16 ? 1 : 2, opt.out);
  log::info("throughput: {:.2f} MB/s of text, {} tokens/s ({:.1f} MB in {}, {} threads)",
            reader.text_bytes() / 1e6 / std::max(seconds, 1e-9),
            format_count(router.tokens() / std::max(seconds, 1e-9)), reader.text_bytes() / 1e6,
            format_duration(seconds), threads);
  return 0;
}

}  // namespace cr
