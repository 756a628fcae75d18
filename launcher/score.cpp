// `chainrule score`: the chain rule made visible. A model's log-loss on a text is the sum over
// its tokens of the surprisal -log2 q(x_i | x_<i); this command shows each term: the token's
// surprisal in bits, its rank among the model's predictions and the likeliest alternatives,
// as a terminal heat map, JSON lines, or a standalone HTML page.
//
// Windows follow the sliding-window perplexity of the Hugging Face guide ("Perplexity of
// fixed-length models"): for tokens x_0..x_{n-1} a window starting at b reads x[b..b+T-1]
// (T = block_size, shorter at the end) and predicts x[b+1..b+T]; each target is scored once, by
// the first window that reaches it, so every target but the first T has at least T - stride
// tokens of context. The next window starts at b + stride. With stride = T the windows are
// exactly `chainrule eval`'s, and the mean surprisal equals eval's bits/token.
//
// Output is streamed in token order (memory stays one micro-batch), so a long token shard can
// be scored to JSON lines without holding it.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/common/error.h"
#include "core/common/log.h"
#include "core/data/attention_mask.h"
#include "core/data/shard.h"
#include "core/data/utf8.h"
#include "core/io/atomic_file.h"
#include "launcher/commands.h"
#include "launcher/evaluate.h"

