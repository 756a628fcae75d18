// Reading `chainrule prepare`'s inputs as a stream of documents in bounded memory: the first
// stage of the data pipeline (inputs -> documents -> tokens -> shards, launcher/prepare.cpp).
//
// Inputs are files and directories (walked recursively, in sorted path order). A file is read
// through its compression, named by its extension: `.gz` (gzip, zlib; concatenated members
// allowed) or `.zst` (zstd frames, libzstd's streaming API); what is left of its name then
// says the format: `.jsonl` is JSON Lines (one document per line, or one prompt/completion
// pair), anything else is plain text (the whole file is one document).
//
// Documents come out in batches of about `batch_bytes` of text, as pieces: a document too large
// to encode in one go (a 2 GB text file) is cut into pieces of about `piece_bytes` at points
// where cutting cannot change the tokens (see safe_cut in text_source.cpp), so every core can
// encode a piece of it. Memory: one batch of text, plus one line for .jsonl (a line is parsed
// whole), whatever the size of the inputs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cr {

// One file as a stream of bytes, decompressed on the fly (.gz, .zst).
class ByteStream {
 public:
  explicit ByteStream(const std::string& path);  // InputError naming the file if unreadable
  ~ByteStream();
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;
  // Reads up to n bytes into buf; 0 only at the end. Throws InputError naming the file for
  // corrupt or truncated compressed data.
  size_t read(char* buf, size_t n);
  uint64_t file_bytes_read() const;  // bytes of the file itself (compressed) consumed so far

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Expands files and directories into the input files, in order: a file as given; a directory's
// regular files, recursively, sorted by path; symbolic links inside directories and names
// starting with '.' are skipped (Debian's fortunes ships each text twice, once as a symlink
// *.u8). Throws InputError for an input that does not exist.
std::vector<std::string> list_input_files(const std::vector<std::string>& inputs);

// A piece of one document's text: [begin, end) in TextBatch::text.
struct TextPiece {
  size_t begin = 0, end = 0;
  bool doc_start = false;  // the first piece of a document: prepare puts the EOT before it
  bool counted = false;    // a completion (pairs): its tokens get loss mask 1
};

struct TextBatch {
  std::string text;
  std::vector<TextPiece> pieces;
  void clear() {
    text.clear();
    pieces.clear();
  }
};

struct DocumentOptions {
  enum class Format { Text, Pairs };
  Format format = Format::Text;
  std::string text_field = "text";  // .jsonl, Text format: the document's field
  std::string prompt_field = "prompt", completion_field = "completion";  // Pairs format
  size_t batch_bytes = 16u << 20;  // text per batch (a batch ends after the piece crossing it)
  size_t piece_bytes = 1u << 20;   // target size of the pieces a large document is cut into
  bool newline_cuts = true;        // see safe_cut (false for SentencePiece)
};

class DocumentReader {
 public:
  DocumentReader(std::vector<std::string> files, DocumentOptions options);
  ~DocumentReader();
  // Replaces batch with the next pieces; false when the inputs are exhausted (batch empty).
  // Throws InputError naming file:line for a .jsonl line that is not a JSON object, lacks the
  // field, or holds a non-string; and naming the file for unreadable or corrupt input.
  bool next(TextBatch& batch);

  uint64_t total_file_bytes() const { return total_file_bytes_; }  // sizes on disk
  uint64_t file_bytes_read() const;  // of the above, consumed so far (for a progress bar)
  uint64_t text_bytes() const { return text_bytes_; }  // document text produced so far
  uint64_t documents() const { return documents_; }
  int files_used() const { return files_used_; }
  int files_skipped() const { return files_skipped_; }  // binary (a NUL in the first 64 KiB)
  // Pieces cut at a UTF-8 boundary for want of a safe cut within piece_bytes (a long run of
  // whitespace, or of text without single spaces or newlines): their tokens may differ from
  // those of the whole document near the cut.
  uint64_t hard_cuts() const { return hard_cuts_; }

 private:
  bool open_next_file();
  void close_file();
  void read_text(TextBatch& batch);
  void read_jsonl(TextBatch& batch);
  bool fill(size_t want);  // carry_ holds at least `want` bytes, or the file is at its end
  void add_document_text(TextBatch& batch, const std::string& text, bool doc_start, bool counted);
  void jsonl_line(TextBatch& batch, const std::string& line);

  std::vector<std::string> files_;
  DocumentOptions opt_;
  size_t next_file_ = 0;
  std::unique_ptr<ByteStream> in_;
  std::string path_;      // the open file
  bool jsonl_ = false;    // its format
  bool eof_ = false;      // in_ is exhausted
  bool in_document_ = false;  // a Text file: its first piece has been emitted
  uint64_t line_no_ = 0;
  std::string carry_;     // bytes read from in_ and not yet emitted
  size_t carry_pos_ = 0;  // consumed prefix of carry_
  uint64_t hard_cuts_ = 0;
  uint64_t total_file_bytes_ = 0, done_file_bytes_ = 0, text_bytes_ = 0, documents_ = 0;
  int files_used_ = 0, files_skipped_ = 0;
};

// The largest cut point p in (0, limit] (limit + 1 < text.size()) such that the tokens of
// text[0:p] followed by those of text[p:] are the tokens of text; 0 if there is none (the
// caller then cuts at a UTF-8 boundary, see utf8_boundary). newline_cuts = false keeps to the
// cuts that are safe for SentencePiece too (before a word's space); see text_source.cpp.
size_t safe_cut(std::string_view text, size_t limit, bool newline_cuts = true);
// The largest p <= limit that does not split a UTF-8 sequence (p > 0 when limit >= 4).
size_t utf8_boundary(std::string_view text, size_t limit);

}  // namespace cr
