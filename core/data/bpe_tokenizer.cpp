// Hugging Face byte-level BPE: tokenizer.json parsing, added-token matching, PCRE2
// pre-tokenization and rank-ordered merges. See bpe_tokenizer.h for the stages and their order.
#include "core/data/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <atomic>
#include <queue>
#include <set>

#include "core/common/error.h"
#include "core/data/tokenizer.h"

namespace cr {

using nlohmann::json;

namespace {

// GPT-2's byte -> unicode map (openai/gpt-2 encoder.py bytes_to_unicode): printable Latin-1
// bytes stand for themselves, the other 68 bytes for U+0100 onwards, in byte order.
struct ByteAlphabet {
  uint32_t to_cp[256];
  std::unordered_map<uint32_t, uint8_t> to_byte;
  ByteAlphabet() {
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_cp[b] = printable ? (uint32_t)b : next++;
      to_byte[to_cp[b]] = (uint8_t)b;
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

// The ByteLevel decoder: a token whose every character is in the byte alphabet stands for those
// bytes; any other token (an added token such as "<|endoftext|>" with a space) for its own UTF-8.
std::string token_text_to_bytes(const std::string& text) {
  std::string out;
  for (uint32_t cp : utf8_codepoints(text)) {
    auto it = alphabet().to_byte.find(cp);
    if (it == alphabet().to_byte.end()) return text;
    out += (char)it->second;
  }
  return out;
}

// GPT-2's pre-tokenizer pattern (ByteLevel with use_regex).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::atomic<uint64_t> g_instances{0};

}  // namespace

// ---- regex (PCRE2) --------------------------------------------------------------------------

struct BpeModel::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }

  Regex(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE off = 0;
    // UCP: \s, \w and \d by Unicode properties, as Oniguruma (which `tokenizers` uses) reads
    // them; the parity test covers NEL, NBSP, U+2028 and U+3000 against it.
    code = pcre2_compile((PCRE2_SPTR)pattern.data(), pattern.size(),
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      CR_INPUT_ERROR("{}: regex /{}/ does not compile at offset {}: {}", where, pattern, off,
                     (const char*)msg);
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT fails
  }

  // Splits s "Isolated" (tokenizers' SplitDelimiterBehavior): each match is a piece, and so is
  // each non-empty gap between matches.
  void split(std::string_view s, std::vector<std::string_view>& pieces) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
    CR_CHECK(md != nullptr, "pcre2_match_data_create failed");
    size_t start = 0, gap = 0;
    while (start <= s.size()) {
      const int rc = pcre2_match(code, (PCRE2_SPTR)s.data(), s.size(), start, 0, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        CR_INPUT_ERROR("pre-tokenizer regex failed on the input: {}", (const char*)msg);
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[1] == ov[0]) {  // an empty match: step over one (possibly invalid) character
        start = ov[1] + 1;
        while (start < s.size() && ((uint8_t)s[start] & 0xC0) == 0x80) start++;
        continue;
      }
      if (ov[0] > gap) pieces.push_back(s.substr(gap, ov[0] - gap));
      pieces.push_back(s.substr(ov[0], ov[1] - ov[0]));
      gap = start = ov[1];
    }
    if (gap < s.size()) pieces.push_back(s.substr(gap));
    pcre2_match_data_free(md);
  }
};

BpeModel::~BpeModel() = default;

// ---- tokenizer.json -------------------------------------------------------------------------

namespace {

bool flag(const json& j, const char* key, bool fallback, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) CR_INPUT_ERROR("{}: \"{}\" must be true or false", where, key);
  return j[key].get<bool>();
}

std::string split_pattern(const json& split, const std::string& where) {
  if (!split.contains("pattern") || !split["pattern"].is_object())
    CR_INPUT_ERROR("{}: pre_tokenizer Split needs a \"pattern\" object", where);
  const json& p = split["pattern"];
  if (p.contains("Regex") && p["Regex"].is_string()) return p["Regex"];
  if (p.contains("String") && p["String"].is_string())
    return "\\Q" + p["String"].get<std::string>() + "\\E";
  CR_INPUT_ERROR("{}: pre_tokenizer Split pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}",
                 where);
}

}  // namespace

