// Tokenizers beyond byte/char basics (those are in test_data.cpp): the end-of-text token and
// legacy JSON, the streaming char builder, --tokenizer specs, Hugging Face byte-level BPE on
// hand-made tokenizer.json files (merge ranks, ignore_merges, added tokens, pre-tokenizer
// boundaries, invalid UTF-8, unsupported features), SentencePiece training and round trips, and
// encode from many threads. Parity with the Python packages is tests/reference/tokenizer_parity.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/data/tokenizer.h"
#include "core/model/hf_interchange.h"
#include "tests/unit/test_util.h"

using namespace cr;
using namespace cr::testing;

namespace {

// Tricky text: accents, CJK, emoji (ZWJ), digits, runs of spaces, tabs, CR LF, blank lines.
const std::string kTricky =
    "  Caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E  \xF0\x9F\x91\xA9\xE2\x80\x8D"
    "\xF0\x9F\x92\xBB 1234567 it's   THEY'LL\n\n\n\tindented\r\n   trailing   ";

// GPT-2's byte -> unicode map, written independently of bpe_tokenizer.cpp.
std::string byte_symbol(int b) {
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
  if (printable) return utf8_encode((uint32_t)b);
  int n = 0;
  for (int k = 0; k < b; k++)
    if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174))) n++;
  return utf8_encode(256 + n);
}

// A byte-level BPE tokenizer.json: ids 0..255 are the bytes, then `extra` tokens (in byte-level
// spelling) from 256 on, the given merges, and <|endoftext|> as the last id.
nlohmann::json tiny_bpe(const std::vector<std::string>& extra,
                        const std::vector<std::string>& merges, bool ignore_merges = false) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; b++) vocab[byte_symbol(b)] = b;
  int id = 256;
  for (const auto& t : extra) vocab[t] = id++;
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens",
           {{{"id", id}, {"content", "<|endoftext|>"}, {"single_word", false}, {"lstrip", false},
             {"rstrip", false}, {"normalized", false}, {"special", true}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
            {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
            {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merges}}}};
}

Tokenizer hf_from(const nlohmann::json& j, TempDir& dir, const std::string& name = "tok.json") {
  const std::string path = dir.file(name);
  std::ofstream(path) << j.dump();
  return Tokenizer::from_spec("hf:" + path);
}

std::vector<int32_t> ids_of(const std::string& s) {
  std::vector<int32_t> v;
  for (char c : s) v.push_back((uint8_t)c);
  return v;
}

void expect_round_trip(const Tokenizer& tok, const std::string& text) {
  std::vector<uint8_t> counts;
  const auto ids = tok.encode(text, &counts);
  EXPECT_EQ(tok.decode(ids), text) << tok.name();
  std::string streamed;
  for (int32_t id : ids) streamed += tok.decode_one(id);
  EXPECT_EQ(streamed, text) << tok.name();
  ASSERT_EQ(counts.size(), ids.size());
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), size_t{0}), text.size()) << tok.name();
  for (int32_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, tok.vocab_size());
  }
}

}  // namespace

// ---- end of text, legacy JSON, char builder -------------------------------------------------

TEST(TokenizerEot, ByteHasEot256AndNeverEncodesIt) {
  const Tokenizer tok = Tokenizer::byte_level();
  EXPECT_EQ(tok.vocab_size(), 257);
  EXPECT_EQ(tok.eot_id(), 256);
  EXPECT_EQ(tok.decode_one(256), "<|endoftext|>");
  EXPECT_EQ(tok.encode("a<|endoftext|>"), ids_of("a<|endoftext|>"));  // plain text to bytes
  expect_round_trip(tok, kTricky);
  const Tokenizer back = Tokenizer::from_json(tok.to_json(), "t");
  EXPECT_EQ(back.eot_id(), 256);
  EXPECT_EQ(back.vocab_size(), 257);
}

TEST(TokenizerEot, LegacyJsonWithoutEotKeepsItsVocabulary) {
  const Tokenizer b = Tokenizer::from_json(nlohmann::json{{"type", "byte"}}, "old.json");
  EXPECT_EQ(b.eot_id(), -1);
  EXPECT_EQ(b.vocab_size(), 256);
  EXPECT_FALSE(b.to_json().contains("eot"));
  const Tokenizer c =
      Tokenizer::from_json(nlohmann::json::parse(R"({"type": "char", "chars": [97, 98]})"), "old.json");
  EXPECT_EQ(c.eot_id(), -1);
  EXPECT_EQ(c.vocab_size(), 2);
  EXPECT_EQ(c.encode("ba"), (std::vector<int32_t>{1, 0}));
  // A wrong eot is an error naming the file, not a silent shift of ids.
  const std::string msg = input_error_of(
      [] { Tokenizer::from_json(nlohmann::json{{"type", "byte"}, {"eot", 3}}, "bad.json"); });
  EXPECT_TRUE(contains(msg, "bad.json") && contains(msg, "eot")) << msg;
}