namespace cr {

namespace fs = std::filesystem;

namespace {

// ---- the colour scale ---------------------------------------------------------------------------
// A fixed scale of surprisal in bits, cool to hot, so that pictures of different texts and
// models compare. Finer at the low end, where a well-trained model spends most tokens. Each bin
// is an xterm 256-colour palette entry; the HTML page uses the same entries' RGB values.
struct HeatBin {
  double lo;   // bits >= lo (up to the next bin's lo)
  int xterm;   // 256-colour palette index (the 6x6x6 cube, 16..231)
};
constexpr HeatBin kHeat[] = {{0, 18},   {0.5, 25}, {1, 31},  {2, 36},   {3, 70},
                             {4, 142},  {6, 214},  {8, 202}, {11, 196}, {16, 163}};
constexpr int kHeatBins = (int)std::size(kHeat);

int heat_bin(double bits) {
  int k = 0;
  while (k + 1 < kHeatBins && bits >= kHeat[k + 1].lo) k++;
  return k;
}

struct Rgb {
  int r, g, b;
};
Rgb xterm_rgb(int index) {  // the 6x6x6 colour cube of the 256-colour palette
  static constexpr int kLevel[6] = {0, 95, 135, 175, 215, 255};
  const int c = index - 16;
  return {kLevel[c / 36], kLevel[c / 6 % 6], kLevel[c % 6]};
}
bool dark(int xterm) {  // white text on it reads better than black
  const Rgb c = xterm_rgb(xterm);
  return 0.299 * c.r + 0.587 * c.g + 0.114 * c.b < 140;
}
std::string bin_label(int k) {
  return k + 1 < kHeatBins ? fmt::format("{:g}-{:g}", kHeat[k].lo, kHeat[k + 1].lo)
                           : fmt::format("{:g}+", kHeat[k].lo);
}

// ---- text made safe to show ---------------------------------------------------------------------
bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Token text for a terminal or a web page: valid UTF-8 kept, bytes that are not (a partial
// character) and control characters shown as \xNN, a newline as a visible mark followed by the
// line break. html: also escapes &<>"'. newline_break = false (tooltips): the mark only.
std::string display_text(const std::string& s, bool html, bool newline_break = true) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = (unsigned char)s[i];
    const size_t n = utf8_sequence_length(s, i);
    if (c == '\n') {
      out += newline_break ? "\u21B5\n" : "\u21B5";
    } else if (n == 0 || (c < 0x20 && c != '\t') || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else if (html && c == '&') {
      out += "&amp;";
    } else if (html && c == '<') {
      out += "&lt;";
    } else if (html && c == '>') {
      out += "&gt;";
    } else if (html && c == '"') {
      out += "&quot;";
    } else if (html && c == '\'') {
      out += "&#39;";
    } else {
      out.append(s, i, n);
    }
    i += n == 0 ? 1 : n;
  }
  return out;
}

// ---- what is scored -----------------------------------------------------------------------------
struct ScoredToken {
  size_t i = 0;        // position in the input's token sequence
  int32_t token = 0;
  double bits = 0;     // -log2 q(token | context)
  int64_t rank = 0;    // 1 + the number of tokens the model found strictly likelier
  std::vector<std::pair<int32_t, double>> top;  // likeliest first: (token, bits)
};

struct Totals {
  uint64_t tokens = 0;
  double bits = 0;
  uint64_t bytes = 0;  // of the scored text
  uint64_t windows = 0;
  int context = 0, stride = 0;
  std::string source;
};

// -log2 softmax over the first V logits of one position, in float64: the target's bits, its
// rank and the top k alternatives. The logits past V are the model's vocabulary padding (and
// any ids a larger model has beyond this tokenizer): never a prediction of this text.
void score_row(const float* logits, int V, int32_t target, int k, ScoredToken& out) {
  double mx = -INFINITY;
  for (int j = 0; j < V; j++) mx = std::max(mx, (double)logits[j]);
  double sum = 0;
  for (int j = 0; j < V; j++) sum += std::exp((double)logits[j] - mx);
  const double log_z = mx + std::log(sum);
  const float lt = logits[target];
  int64_t above = 0;
  for (int j = 0; j < V; j++) above += logits[j] > lt;
  out.token = target;
  out.rank = above + 1;
  out.bits = (log_z - (double)lt) / std::log(2.0);
  // The top k by a bounded min-heap on (logit, -id): ties go to the lower id.
  std::vector<std::pair<float, int32_t>> heap;
  heap.reserve((size_t)k + 1);
  const auto worse = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  for (int j = 0; j < V && k > 0; j++) {
    if ((int)heap.size() == k && !worse({logits[j], j}, heap.front())) continue;
    heap.push_back({logits[j], j});
    std::push_heap(heap.begin(), heap.end(), worse);
    if ((int)heap.size() > k) std::pop_heap(heap.begin(), heap.end(), worse), heap.pop_back();
  }
  std::sort_heap(heap.begin(), heap.end(), worse);
  out.top.clear();
  for (const auto& [l, id] : heap) out.top.push_back({id, (log_z - (double)l) / std::log(2.0)});
}

// ---- outputs ------------------------------------------------------------------------------------
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void token(const ScoredToken& t) = 0;
  virtual void finish(const Totals& totals) = 0;
};

std::string fmt_or_na(double x, uint64_t denominator) {
  return denominator > 0 ? fmt::format("{:.4f}", x) : "n/a";
}

// The terminal heat map: each token's text on its bin's background (256-colour ANSI), or the
// plain text without colours; then the legend and the totals.
class TerminalSink : public Sink {
 public:
  TerminalSink(const Tokenizer& tok, bool color) : tok_(tok), color_(color) {}
  void token(const ScoredToken& t) override {
    const std::string text = tok_.decode_one(t.token);
    if (!color_) {
      fmt::print("{}", text);
      ends_newline_ = !text.empty() && text.back() == '\n';
      return;
    }
    const int x = kHeat[heat_bin(t.bits)].xterm;
    const std::string shown = display_text(text, false);
    // Colours end before each line break, so a background never runs on to the line's end.
    size_t start = 0;
    while (start <= shown.size()) {
      const size_t nl = shown.find('\n', start);
      const std::string piece = shown.substr(start, nl == std::string::npos ? nl : nl - start);
      if (!piece.empty())
        fmt::print("\x1b[48;5;{}m\x1b[38;5;{}m{}\x1b[0m", x, dark(x) ? 231 : 16, piece);
      if (nl == std::string::npos) break;
      fmt::print("\n");
      start = nl + 1;
    }
    ends_newline_ = !shown.empty() && shown.back() == '\n';
  }
  void finish(const Totals& s) override {
    if (s.tokens > 0 && !ends_newline_) fmt::print("\n");
    if (color_) {
      fmt::print("\nbits ");
      for (int k = 0; k < kHeatBins; k++) {
        const int x = kHeat[k].xterm;
        fmt::print("\x1b[48;5;{}m\x1b[38;5;{}m {} \x1b[0m", x, dark(x) ? 231 : 16, bin_label(k));
      }
      fmt::print("\n");
    }
    fmt::print("\ntokens        {}\n", s.tokens);
    fmt::print("total bits    {:.2f}\n", s.bits);
    fmt::print("bits/token    {}\n", fmt_or_na(s.bits / (double)s.tokens, s.tokens));
    fmt::print("nats/token    {}\n",
               fmt_or_na(s.bits * std::log(2.0) / (double)s.tokens, s.tokens));
    fmt::print("bits/byte     {} ({} bytes)\n", fmt_or_na(s.bits / (double)s.bytes, s.bytes),
               s.bytes);
    fmt::print("windows       {} of up to {} tokens, stride {}\n", s.windows, s.context, s.stride);
    std::fflush(stdout);
  }