void BpeModel::parse_pre_tokenizer(const json& pre, const std::string& where) {
  const std::string supported =
      "supported: ByteLevel, or Sequence[Split(behavior Isolated)..., ByteLevel(use_regex false)]";
  if (!pre.is_object() || !pre.contains("type"))
    CR_INPUT_ERROR("{}: \"pre_tokenizer\" is missing or null; byte-level BPE needs one ({})", where,
                   supported);
  std::vector<json> steps;
  if (pre["type"] == "Sequence") {
    if (!pre.contains("pretokenizers") || !pre["pretokenizers"].is_array())
      CR_INPUT_ERROR("{}: pre_tokenizer Sequence needs a \"pretokenizers\" array", where);
    for (const auto& s : pre["pretokenizers"]) steps.push_back(s);
  } else {
    steps.push_back(pre);
  }
  for (size_t i = 0; i < steps.size(); i++) {
    const json& s = steps[i];
    const std::string type = s.value("type", "");
    const bool last = i + 1 == steps.size();
    if (type == "Split" && !last) {
      if (s.value("behavior", "") != "Isolated")
        CR_INPUT_ERROR("{}: pre_tokenizer Split behavior '{}' is not supported ({})", where,
                       s.value("behavior", "?"), supported);
      if (flag(s, "invert", false, where))
        CR_INPUT_ERROR("{}: pre_tokenizer Split with invert: true is not supported", where);
      splits_.push_back(std::make_unique<Regex>(split_pattern(s, where), where));
    } else if (type == "ByteLevel" && last) {
      add_prefix_space_ = flag(s, "add_prefix_space", true, where);
      if (flag(s, "use_regex", true, where))
        byte_level_regex_ = std::make_unique<Regex>(kGpt2Pattern, where);
    } else {
      CR_INPUT_ERROR("{}: pre_tokenizer '{}' {}is not supported ({})", where, type,
                     last ? "as the last step " : "", supported);
    }
  }
}

void BpeModel::parse_model(const json& m, const std::string& where) {
  if (!m.is_object()) CR_INPUT_ERROR("{}: \"model\" must be an object", where);
  const std::string type = m.value("type", "BPE");
  if (type != "BPE")
    CR_INPUT_ERROR("{}: model.type '{}' is not supported: only byte-level BPE (GPT-2, Llama 3, "
                   "Qwen); for SentencePiece models use sp:PATH.model", where, type);
  if (flag(m, "byte_fallback", false, where))
    CR_INPUT_ERROR("{}: model.byte_fallback: true is a SentencePiece-style BPE, not byte-level; "
                   "supported: byte-level BPE (use the original .model with sp:PATH)", where);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(key) && !m[key].is_null() && m[key] != "")
      CR_INPUT_ERROR("{}: model.{} is not supported (byte-level BPE has none)", where, key);
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0)
    CR_INPUT_ERROR("{}: model.dropout is not supported (BPE-dropout is for training only)", where);
  ignore_merges_ = flag(m, "ignore_merges", false, where);
  if (!m.contains("vocab") || !m["vocab"].is_object())
    CR_INPUT_ERROR("{}: model.vocab must be an object of token -> id", where);
  for (const auto& [text, id] : m["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (1 << 30))
      CR_INPUT_ERROR("{}: model.vocab[\"{}\"] must be an id in [0, 2^30)", where, text);
    const int32_t i = id.get<int32_t>();
    if ((size_t)i >= token_bytes_.size()) token_bytes_.resize(i + 1);
    token_bytes_[i] = token_text_to_bytes(text);
    vocab_[token_bytes_[i]] = i;
  }
  for (int b = 0; b < 256; b++) {
    auto it = vocab_.find(std::string(1, (char)b));
    byte_id_[b] = it == vocab_.end() ? -1 : it->second;
  }
  if (!m.contains("merges") || !m["merges"].is_array())
    CR_INPUT_ERROR("{}: model.merges must be an array", where);
  const json& merges = m["merges"];
  merges_.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); r++) {
    std::string a, b;
    const json& e = merges[r];
    if (e.is_string()) {  // "a b" (tokenizers < 0.20)
      const std::string s = e;
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        CR_INPUT_ERROR("{}: model.merges[{}] = \"{}\" is not two tokens split by one space", where,
                       r, s);
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0], b = e[1];  // ["a", "b"] (tokenizers >= 0.20)
    } else {
      CR_INPUT_ERROR("{}: model.merges[{}] must be \"a b\" or [\"a\", \"b\"]", where, r);
    }
    a = token_text_to_bytes(a), b = token_text_to_bytes(b);
    auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
    if (ia == vocab_.end() || ib == vocab_.end() || iab == vocab_.end())
      CR_INPUT_ERROR("{}: model.merges[{}]: a token of the merge or its result is not in "
                     "model.vocab", where, r);
    const uint64_t key = (uint64_t)ia->second << 32 | (uint32_t)ib->second;
    merges_.emplace(key, Merge{(int32_t)r, iab->second});  // the first (lowest) rank wins
  }
}