TEST(TokenizerEot, CharEotFollowsTheCodePoints) {
  const Tokenizer tok = Tokenizer::char_level_from_codepoints({'\n', 'a', 0xE9, 0x65E5});
  EXPECT_EQ(tok.kind(), Tokenizer::Kind::Char);
  EXPECT_EQ(tok.vocab_size(), 5);
  EXPECT_EQ(tok.eot_id(), 4);
  EXPECT_EQ(tok.decode_one(4), "<|endoftext|>");
  EXPECT_EQ(tok.encode("a\n\xC3\xA9\xE6\x97\xA5"), (std::vector<int32_t>{1, 0, 2, 3}));
  const Tokenizer back = Tokenizer::from_json(tok.to_json(), "t");
  EXPECT_EQ(back.eot_id(), 4);
  EXPECT_EQ(back.to_json(), tok.to_json());
  EXPECT_EQ(Tokenizer::char_level_from("ab").eot_id(), 2);
}

TEST(TokenizerEot, TooManyCharsIsAnInputError) {
  std::vector<uint32_t> many(Tokenizer::kMaxCharVocab + 1);
  std::iota(many.begin(), many.end(), 0u);
  const std::string msg = input_error_of([&] { Tokenizer::char_level_from_codepoints(many); });
  EXPECT_TRUE(contains(msg, "distinct characters")) << msg;
}

// ---- specs and errors -----------------------------------------------------------------------

TEST(TokenizerSpec, UnknownSpecsAndMissingFilesNameThemselves) {
  EXPECT_EQ(Tokenizer::from_spec("byte").eot_id(), 256);
  for (const std::string spec : {"bpe", "hf:/nonexistent/tokenizer.json", "sp:/nonexistent/x.model",
                                 "char"}) {
    const std::string msg = input_error_of([&] { Tokenizer::from_spec(spec); });
    EXPECT_TRUE(contains(msg, spec.substr(spec.find(':') + 1))) << spec << " -> " << msg;
  }
  TempDir dir;
  const std::string junk = dir.file("junk.model");
  std::ofstream(junk) << "not a model";
  EXPECT_TRUE(contains(input_error_of([&] { Tokenizer::from_spec("sp:" + junk); }), junk));
}