 private:
  const Tokenizer& tok_;
  bool color_;
  bool ends_newline_ = false;
};

nlohmann::ordered_json summary_json(const Totals& s) {
  using J = nlohmann::ordered_json;
  const auto per = [](double x, uint64_t d) { return d > 0 ? J(x / (double)d) : J(); };
  return {{"type", "summary"},
          {"source", s.source},
          {"tokens", s.tokens},
          {"bits", s.bits},
          {"bits_per_token", per(s.bits, s.tokens)},
          {"nats_per_token", per(s.bits * std::log(2.0), s.tokens)},
          {"bytes", s.bytes},
          {"bits_per_byte", per(s.bits, s.bytes)},
          {"windows", s.windows},
          {"context", s.context},
          {"stride", s.stride}};
}

// A token's text for JSON: invalid UTF-8 bytes (part of a character) become U+FFFD, and the
// exact bytes are then given as hex in "bytes".
void put_text(nlohmann::ordered_json& j, const std::string& text) {
  j["text"] = text;
  if (!valid_utf8(text)) {
    std::string hex;
    for (unsigned char c : text) hex += fmt::format("{:02x}", c);
    j["bytes"] = hex;
  }
}
std::string dump(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// JSON lines: one object per token, then the summary.
class JsonSink : public Sink {
 public:
  explicit JsonSink(const Tokenizer& tok) : tok_(tok) {}
  void token(const ScoredToken& t) override {
    nlohmann::ordered_json j = {{"i", t.i}, {"token", t.token}};
    put_text(j, tok_.decode_one(t.token));
    j["bits"] = t.bits;
    j["rank"] = t.rank;
    nlohmann::ordered_json top = nlohmann::ordered_json::array();
    for (const auto& [id, bits] : t.top) {
      nlohmann::ordered_json a = {{"token", id}};
      put_text(a, tok_.decode_one(id));
      a["bits"] = bits;
      top.push_back(std::move(a));
    }
    j["top"] = std::move(top);
    fmt::print("{}\n", dump(j));
  }
  void finish(const Totals& s) override {
    fmt::print("{}\n", dump(summary_json(s)));
    std::fflush(stdout);
  }

 private:
  const Tokenizer& tok_;
};

std::string html_escape(const std::string& s) { return display_text(s, true, false); }

// The standalone HTML page: inline CSS only. Written in token order; the totals come last in
// the file and are placed above the text by CSS (flex order), so the page streams.
class HtmlSink : public Sink {
 public:
  HtmlSink(const Tokenizer& tok, const std::string& path, const std::string& source,
           const std::string& model)
      : tok_(tok), file_(path, "--html " + path) {
    std::string css;
    for (int k = 0; k < kHeatBins; k++) {
      const Rgb c = xterm_rgb(kHeat[k].xterm);
      css += fmt::format(".s{}{{background:#{:02x}{:02x}{:02x};color:{}}}\n", k, c.r, c.g, c.b,
                         dark(kHeat[k].xterm) ? "#fff" : "#000");
    }
    std::string legend;
    for (int k = 0; k < kHeatBins; k++)
      legend += fmt::format("<span class=\"s{}\">{}</span>", k, bin_label(k));
    fmt::print(file_.get(),
               "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
               "<title>chainrule score: {0}</title>\n<style>\n"
               "body{{display:flex;flex-direction:column;margin:1.2em;font:15px/1.4 sans-serif;"
               "background:#fff;color:#111}}\n"
               "header{{order:0}} #totals{{order:1}} #text{{order:2}}\n"
               "h1{{font-size:17px;margin:0 0 .4em}} h1 small{{font-weight:normal;color:#666}}\n"
               ".legend span{{display:inline-block;padding:1px 6px;font:12px monospace}}\n"
               "#totals{{align-self:flex-start;margin:.5em 0}}\n"
               "#totals td{{padding:0 1.5em 0 0;font:13px monospace}}\n"
               "#text{{white-space:pre-wrap;word-wrap:break-word;font:18px/1.5 monospace;"
               "border-top:1px solid #ccc;padding-top:.6em}}\n"
               "#text span{{padding:2px 0}}\n{1}</style></head>\n<body>\n"
               "<header><h1>Surprisal per token: {0} <small>(model {3})</small></h1>\n"
               "<div class=\"legend\">bits per token: {2}</div></header>\n<pre id=\"text\">",
               html_escape(source), css, legend, html_escape(model));
  }
  void token(const ScoredToken& t) override {
    std::string tip = fmt::format("{:.2f} bits, rank {}", t.bits, t.rank);
    if (!t.top.empty()) tip += "&#10;likeliest:";
    for (const auto& [id, bits] : t.top)
      tip += fmt::format("&#10;  \u201C{}\u201D {:.2f} bits", html_escape(tok_.decode_one(id)), bits);
    fmt::print(file_.get(), "<span class=\"s{}\" title=\"{}\">{}</span>", heat_bin(t.bits), tip,
               display_text(tok_.decode_one(t.token), true));
  }
  void finish(const Totals& s) override {
    const auto row = [&](const char* k, const std::string& v) {
      fmt::print(file_.get(), "<tr><td>{}</td><td>{}</td></tr>\n", k, v);
    };
    fmt::print(file_.get(), "</pre>\n<table id=\"totals\">\n");
    row("tokens", fmt::format("{}", s.tokens));
    row("total bits", fmt::format("{:.2f}", s.bits));
    row("bits/token", fmt_or_na(s.bits / (double)s.tokens, s.tokens));
    row("nats/token", fmt_or_na(s.bits * std::log(2.0) / (double)s.tokens, s.tokens));
    row("bits/byte",
        fmt::format("{} ({} bytes)", fmt_or_na(s.bits / (double)s.bytes, s.bytes), s.bytes));
    row("windows", fmt::format("{} of up to {} tokens, stride {}", s.windows, s.context, s.stride));
    fmt::print(file_.get(), "</table>\n</body></html>\n");
    file_.commit();
  }

 private:
  const Tokenizer& tok_;
  AtomicFile file_;
};

// ---- input --------------------------------------------------------------------------------------
// The tokens to score: a text's tokens after an end-of-text token (held here), or a token shard
// read in place (memory-mapped).
struct TokenInput {
  std::vector<int32_t> tokens;
  std::optional<TokenShard> shard;
  // Targets are x_1 .. x_{n-1}; a token's reported position is its x index less this: 1 when
  // the text's tokens follow our end-of-text token, so that the input's first token is 0.
  size_t offset = 0;
  uint64_t text_bytes = 0; // --input: the text's bytes; --tokens: counted while scoring
  std::string source;
  size_t size() const { return shard ? shard->size() : tokens.size(); }
  void read(size_t i, size_t n, int32_t* out) const {
    if (shard) shard->read(i, n, out);
    else std::copy(tokens.begin() + i, tokens.begin() + i + n, out);
  }
};

std::string read_input_text(const std::string& path) {
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    return ss.str();
  }
  if (fs::is_directory(path)) CR_INPUT_ERROR("--input {}: is a directory; expected a text file", path);
  std::ifstream f(path, std::ios::binary);
  if (!f) CR_INPUT_ERROR("--input {}: no such file or not readable", path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

TokenInput load_input(const ScoreOptions& opt, const Tokenizer& tok) {
  TokenInput in;
  const int V = tok.vocab_size();
  if (!opt.tokens.empty()) {
    in.source = opt.tokens;
    in.shard.emplace(opt.tokens);
    if (in.shard->size() < 2)
      CR_INPUT_ERROR("--tokens {}: {} token(s): nothing to score (the first token is context only)",
                     opt.tokens, in.shard->size());
    for (size_t i = 0; i < in.shard->size(); i++)
      if (const int32_t t = in.shard->token(i); t < 0 || t >= V)
        CR_INPUT_ERROR("--tokens {}: token id {} at position {} is outside the tokenizer's "
                       "vocabulary [0, {})", opt.tokens, t, i, V);
    return in;
  }
  in.source = opt.input == "-" ? "<stdin>" : opt.input;
  const std::string text = read_input_text(opt.input);
  if (text.empty()) CR_INPUT_ERROR("--input {}: empty: nothing to score", in.source);
  in.text_bytes = text.size();
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text);
  } catch (const InputError& e) {
    CR_INPUT_ERROR("--input {}: {}", in.source, e.message());
  }
  if (ids.empty()) CR_INPUT_ERROR("--input {}: encodes to no tokens: nothing to score", in.source);
  // A document starts after an end-of-text token, as in the training data, so every input token
  // is predicted. A legacy tokenizer without one leaves the first token as context only.
  if (tok.eot_id() >= 0) {
    in.tokens.push_back(tok.eot_id());
    in.offset = 1;
  } else {
    log::warn("this tokenizer has no end-of-text token: the first input token is context only");
    if (ids.size() < 2)
      CR_INPUT_ERROR("--input {}: one token and no end-of-text token to predict it from",
                     in.source);
  }
  in.tokens.insert(in.tokens.end(), ids.begin(), ids.end());
  return in;
}


// Progress on stderr for long inputs: only when stderr is a terminal that stdout is not
// (a heat map or JSON on the same terminal is its own progress), and only after a second.
class ScoreProgress {
 public:
  explicit ScoreProgress(uint64_t total)
      : total_(total), on_(::isatty(2) && !::isatty(1)), start_(std::chrono::steady_clock::now()) {}
  ~ScoreProgress() {
    if (shown_) fmt::print(stderr, "\r\x1b[K"), std::fflush(stderr);
  }
  void update(uint64_t done) {
    if (!on_) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (s < 1 || s - last_ < 0.25) return;
    last_ = s;
    fmt::print(stderr, "\r\x1b[Kscoring {}/{} tokens ({:.0f}%), {:.0f} tokens/s", done, total_,
               100.0 * done / total_, done / s);
    std::fflush(stderr);
    shown_ = true;
  }

