#include "core/data/text_source.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/common/error.h"

namespace cr {

namespace fs = std::filesystem;

// ---- ByteStream: a file, decompressed by its extension ---------------------------------------

namespace {

enum class Codec { None, Gzip, Zstd };

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Codec codec_of(const std::string& path) {
  if (ends_with(path, ".gz")) return Codec::Gzip;
  if (ends_with(path, ".zst")) return Codec::Zstd;
  return Codec::None;
}

// The file name without its compression extension: "a.jsonl.gz" -> "a.jsonl".
std::string inner_name(const std::string& path) {
  if (ends_with(path, ".gz")) return path.substr(0, path.size() - 3);
  if (ends_with(path, ".zst")) return path.substr(0, path.size() - 4);
  return path;
}

constexpr size_t kInChunk = 1 << 20;  // compressed bytes read per call

}  // namespace

struct ByteStream::Impl {
  std::string path;
  Codec codec = Codec::None;
  std::FILE* f = nullptr;
  uint64_t consumed = 0;  // file bytes handed to the decoder (or returned, uncompressed)
  std::vector<char> in;   // compressed input
  size_t in_pos = 0, in_len = 0;
  bool file_eof = false;
  bool in_frame = false;  // inside a gzip member / zstd frame (its end not seen yet)
  z_stream z{};
  bool z_init = false;
  ZSTD_DStream* zs = nullptr;

  ~Impl() {
    if (z_init) inflateEnd(&z);
    if (zs) ZSTD_freeDStream(zs);
    if (f) std::fclose(f);
  }

  // Refills `in` when it is used up; false at the end of the file.
  bool refill() {
    if (in_pos < in_len) return true;
    if (file_eof) return false;
    in_len = std::fread(in.data(), 1, in.size(), f);
    in_pos = 0;
    if (in_len < in.size()) {
      if (std::ferror(f)) CR_INPUT_ERROR("{}: read error: {}", path, std::strerror(errno));
      file_eof = true;
    }
    return in_len > 0;
  }

  size_t read_gzip(char* buf, size_t n) {
    size_t out = 0;
    while (out < n) {
      if (!refill()) {
        if (in_frame) CR_INPUT_ERROR("{}: truncated gzip data (the stream ends inside a member)", path);
        break;
      }
      z.next_in = reinterpret_cast<Bytef*>(in.data() + in_pos);
      z.avail_in = (uInt)(in_len - in_pos);
      z.next_out = reinterpret_cast<Bytef*>(buf + out);
      z.avail_out = (uInt)std::min(n - out, (size_t)UINT32_MAX);
      const uInt avail_before = z.avail_out;
      in_frame = true;
      const int rc = inflate(&z, Z_NO_FLUSH);
      const size_t used = (in_len - in_pos) - z.avail_in;
      in_pos += used;
      consumed += used;
      out += avail_before - z.avail_out;
      if (rc == Z_STREAM_END) {  // gzip allows members one after another (cat a.gz b.gz)
        in_frame = false;
        inflateReset(&z);
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        CR_INPUT_ERROR("{}: not valid gzip data: {}", path, z.msg ? z.msg : zError(rc));
      }
    }
    return out;
  }