TEST(TokenizerSpec, UnsupportedTokenizerJsonNamesTheKey) {
  TempDir dir;
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string want;
  };
  const std::vector<Case> cases = {
      {[](auto& j) { j["model"]["type"] = "WordPiece"; }, "model.type 'WordPiece'"},
      {[](auto& j) { j["model"]["type"] = "Unigram"; }, "sp:PATH.model"},
      {[](auto& j) { j["model"]["byte_fallback"] = true; }, "byte_fallback"},
      {[](auto& j) { j["model"]["continuing_subword_prefix"] = "##"; }, "continuing_subword_prefix"},
      {[](auto& j) { j["normalizer"] = {{"type", "NFC"}}; }, "normalizer 'NFC'"},
      {[](auto& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; }, "'Metaspace'"},
      {[](auto& j) { j["decoder"] = {{"type", "Metaspace"}}; }, "decoder"},
      {[](auto& j) { j["surprise"] = 1; }, "\"surprise\""},
      {[](auto& j) { j["model"]["merges"] = {"h zz"}; }, "model.merges[0]"},
      {[](auto& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers",
                                {{{"type", "Split"}, {"behavior", "Removed"},
                                  {"pattern", {{"Regex", "\\s+"}}}},
                                 {{"type", "ByteLevel"}, {"use_regex", false}}}}};
       },
       "behavior 'Removed'"},
  };
  for (size_t i = 0; i < cases.size(); i++) {
    nlohmann::json j = tiny_bpe({}, {});
    cases[i].edit(j);
    const std::string path = dir.file("case" + std::to_string(i) + ".json");
    std::ofstream(path) << j.dump();
    const std::string msg = input_error_of([&] { Tokenizer::from_spec("hf:" + path); });
    EXPECT_TRUE(contains(msg, path) && contains(msg, cases[i].want))
        << "case " << i << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// ---- Hugging Face byte-level BPE ------------------------------------------------------------

TEST(HfBpe, MergesApplyByRankNotByPosition) {
  TempDir dir;
  // "hel": with "e l" ranked first the result is [h, el]; with "h e" first, [he, l].
  const Tokenizer el = hf_from(tiny_bpe({"el", "he"}, {"e l", "h e"}), dir, "a.json");
  const Tokenizer he = hf_from(tiny_bpe({"el", "he"}, {"h e", "e l"}), dir, "b.json");
  EXPECT_EQ(el.encode("hel"), (std::vector<int32_t>{'h', 256}));
  EXPECT_EQ(he.encode("hel"), (std::vector<int32_t>{257, 'l'}));
  // Both merge formats: ["a", "b"] pairs read as "a b".
  nlohmann::json pairs = tiny_bpe({"el", "he"}, {});
  pairs["model"]["merges"] = nlohmann::json::parse(R"([["e", "l"], ["h", "e"]])");
  EXPECT_EQ(hf_from(pairs, dir, "c.json").encode("hel"), (std::vector<int32_t>{'h', 256}));
}

TEST(HfBpe, IgnoreMergesTakesAWholePreTokenFromTheVocab) {
  TempDir dir;
  // "hello" is in the vocab but no merge makes it: only ignore_merges (Llama 3) emits it.
  const std::vector<std::string> extra = {"he", "ll", "llo", "hello"};
  const std::vector<std::string> merges = {"h e", "l l", "ll o"};
  EXPECT_EQ(hf_from(tiny_bpe(extra, merges, false), dir, "a.json").encode("hello"),
            (std::vector<int32_t>{256, 258}));
  EXPECT_EQ(hf_from(tiny_bpe(extra, merges, true), dir, "b.json").encode("hello"),
            (std::vector<int32_t>{259}));
}

TEST(HfBpe, MergesNeverCrossPreTokenBoundaries) {
  TempDir dir;
  // GPT-2's pattern splits "a b" into "a", " b": the merge "a Ġ" (a + space) must not apply.
  const Tokenizer tok = hf_from(tiny_bpe({"a\xC4\xA0"}, {"a \xC4\xA0"}), dir);
  EXPECT_EQ(tok.encode("a b"), ids_of("a b"));
  EXPECT_EQ(tok.encode("a "), (std::vector<int32_t>{'a', ' '}));  // "a", " " too
}

TEST(HfBpe, AddedTokensSplitTheTextAndEotIsTheirs) {
  TempDir dir;
  const Tokenizer tok = hf_from(tiny_bpe({"he"}, {"h e"}), dir);
  EXPECT_EQ(tok.kind(), Tokenizer::Kind::HF);
  EXPECT_EQ(tok.vocab_size(), 258);
  EXPECT_EQ(tok.eot_id(), 257);
  EXPECT_EQ(tok.encode("he<|endoftext|>he"), (std::vector<int32_t>{256, 257, 256}));
  EXPECT_EQ(tok.decode({256, 257}), "he<|endoftext|>");
  // A tokenizer.json without an end-of-text token gets one appended, also in its export text.
  nlohmann::json j = tiny_bpe({}, {});
  j["added_tokens"] = nlohmann::json::array();
  const Tokenizer no_eot = hf_from(j, dir, "noeot.json");
  EXPECT_EQ(no_eot.eot_id(), 256);
  EXPECT_EQ(no_eot.vocab_size(), 257);
  EXPECT_TRUE(contains(no_eot.hf_tokenizer_json(), "<|endoftext|>"));
}

TEST(HfBpe, RoundTripsAnyBytesIncludingInvalidUtf8) {
  TempDir dir;
  const Tokenizer tok = hf_from(tiny_bpe({"he", "ll", "\xC4\xA0\xC4\xA0"}, {"h e", "l l", "\xC4\xA0 \xC4\xA0"}), dir);
  expect_round_trip(tok, kTricky);
  std::string bytes;
  std::mt19937 rng(7);
  for (int i = 0; i < 4000; i++) bytes += (char)(rng() % 256);
  expect_round_trip(tok, bytes + "\xC3" + "\xE6\x97");  // ends inside a character
  expect_round_trip(tok, std::string(100000, ' ') + "x");  // one long pre-token of spaces
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(HfBpe, JsonRoundTripKeepsTheOriginalTokenizerJson) {
  TempDir dir;
  const nlohmann::json j = tiny_bpe({"he"}, {"h e"});
  const Tokenizer tok = hf_from(j, dir);
  EXPECT_EQ(tok.hf_tokenizer_json(), j.dump());
  const Tokenizer back = Tokenizer::from_json(tok.to_json(), "dataset.json");
  EXPECT_EQ(back.kind(), Tokenizer::Kind::HF);
  EXPECT_EQ(back.encode(kTricky), tok.encode(kTricky));
  EXPECT_EQ(back.hf_tokenizer_json(), j.dump());
  EXPECT_EQ(Tokenizer::byte_level().hf_tokenizer_json(), "");
}

TEST(HfBpe, EncodeFromManyThreadsAgrees) {
  TempDir dir;
  const Tokenizer tok = hf_from(tiny_bpe({"he", "ll"}, {"h e", "l l"}), dir);
  std::string text;
  for (int i = 0; i < 200; i++) text += kTricky + std::to_string(i) + " hello ";
  const auto want = tok.encode(text);
  std::vector<std::vector<int32_t>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; rep++) got[t] = tok.encode(text);
    });
  for (auto& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

// ---- SentencePiece --------------------------------------------------------------------------

TEST(SentencePiece, TrainedModelRoundTripsAndTravelsInJson) {
  std::string corpus;
  std::mt19937 rng(3);
  const char* words[] = {"the", "quick", "brown", "fox", "caf\xC3\xA9", "\xE6\x97\xA5\xE6\x9C\xAC",
                         "42", "jumps", "over", "lazy", "dog", "  "};
  for (int i = 0; i < 20000; i++) corpus += std::string(words[rng() % 12]) + (i % 13 ? " " : "\n");
  size_t pos = 0;
  const Tokenizer tok = Tokenizer::train_sentencepiece(
      [&](std::string& text) {  // the corpus in 64 KB pieces, as prepare streams it
        if (pos >= corpus.size()) return false;
        text = corpus.substr(pos, 65536);
        pos += 65536;
        return true;
      },
      320, SentencePieceTrainOptions{.num_threads = 1});
  EXPECT_EQ(tok.kind(), Tokenizer::Kind::SP);
  EXPECT_EQ(tok.vocab_size(), 320);
  EXPECT_EQ(tok.eot_id(), 2);  // SentencePiece's eos
  EXPECT_EQ(tok.decode_one(2), "</s>");
  expect_round_trip(tok, kTricky);  // tabs, CR LF, emoji: byte fallback
  expect_round_trip(tok, "the quick brown fox");
  // "42" is two pieces (split_digits), not one.
  EXPECT_EQ(tok.encode("42").size(), 2u);

  const Tokenizer back = Tokenizer::from_json(tok.to_json(), "dataset.json");
  EXPECT_EQ(back.encode(kTricky), tok.encode(kTricky));
  EXPECT_EQ(back.decode({2}), "</s>");

  const std::string msg = input_error_of(
      [] { Tokenizer::train_sentencepiece([](std::string&) { return false; }, 100); });
  EXPECT_TRUE(contains(msg, "--vocab-size 100")) << msg;
  const std::string empty = input_error_of(
      [] { Tokenizer::train_sentencepiece([](std::string&) { return false; }, 400); });
  EXPECT_TRUE(contains(empty, "SentencePiece")) << empty;
}

// ---- Hugging Face export --------------------------------------------------------------------

TEST(HfBpe, ExportWritesTheRunsTokenizerJson) {
  TempDir dir;
  const nlohmann::json j = tiny_bpe({"he"}, {"h e"});
  const Tokenizer tok = hf_from(j, dir);
  ModelConfig c;
  c.n_layer = 1, c.n_head = 2, c.n_embd = 8, c.block_size = 8, c.vocab_size = tok.vocab_size();
  GPT model(c);
  model.init(1);
  // A run dir holds tokenizer.chainrule.json: the export beside it copies the tokenizer.json.
  const std::string run = dir.file("run");
  std::filesystem::create_directories(run);
  std::ofstream(run + "/tokenizer.chainrule.json") << tok.to_json().dump();
  export_hf_model(model, run);
  std::ifstream in(run + "/tokenizer.json");
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), j.dump());
  // Byte (or char, sp) runs have no tokenizer.json form.
  const std::string other = dir.file("other");
  const Tokenizer byte = Tokenizer::byte_level();
  export_hf_model(model, other, &byte);
  EXPECT_TRUE(std::filesystem::exists(other + "/config.json"));
  EXPECT_FALSE(std::filesystem::exists(other + "/tokenizer.json"));
}