 private:
  uint64_t total_;
  bool on_, shown_ = false;
  std::chrono::steady_clock::time_point start_;
  double last_ = -1;
};

// ---- the windows --------------------------------------------------------------------------------
struct Window {
  size_t start;  // b: reads x[b .. b+len-1], predicts x[b+1 .. b+len]
  int len;
  int first;     // the first position t in the window whose target is scored here
};

// The windows over n >= 2 tokens that score targets x_1 .. x_{n-1} once each (see the top), in
// closed form: window w starts at w * stride; every window before the last is full (T), so
// window w >= 1 begins scoring where window w - 1 stopped, at position T - stride.
struct WindowPlan {
  size_t n;
  int T, stride;
  size_t count() const {
    return n - 1 <= (size_t)T ? 1 : 1 + (n - 1 - T + stride - 1) / stride;
  }
  Window at(size_t w) const {
    const size_t b = w * stride;
    return {b, (int)std::min<size_t>(T, n - 1 - b), w == 0 ? 0 : T - stride};
  }
};

}  // namespace

int run_score(const ScoreOptions& opt) {
  if (opt.micro_batch < 1)
    CR_INPUT_ERROR("--micro-batch {}: expected a positive integer", opt.micro_batch);
  if (opt.top < 0) CR_INPUT_ERROR("--top {}: expected 0 or more alternatives", opt.top);
  if (opt.color != "auto" && opt.color != "always" && opt.color != "never")
    CR_INPUT_ERROR("--color {}: expected auto, always or never", opt.color);
  LoadedModel lm = load_trained_model(opt.model);
  GPT& model = *lm.model;
  const ModelConfig& mc = model.config();
  const int T = mc.block_size, Vp = mc.padded_vocab();
  if (opt.stride < 0 || opt.stride > T)
    CR_INPUT_ERROR("--stride {}: expected 1 .. {} (the model's context; 0 or none: half of it)",
                   opt.stride, T);
  const int stride = opt.stride > 0 ? opt.stride : std::max(1, T / 2);
  const Tokenizer tok = find_tokenizer(lm, opt.data_dir);
  const int V = tok.vocab_size();
  if (V > mc.vocab_size)
    CR_INPUT_ERROR("tokenizer vocabulary {} exceeds the model's {}", V, mc.vocab_size);
  const int top = std::min(opt.top, V);
  TokenInput in = load_input(opt, tok);
  const size_t n = in.size();
  const WindowPlan windows{n, T, stride};

  AttentionMaskSpec spec;
  // The run's masks (config.yaml beside the model): the document mask as in training and eval;
  // prefix-LM needs a loss mask to find prompts, which a text has not.
  const RunDataConfig run = run_data_config(opt.model);
  if (run.prefix_lm) log::warn("the model trained with model.prefix_lm; scoring reads every token causally");
  if (run.document_mask) {
    if (tok.eot_id() >= 0)
      spec.document_mask = true, spec.eot = tok.eot_id();
    else
      log::warn("the model trained with data.document_mask, but this tokenizer has no "
                "end-of-text token: scoring without it");
  }

  std::vector<std::unique_ptr<Sink>> sinks;
  if (opt.json) sinks.push_back(std::make_unique<JsonSink>(tok));
  const bool color = opt.color == "always" || (opt.color == "auto" && ::isatty(1));
  if (!opt.json) sinks.push_back(std::make_unique<TerminalSink>(tok, color));
  if (!opt.html.empty())
    sinks.push_back(std::make_unique<HtmlSink>(tok, opt.html, in.source, opt.model));

  // The logits of a micro-batch are B x T x Vp floats: at most 256 MB of them.
  const size_t row_bytes = (size_t)T * Vp * sizeof(float);
  const int mb = (int)std::clamp<size_t>((size_t(256) << 20) / row_bytes, 1, opt.micro_batch);
  Totals totals;
  totals.context = T, totals.stride = stride, totals.windows = windows.count();
  totals.source = in.source;
  const bool count_bytes = opt.input.empty();  // --tokens: the decoded bytes, EOT as 0 (as prepare)
  std::vector<int32_t> inputs((size_t)mb * T), range(spec.document_mask ? 2 * (size_t)mb * T : 0);
  std::vector<ScoredToken> scored;
  ScoreProgress progress(n - 1);
  for (size_t w0 = 0; w0 < windows.count();) {
    // Windows of one length go together (only the last one can be shorter).
    const int len = windows.at(w0).len;
    size_t w1 = w0;
    while (w1 < windows.count() && w1 - w0 < (size_t)mb && windows.at(w1).len == len) w1++;
    const int B = (int)(w1 - w0);
    for (int b = 0; b < B; b++) {
      in.read(windows.at(w0 + b).start, len, inputs.data() + (size_t)b * len);
      if (spec.document_mask)
        build_kv_range(inputs.data() + (size_t)b * len, nullptr, len, spec,
                       range.data() + 2 * (size_t)b * len);
    }
    model.forward(inputs.data(), nullptr, B, len, spec.document_mask ? range.data() : nullptr);
    const float* logits = model.logits();
    // The rows this batch scores, in token order, then their log-softmax in parallel.
    std::vector<std::pair<size_t, size_t>> rows;  // (row in the batch's logits, target's x index)
    for (int b = 0; b < B; b++)
      for (int t = windows.at(w0 + b).first; t < len; t++)
        rows.push_back({(size_t)b * len + t, windows.at(w0 + b).start + t + 1});
    scored.resize(rows.size());
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t r = 0; r < rows.size(); r++) {
      int32_t target;
      in.read(rows[r].second, 1, &target);
      scored[r].i = rows[r].second - in.offset;
      score_row(logits + rows[r].first * Vp, V, target, top, scored[r]);
    }
    for (const ScoredToken& s : scored) {
      totals.tokens++;
      totals.bits += s.bits;
      if (count_bytes && s.token != tok.eot_id()) totals.bytes += tok.decode_one(s.token).size();
      for (auto& sink : sinks) sink->token(s);
    }
    progress.update(totals.tokens);
    w0 = w1;
  }
  if (!count_bytes) totals.bytes = in.text_bytes;
  for (auto& sink : sinks) sink->finish(totals);
  return 0;
}

}  // namespace cr