std::shared_ptr<const BpeModel> BpeModel::from_json_text(std::string text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    CR_INPUT_ERROR("{}: malformed JSON: {}", where, e.what());
  }
  if (!j.is_object() || !j.contains("model"))
    CR_INPUT_ERROR("{}: not a Hugging Face tokenizer.json (no \"model\")", where);
  static const std::set<std::string> known = {"version",        "truncation",  "padding",
                                              "added_tokens",   "normalizer",  "pre_tokenizer",
                                              "post_processor", "decoder",     "model"};
  for (const auto& [key, v] : j.items())
    if (!known.count(key)) CR_INPUT_ERROR("{}: unknown tokenizer.json key \"{}\"", where, key);
  if (j.contains("normalizer") && !j["normalizer"].is_null())
    CR_INPUT_ERROR("{}: normalizer '{}' is not supported: only null (byte-level BPE tokenizers "
                   "such as GPT-2's and Llama 3's have none)", where,
                   j["normalizer"].value("type", "?"));
  if (!j.contains("decoder") || !j["decoder"].is_object() || j["decoder"].value("type", "") != "ByteLevel")
    CR_INPUT_ERROR("{}: decoder must be ByteLevel (byte-level BPE); got {}", where,
                   j.contains("decoder") ? j["decoder"].dump().substr(0, 80) : "none");

  std::shared_ptr<BpeModel> t(new BpeModel());
  t->instance_ = ++g_instances;
  t->parse_model(j["model"], where);
  t->parse_pre_tokenizer(j.value("pre_tokenizer", json()), where);

  if (j.contains("added_tokens") && !j["added_tokens"].is_array())
    CR_INPUT_ERROR("{}: added_tokens must be an array", where);
  for (const auto& a : j.value("added_tokens", json::array())) {
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
        a["id"].get<int64_t>() < 0 || a["id"].get<int64_t>() >= (1 << 30) ||
        !a.contains("content") || !a["content"].is_string() || a["content"] == "")
      CR_INPUT_ERROR("{}: added_tokens entries need an \"id\" in [0, 2^30) and a non-empty "
                     "\"content\"", where);
    const bool special = flag(a, "special", false, where);
    AddedToken at{a["id"].get<int32_t>(), a["content"], flag(a, "single_word", false, where),
                  flag(a, "lstrip", false, where), flag(a, "rstrip", false, where),
                  flag(a, "normalized", !special, where), special};
    if ((size_t)at.id >= t->token_bytes_.size()) t->token_bytes_.resize(at.id + 1);
    t->token_bytes_[at.id] = token_text_to_bytes(at.content);
    t->added_.push_back(at);
  }
  for (const char* eot : {"<|endoftext|>", "<|end_of_text|>", "</s>"}) {
    for (const auto& a : t->added_)
      if (a.special && a.content == eot) t->eot_ = a.id;
    if (t->eot_ >= 0) break;
  }
  if (t->eot_ < 0) {  // none of its own: add one after the largest id, and list it for export
    t->eot_ = (int32_t)t->token_bytes_.size();
    t->token_bytes_.push_back("<|endoftext|>");
    t->added_.push_back({t->eot_, "<|endoftext|>", false, false, false, false, true});
    j["added_tokens"].push_back({{"id", t->eot_}, {"content", "<|endoftext|>"},
                                 {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                                 {"normalized", false}, {"special", true}});
    text = j.dump();
  }
  // Longest first: the leftmost match at a position is the longest (aho-corasick LeftmostLongest).
  std::stable_sort(t->added_.begin(), t->added_.end(), [](const AddedToken& x, const AddedToken& y) {
    return x.content.size() > y.content.size();
  });
  t->json_text_ = std::move(text);
  return t;
}