  size_t read_zstd(char* buf, size_t n) {
    ZSTD_outBuffer ob{buf, n, 0};
    while (ob.pos < n) {
      if (!refill()) {
        if (in_frame) CR_INPUT_ERROR("{}: truncated zstd data (the stream ends inside a frame)", path);
        break;
      }
      ZSTD_inBuffer ib{in.data() + in_pos, in_len - in_pos, 0};
      const size_t rc = ZSTD_decompressStream(zs, &ob, &ib);
      if (ZSTD_isError(rc))
        CR_INPUT_ERROR("{}: not valid zstd data: {}", path, ZSTD_getErrorName(rc));
      in_pos += ib.pos;
      consumed += ib.pos;
      in_frame = rc != 0;  // 0: a frame ended exactly here
    }
    return ob.pos;
  }
};

ByteStream::ByteStream(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.path = path;
  s.codec = codec_of(path);
  s.f = std::fopen(path.c_str(), "rb");
  if (!s.f) CR_INPUT_ERROR("{}: cannot read input file: {}", path, std::strerror(errno));
  if (s.codec == Codec::None) return;
  s.in.resize(kInChunk);
  if (s.codec == Codec::Gzip) {
    // 15 + 32: the largest window, and zlib detects the gzip (or zlib) header itself.
    if (inflateInit2(&s.z, 15 + 32) != Z_OK) CR_INPUT_ERROR("{}: zlib init failed", path);
    s.z_init = true;
  } else {
    s.zs = ZSTD_createDStream();
    if (!s.zs || ZSTD_isError(ZSTD_initDStream(s.zs))) CR_INPUT_ERROR("{}: zstd init failed", path);
  }
}

ByteStream::~ByteStream() = default;

size_t ByteStream::read(char* buf, size_t n) {
  Impl& s = *impl_;
  if (n == 0) return 0;
  if (s.codec == Codec::Gzip) return s.read_gzip(buf, n);
  if (s.codec == Codec::Zstd) return s.read_zstd(buf, n);
  const size_t got = std::fread(buf, 1, n, s.f);
  if (got < n && std::ferror(s.f)) CR_INPUT_ERROR("{}: read error: {}", s.path, std::strerror(errno));
  s.consumed += got;
  return got;
}

uint64_t ByteStream::file_bytes_read() const { return impl_->consumed; }

// ---- input files -----------------------------------------------------------------------------

std::vector<std::string> list_input_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<std::string> here;
      auto it = fs::recursive_directory_iterator(in, fs::directory_options::none, ec);
      if (ec) CR_INPUT_ERROR("--input {}: cannot list the directory: {}", in, ec.message());
      for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) CR_INPUT_ERROR("--input {}: cannot list the directory: {}", in, ec.message());
        const std::string name = it->path().filename().string();
        if (!name.empty() && name[0] == '.') {  // hidden: .git, editor swap files, our temps
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file() && !it->is_symlink()) here.push_back(it->path().string());
      }
      std::sort(here.begin(), here.end());
      files.insert(files.end(), here.begin(), here.end());
    } else if (fs::is_regular_file(in, ec)) {
      files.push_back(in);
    } else {
      CR_INPUT_ERROR("--input {}: no such file or directory", in);
    }
  }
  return files;
}

// ---- cut points ------------------------------------------------------------------------------
//
// A large document is encoded in pieces, so the cut points must not change the tokens.
//
// byte and char: any cut at a code-point boundary is exact.
//
// hf (byte-level BPE): BPE merges never cross a pre-token, so a cut is exact when no pre-token
// of the whole text crosses it and the pre-tokens on each side come out the same when matched
// alone. The pre-token patterns are GPT-2's
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// and Llama 3's
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
// We cut at p in two cases, X and Y being non-whitespace code points:
//  (1) "X\n|Y": the whitespace run between X and Y is exactly one '\n'. In both patterns a
//      pre-token holding a non-whitespace character can only start with it or with one
//      character before it that is not '\n' (" ?", "[^\r\n...]?"), so Y starts a pre-token;
//      a pre-token holding '\n' holds no non-whitespace after it. So a pre-token boundary
//      lies at p. Alone, the left side ends in "\n" where the whole text had "\nY": the
//      alternatives that look past '\n' are "(?!\S)" (GPT-2: fails before Y, so "\s+" takes the
//      same single "\n"; at the end it succeeds with the same "\n") and the greedy "[\r\n]*" /
//      "[\r\n]+" (Llama 3: they stop at Y or at the end alike). A longer whitespace run is not
//      a cut: GPT-2 splits " \n" before Y as " " + "\n" but at the end of a text as " \n".
//  (2) "X| Y": one space between non-whitespace characters. The space starts Y's pre-token
//      in both patterns (" ?\p{L}+" etc.), or is a pre-token of its own ("\s+" before a
//      digit or a character neither pattern lets it join); X's pre-token cannot take a
//      trailing space. Alone, the right side starts with the same " Y".
// Hugging Face's added tokens are matched before the pre-tokenizer; one holding a '\n' or a
// lone space between non-whitespace could straddle a cut, which no common tokenizer has.
//
// sp (SentencePiece, as trained by prepare: no dummy prefix, whitespace kept): its pieces never
// cross a word boundary, i.e. a space that starts a word, so cut (2) is exact; a '\n' is not
// a word boundary to it, so cut (1) is not offered (newline_cuts = false).
//
// "Whitespace" here is a superset of Unicode White_Space (what \s means in these patterns):
// every C0/C1 control, U+00A0, U+1680, U+180E, U+2000..U+200F, U+2028..U+202F, U+205F, U+2060,
// U+3000, U+FEFF; being conservative only removes cut points. Invalid UTF-8 is never cut at.