const std::string& BpeModel::token_bytes(int32_t id) const {
  static const std::string none;
  return id >= 0 && (size_t)id < token_bytes_.size() ? token_bytes_[id] : none;
}

// ---- encode ---------------------------------------------------------------------------------

namespace {

bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
// single_word's notion of a word character (ASCII alphanumerics, '_', and any non-ASCII byte).
bool is_word_byte(uint8_t c) { return std::isalnum(c) || c == '_' || c >= 0x80; }

struct Span {
  size_t begin, end;  // bytes of the input
  int32_t id;         // an added token, or -1 for text that goes on to pre-tokenization
};

// Splits [begin, end) of text at matches of the added tokens whose `normalized` flag equals
// `normalized`, leftmost-longest; appends the spans in order.
void split_added(std::string_view text, size_t begin, size_t end,
                 const std::vector<BpeModel::AddedToken>& added, bool normalized,
                 std::vector<Span>& out) {
  size_t gap = begin;
  for (size_t i = begin; i < end; i++) {
    const BpeModel::AddedToken* hit = nullptr;
    for (const auto& a : added) {  // longest first
      if (a.normalized != normalized || a.content.size() > end - i || text[i] != a.content[0] ||
          text.compare(i, a.content.size(), a.content) != 0)
        continue;
      const size_t e = i + a.content.size();
      if (a.single_word && ((i > begin && is_word_byte(text[i - 1])) ||
                            (e < end && is_word_byte(text[e]))))
        continue;
      hit = &a;
      break;
    }
    if (!hit) continue;
    size_t s = i, e = i + hit->content.size();
    if (hit->lstrip)
      while (s > gap && is_ws(text[s - 1])) s--;
    if (hit->rstrip)
      while (e < end && is_ws(text[e])) e++;
    if (s > gap) out.push_back({gap, s, -1});
    out.push_back({s, e, hit->id});
    gap = e;
    i = e - 1;
  }
  if (gap < end) out.push_back({gap, end, -1});
}

// The per-thread merge cache: pre-token bytes -> ids, for one model at a time, bounded.
struct MergeCache {
  uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<int32_t>> map;
};
constexpr size_t kCacheEntries = 1 << 16;
constexpr size_t kCacheMaxPiece = 64;

}  // namespace

void BpeModel::encode(std::string_view text, std::vector<int32_t>& out,
                      std::vector<uint8_t>* counts) const {
  std::vector<Span> first, spans;
  split_added(text, 0, text.size(), added_, false, first);
  for (const Span& s : first) {
    if (s.id >= 0) spans.push_back(s);
    else split_added(text, s.begin, s.end, added_, true, spans);
  }
  for (const Span& s : spans) {
    if (s.id < 0) {
      encode_segment(text.substr(s.begin, s.end - s.begin), out, counts);
      continue;
    }
    out.push_back(s.id);
    if (counts) {
      if (s.end - s.begin > 255)
        CR_INPUT_ERROR("an added token's match covers {} bytes; at most 255 are counted",
                       s.end - s.begin);
      counts->push_back((uint8_t)(s.end - s.begin));
    }
  }
}