namespace {

bool unsafe_cp(uint32_t c) {
  return c <= 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0x1680 || c == 0x180E ||
         (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) || c == 0x205F ||
         c == 0x2060 || c == 0x3000 || c == 0xFEFF;
}

// The code point starting at text[i] (its length in *len), or UINT32_MAX if invalid/truncated.
uint32_t cp_at(std::string_view t, size_t i, size_t* len) {
  const auto b0 = (unsigned char)t[i];
  if (b0 < 0x80) return *len = 1, b0;
  int n = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 0;
  if (n == 0 || b0 >= 0xF8 || i + n > t.size()) return UINT32_MAX;
  uint32_t c = b0 & (0x7F >> n);
  for (int k = 1; k < n; k++) {
    const auto b = (unsigned char)t[i + k];
    if ((b & 0xC0) != 0x80) return UINT32_MAX;
    c = (c << 6) | (b & 0x3F);
  }
  *len = n;
  return c;
}

// The code point ending just before text[end] (end > 0), or UINT32_MAX if invalid.
uint32_t cp_before(std::string_view t, size_t end) {
  size_t start = end - 1, len = 0;
  while (start > 0 && end - start < 4 && ((unsigned char)t[start] & 0xC0) == 0x80) start--;
  const uint32_t c = cp_at(t, start, &len);
  return start + len == end ? c : UINT32_MAX;
}

bool solid_at(std::string_view t, size_t i) {  // a non-whitespace code point starts at i
  size_t len = 0;
  const uint32_t c = i < t.size() ? cp_at(t, i, &len) : UINT32_MAX;
  return c != UINT32_MAX && !unsafe_cp(c);
}

bool solid_before(std::string_view t, size_t end) {  // ... ends just before `end`
  if (end == 0) return false;
  const uint32_t c = cp_before(t, end);
  return c != UINT32_MAX && !unsafe_cp(c);
}

}  // namespace

size_t safe_cut(std::string_view t, size_t limit, bool newline_cuts) {
  if (t.size() < 3) return 0;
  limit = std::min(limit, t.size() - 2);
  for (size_t p = limit; p >= 2; p--) {
    const char c = t[p];
    if (c == ' ' && solid_before(t, p) && solid_at(t, p + 1)) return p;  // cut (2)
    if (newline_cuts && t[p - 1] == '\n' && solid_at(t, p) && solid_before(t, p - 1))
      return p;  // cut (1)
  }
  return 0;
}

size_t utf8_boundary(std::string_view t, size_t limit) {
  limit = std::min(limit, t.size());
  size_t p = limit;
  while (p > 0 && limit - p < 3 && p < t.size() && ((unsigned char)t[p] & 0xC0) == 0x80) p--;
  return p;
}

// ---- DocumentReader --------------------------------------------------------------------------

namespace {
constexpr size_t kSniffBytes = 64 << 10;  // binary detection: a NUL in the first 64 KiB
}

DocumentReader::DocumentReader(std::vector<std::string> files, DocumentOptions options)
    : files_(std::move(files)), opt_(std::move(options)) {
  for (const auto& f : files_) {
    std::error_code ec;
    const auto n = fs::file_size(f, ec);
    if (!ec) total_file_bytes_ += n;
  }
}

DocumentReader::~DocumentReader() = default;

uint64_t DocumentReader::file_bytes_read() const {
  return done_file_bytes_ + (in_ ? in_->file_bytes_read() : 0);
}

bool DocumentReader::fill(size_t want) {
  if (carry_pos_ > 0 && carry_pos_ >= carry_.size() / 2) {  // keep the buffer from growing
    carry_.erase(0, carry_pos_);
    carry_pos_ = 0;
  }
  while (carry_.size() - carry_pos_ < want && !eof_) {
    const size_t old = carry_.size();
    // Grow in steps: `want` may be huge (--piece-bytes 1 GiB) for a small file.
    const size_t ask = std::clamp(want - (old - carry_pos_), (size_t)1 << 20, (size_t)16 << 20);
    carry_.resize(old + ask);
    const size_t got = in_->read(carry_.data() + old, ask);
    carry_.resize(old + got);
    if (got == 0) eof_ = true;
  }
  return carry_.size() - carry_pos_ >= want;
}

// Opens the next input file that is not binary; false when none is left.
bool DocumentReader::open_next_file() {
  while (next_file_ < files_.size()) {
    path_ = files_[next_file_++];
    close_file();
    in_ = std::make_unique<ByteStream>(path_);
    carry_.clear();
    carry_pos_ = 0;
    eof_ = false;
    in_document_ = false;
    line_no_ = 0;
    jsonl_ = ends_with(inner_name(path_), ".jsonl");
    if (opt_.format == DocumentOptions::Format::Pairs && !jsonl_)
      CR_INPUT_ERROR("{}: --format pairs reads .jsonl files (one {{\"{}\": ..., \"{}\": ...}} "
                     "object a line), not plain text", path_, opt_.prompt_field,
                     opt_.completion_field);
    fill(kSniffBytes);
    const size_t sniff = std::min(carry_.size(), kSniffBytes);
    if (std::memchr(carry_.data(), '\0', sniff)) {  // e.g. the fortunes package's .dat indexes
      files_skipped_++;
      continue;
    }
    files_used_++;
    return true;
  }
  close_file();
  return false;
}

void DocumentReader::close_file() {
  if (in_) done_file_bytes_ += in_->file_bytes_read();
  in_.reset();
}

// Appends one document's text (or its part) as pieces of about piece_bytes, cut safely.
void DocumentReader::add_document_text(TextBatch& batch, const std::string& text, bool doc_start,
                                       bool counted) {
  std::string_view rest(text);
  do {
    size_t cut = rest.size();
    if (rest.size() > opt_.piece_bytes + opt_.piece_bytes / 2) {
      cut = safe_cut(rest, opt_.piece_bytes, opt_.newline_cuts);
      if (cut == 0) hard_cuts_++, cut = utf8_boundary(rest, opt_.piece_bytes);
      if (cut == 0) cut = opt_.piece_bytes;
    }
    TextPiece pc;
    pc.begin = batch.text.size();
    batch.text.append(rest.substr(0, cut));
    pc.end = batch.text.size();
    pc.doc_start = doc_start;
    pc.counted = counted;
    batch.pieces.push_back(pc);
    doc_start = false;
    rest.remove_prefix(cut);
  } while (!rest.empty());
  text_bytes_ += text.size();
}

// A plain-text file is one document, read piece by piece so that it may be of any size.
void DocumentReader::read_text(TextBatch& batch) {
  const size_t piece = opt_.piece_bytes;
  while (batch.text.size() < opt_.batch_bytes) {
    fill(piece + 8);  // safe_cut looks one code point past the limit
    std::string_view avail(carry_.data() + carry_pos_, carry_.size() - carry_pos_);
    size_t cut = avail.size();
    if (!eof_ || avail.size() > piece + piece / 2) {
      cut = safe_cut(avail, piece, opt_.newline_cuts);
      if (cut == 0) hard_cuts_++, cut = utf8_boundary(avail, piece);
      if (cut == 0) cut = std::min(piece, avail.size());
    }
    if (cut > 0) {
      TextPiece pc;
      pc.begin = batch.text.size();
      batch.text.append(avail.substr(0, cut));
      pc.end = batch.text.size();
      pc.doc_start = !in_document_;
      batch.pieces.push_back(pc);
      if (!in_document_) documents_++;
      in_document_ = true;
      carry_pos_ += cut;
      text_bytes_ += cut;
    }
    if (eof_ && carry_pos_ == carry_.size()) {  // the file is done (an empty one adds nothing)
      close_file();
      return;
    }
  }
}

void DocumentReader::jsonl_line(TextBatch& batch, const std::string& line) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) return;  // blank lines
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    if (auto k = what.find("parse error"); k != std::string::npos) what = what.substr(k);
    CR_INPUT_ERROR("{}:{}: not valid JSON: {}", path_, line_no_, what);
  }
  if (!j.is_object())
    CR_INPUT_ERROR("{}:{}: expected a JSON object, got a {}", path_, line_no_, j.type_name());
  auto field = [&](const std::string& key, const char* flag) -> std::string {
    auto it = j.find(key);
    if (it == j.end())
      CR_INPUT_ERROR("{}:{}: no \"{}\" field (choose it with {})", path_, line_no_, key, flag);
    if (!it->is_string())
      CR_INPUT_ERROR("{}:{}: field \"{}\" is a {}, expected a string", path_, line_no_, key,
                     it->type_name());
    return it->get<std::string>();
  };
  if (opt_.format == DocumentOptions::Format::Pairs) {
    const std::string prompt = field(opt_.prompt_field, "--prompt-field");
    const std::string completion = field(opt_.completion_field, "--completion-field");
    add_document_text(batch, prompt, true, false);
    add_document_text(batch, completion, false, true);
  } else {
    const std::string text = field(opt_.text_field, "--text-field");
    if (text.empty()) return;  // an empty document would be a lone EOT
    add_document_text(batch, text, true, false);
  }
  documents_++;
}

void DocumentReader::read_jsonl(TextBatch& batch) {
  while (batch.text.size() < opt_.batch_bytes) {
    size_t nl;
    while ((nl = carry_.find('\n', carry_pos_)) == std::string::npos && !eof_)
      fill(carry_.size() - carry_pos_ + (1 << 20));  // a line longer than what is buffered
    const bool last = nl == std::string::npos;
    if (last && carry_pos_ == carry_.size()) {
      close_file();
      return;
    }
    const size_t end = last ? carry_.size() : nl;
    line_no_++;
    std::string line = carry_.substr(carry_pos_, end - carry_pos_);
    carry_pos_ = last ? end : end + 1;
    jsonl_line(batch, line);
  }
}

bool DocumentReader::next(TextBatch& batch) {
  batch.clear();
  while (batch.text.size() < opt_.batch_bytes) {
    if (!in_ && !open_next_file()) break;
    if (jsonl_)
      read_jsonl(batch);
    else
      read_text(batch);
  }
  return !batch.pieces.empty();
}

}  // namespace cr