void BpeModel::encode_segment(std::string_view seg, std::vector<int32_t>& out,
                              std::vector<uint8_t>* counts) const {
  std::vector<std::string_view> pieces{seg}, next;
  for (const auto& re : splits_) {
    next.clear();
    for (auto p : pieces) re->split(p, next);
    pieces.swap(next);
  }
  std::string prefixed;
  std::vector<std::string_view> words;
  for (auto p : pieces) {
    // ByteLevel's add_prefix_space: a space before every piece that lacks one. That byte is not
    // in the input, so the first token of the piece counts one byte less.
    const bool prefix = add_prefix_space_ && (p.empty() || p[0] != ' ');
    if (prefix) {
      prefixed.assign(p.size() + 1, ' ');
      std::copy(p.begin(), p.end(), prefixed.begin() + 1);
      p = prefixed;
    }
    words.clear();
    if (byte_level_regex_) byte_level_regex_->split(p, words);
    else words.push_back(p);
    const size_t first = out.size();
    for (auto w : words) encode_pretoken(w, out);
    if (counts) {
      for (size_t i = first; i < out.size(); i++) {
        const size_t n = token_bytes_[out[i]].size();
        if (n > 255) CR_INPUT_ERROR("token {} covers {} bytes; at most 255 are counted", out[i], n);
        counts->push_back((uint8_t)n);
      }
      if (prefix && out.size() > first) (*counts)[first]--;
    }
  }
}

void BpeModel::encode_pretoken(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {  // Llama 3: a pre-token in the vocab is one token, merges or not
    auto it = vocab_.find(std::string(piece));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (piece.size() > kCacheMaxPiece) return bpe_merge(piece, out);
  thread_local MergeCache cache;
  if (cache.owner != instance_ || cache.map.size() >= kCacheEntries) {
    cache.map.clear();
    cache.owner = instance_;
  }
  std::string key(piece);
  auto it = cache.map.find(key);
  if (it == cache.map.end()) {
    std::vector<int32_t> ids;
    bpe_merge(piece, ids);
    it = cache.map.emplace(std::move(key), std::move(ids)).first;
  }
  out.insert(out.end(), it->second.begin(), it->second.end());
}

// Merges the bytes of one pre-token: the pair of lowest rank first, the leftmost of equal ranks,
// with stale queue entries skipped exactly as `tokenizers`' Word::merge_all does (an entry is
// stale when the pair at its position no longer merges into the entry's token).
void BpeModel::bpe_merge(std::string_view piece, std::vector<int32_t>& out) const {
  struct Sym {
    int32_t id;
    int prev, next;
    bool alive;
  };
  const int n = (int)piece.size();
  std::vector<Sym> sym(n);
  for (int i = 0; i < n; i++) {
    const int32_t id = byte_id_[(uint8_t)piece[i]];
    if (id < 0)
      CR_INPUT_ERROR("byte 0x{:02X} has no token in the tokenizer.json vocab (a byte-level BPE "
                     "vocab holds all 256 bytes)", (uint8_t)piece[i]);
    sym[i] = {id, i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  struct Entry {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue;
  auto push_pair = [&](int pos) {
    const int nx = sym[pos].next;
    if (nx < 0) return;
    auto it = merges_.find((uint64_t)sym[pos].id << 32 | (uint32_t)sym[nx].id);
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.new_id});
  };
  for (int i = 0; i + 1 < n; i++) push_pair(i);
  while (!queue.empty()) {
    const Entry top = queue.top();
    queue.pop();
    Sym& s = sym[top.pos];
    if (!s.alive || s.next < 0) continue;
    auto it = merges_.find((uint64_t)s.id << 32 | (uint32_t)sym[s.next].id);
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    Sym& r = sym[s.next];
    s.id = top.new_id;
    r.alive = false;
    s.next = r.next;
    if (s.next >= 0) sym[s.next].prev = top.pos;
    if (s.prev >= 0) push_pair(s.prev);
    push_pair(top.pos);
  }
  for (int i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

}  // namespace cr
