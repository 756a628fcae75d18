// Data side: tokenizers (byte/char, UTF-8 with Latin-1 fallback, JSON), llm.c token shards
// (round trip, malformed files, vocabulary check, version 2), splits of a data dir, and the
// batch loader's contract: windows shifted by one inside a shard, batch() a pure function of
// (seed, step, index), one epoch = one permutation of the windows, data-parallel slices compose.
#include <gtest/gtest.h>

#include "tests/unit/test_util.h"
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "core/common/error.h"
#include "core/data/loader.h"
#include "core/data/shard.h"
#include "core/data/split_files.h"
#include "core/data/tokenizer.h"

namespace cr {
namespace {

using testing::TempDir;
using testing::contains;
using testing::input_error_of;

namespace fs = std::filesystem;




// Writes an llm.c shard header (magic, version, count) followed by raw body bytes.
void write_raw_shard(const std::string& path, int32_t magic, int32_t version, int32_t count,
                     const std::string& body) {
  std::vector<int32_t> header(kShardHeaderInts, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), header.size() * sizeof(int32_t));
  out.write(body.data(), (std::streamsize)body.size());
}

template <typename U>
std::string pack(const std::vector<U>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(U));
}

// ------------------------------------------------------------------------------------------
// Tokenizer

TEST(Tokenizer, ByteLevelRoundTripsEveryByte) {
  std::string text;
  for (int b = 0; b < 256; b++) text += (char)b;
  text += "h\xC3\xA9llo \xFF\xFE";  // UTF-8 and invalid bytes alike
  const Tokenizer tok = Tokenizer::byte_level();
  EXPECT_EQ(tok.vocab_size(), 257);  // 256 bytes + the end-of-text token
  EXPECT_EQ(tok.kind(), Tokenizer::Kind::Byte);
  std::vector<uint8_t> counts;
  const auto ids = tok.encode(text, &counts);
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < text.size(); i++) EXPECT_EQ(ids[i], (int32_t)(uint8_t)text[i]) << i;
  EXPECT_EQ(tok.decode(ids), text);
  ASSERT_EQ(counts.size(), ids.size());
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), size_t{0}), text.size());
}

TEST(Tokenizer, Utf8CodepointsOfMultiByteSequences) {
  // 1-, 2-, 3- and 4-byte sequences: a, e-acute, CJK "day", U+1F642.
  const std::string s = "a\xC3\xA9\xE6\x97\xA5\xF0\x9F\x99\x82";
  std::vector<uint8_t> lens;
  const auto cps = utf8_codepoints(s, &lens);
  EXPECT_EQ(cps, (std::vector<uint32_t>{0x61, 0xE9, 0x65E5, 0x1F642}));
  EXPECT_EQ(lens, (std::vector<uint8_t>{1, 2, 3, 4}));
}

TEST(Tokenizer, Utf8EncodeDecodeBoundaries) {
  for (uint32_t cp : {0x0u, 0x7Fu, 0x80u, 0x7FFu, 0x800u, 0xD7FFu, 0xE000u, 0xFFFFu, 0x10000u,
                      0x10FFFFu}) {
    const std::string s = utf8_encode(cp);
    const size_t want_len = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    EXPECT_EQ(s.size(), want_len) << std::hex << cp;
    std::vector<uint8_t> lens;
    EXPECT_EQ(utf8_codepoints(s, &lens), std::vector<uint32_t>{cp}) << std::hex << cp;
  }
}

TEST(Tokenizer, InvalidBytesReadAsLatin1) {
  // stray continuation, 0xFF, truncated 2-byte lead at the end, overlong NUL, UTF-16 surrogate,
  // a lead byte followed by a non-continuation, and > U+10FFFF.
  const std::string s = std::string("\x80") + "\xFF" + "x" + "\xC0\x80" + "\xED\xA0\x80" +
                        "\xC3(" + "\xF4\x90\x80\x80" + "\xC3";
  std::vector<uint8_t> lens;
  const auto cps = utf8_codepoints(s, &lens);
  ASSERT_EQ(cps.size(), s.size()) << "every byte here is invalid UTF-8 or ASCII";
  for (size_t i = 0; i < s.size(); i++) {
    EXPECT_EQ(cps[i], (uint32_t)(uint8_t)s[i]) << "byte " << i;
    EXPECT_EQ(lens[i], 1) << "byte " << i;
  }
}

TEST(Tokenizer, CharLevelRoundTripsMultiByteText) {
  const std::string text = "h\xC3\xA9llo, w\xC3\xB6rld \xE2\x80\x94 \xE6\x97\xA5\xE6\x9C\xAC "
                           "\xF0\x9F\x99\x82!\n";
  const Tokenizer tok = Tokenizer::char_level_from(text);
  EXPECT_EQ(tok.kind(), Tokenizer::Kind::Char);
  const auto cps = utf8_codepoints(text);
  const std::set<uint32_t> distinct(cps.begin(), cps.end());
  EXPECT_EQ(tok.vocab_size(), (int)distinct.size() + 1);  // + the end-of-text token
  std::vector<uint8_t> counts;
  const auto ids = tok.encode(text, &counts);
  EXPECT_EQ(ids.size(), cps.size());
  for (int32_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, tok.vocab_size());
  }
  EXPECT_EQ(tok.decode(ids), text);
  ASSERT_EQ(counts.size(), ids.size());
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), size_t{0}), text.size());
  for (size_t i = 0; i < ids.size(); i++) EXPECT_EQ(tok.decode_one(ids[i]), utf8_encode(cps[i]));
}

TEST(Tokenizer, CharVocabularyIsInCodePointOrder) {
  const Tokenizer tok = Tokenizer::char_level_from("cab\xC3\xA9" "a");
  EXPECT_EQ(tok.vocab_size(), 5);
  EXPECT_EQ(tok.encode("abc\xC3\xA9"), (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(Tokenizer, CharLevelInvalidBytesBecomeLatin1Tokens) {
  const std::string text = "ab\xFF\xC3";  // 0xFF and a truncated lead byte
  const Tokenizer tok = Tokenizer::char_level_from(text);
  EXPECT_EQ(tok.vocab_size(), 5);
  std::vector<uint8_t> counts;
  const auto ids = tok.encode(text, &counts);
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), size_t{0}), text.size());
  // Decoding yields the Latin-1 characters as UTF-8: y-diaeresis and A-tilde.
  EXPECT_EQ(tok.decode(ids), "ab\xC3\xBF\xC3\x83");
}

TEST(Tokenizer, EncodeUnknownCharThrowsInputError) {
  const Tokenizer tok = Tokenizer::char_level_from("abc");
  const std::string msg = input_error_of([&] { tok.encode("abz"); });
  EXPECT_TRUE(contains(msg, "U+007A")) << msg;
  const std::string msg2 = input_error_of([&] { tok.encode("a\xE6\x97\xA5"); });
  EXPECT_TRUE(contains(msg2, "U+65E5")) << msg2;
}

TEST(Tokenizer, CharJsonRoundTrip) {
  TempDir dir;
  const std::string text = "the qu\xC3\xAF" "ck \xF0\x9F\xA6\x8A";
  const Tokenizer tok = Tokenizer::char_level_from(text);
  const auto j = tok.to_json();
  EXPECT_EQ(j.at("type"), "char");
  EXPECT_EQ(j.at("vocab_size"), tok.vocab_size());

  const Tokenizer back = Tokenizer::from_json(j, "test");
  EXPECT_EQ(back.kind(), Tokenizer::Kind::Char);
  EXPECT_EQ(back.vocab_size(), tok.vocab_size());
  EXPECT_EQ(back.encode(text), tok.encode(text));
  EXPECT_EQ(back.to_json(), j);

  // From a file, bare and wrapped as in dataset.json.
  const std::string bare = dir.file("tok.json"), wrapped = dir.file("dataset.json");
  std::ofstream(bare) << j.dump();
  std::ofstream(wrapped) << nlohmann::json{{"tokenizer", j}, {"train", {{"tokens", 1}}}}.dump();
  EXPECT_EQ(Tokenizer::load(bare).encode(text), tok.encode(text));
  EXPECT_EQ(Tokenizer::load(wrapped).encode(text), tok.encode(text));
}

TEST(Tokenizer, ByteJsonRoundTrip) {
  const auto j = Tokenizer::byte_level().to_json();
  const Tokenizer back = Tokenizer::from_json(j, "test");
  EXPECT_EQ(back.kind(), Tokenizer::Kind::Byte);
  EXPECT_EQ(back.vocab_size(), 257);
}

TEST(Tokenizer, FromJsonRejectsBadDescriptions) {
  for (const char* bad : {R"({"type": "bpe"})", R"({"type": "char", "chars": []})",
                          R"({"type": "char", "chars": [97, -1]})",
                          R"({"type": "char", "chars": [1114112]})", R"({"chars": [97]})",
                          R"([1, 2])"}) {
    const std::string msg =
        input_error_of([&] { Tokenizer::from_json(nlohmann::json::parse(bad), "where.json"); });
    EXPECT_TRUE(contains(msg, "where.json")) << bad << " -> " << msg;
  }
}

TEST(Tokenizer, LoadErrorsNameTheFile) {
  TempDir dir;
  const std::string missing = dir.file("nope.json");
  EXPECT_TRUE(contains(input_error_of([&] { Tokenizer::load(missing); }), missing));
  const std::string bad = dir.file("bad.json");
  std::ofstream(bad) << "{not json";
  EXPECT_TRUE(contains(input_error_of([&] { Tokenizer::load(bad); }), bad));
}

// ------------------------------------------------------------------------------------------
// Token shards

TEST(Shard, WriteReadRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("x_train_000000.bin");
  std::vector<int32_t> tokens = {0, 1, 2, 65535, 50256, 7, 7, 300};
  for (int i = 0; i < 1000; i++) tokens.push_back((i * 7919) % 65536);
  write_token_shard(path, tokens);
  EXPECT_EQ(fs::file_size(path), kShardHeaderInts * 4 + tokens.size() * 2);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  TokenShard shard(path);
  EXPECT_EQ(shard.path(), path);
  ASSERT_EQ(shard.size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); i++) ASSERT_EQ(shard.token(i), tokens[i]) << i;
  std::vector<int32_t> out(5);
  shard.read(2, 5, out.data());
  EXPECT_EQ(out, std::vector<int32_t>(tokens.begin() + 2, tokens.begin() + 7));
  EXPECT_THROW(shard.read(tokens.size() - 2, 3, out.data()), Error);

  // The header is llm.c's: magic, version 1, count.
  std::ifstream in(path, std::ios::binary);
  int32_t hdr[3];
  in.read(reinterpret_cast<char*>(hdr), sizeof(hdr));
  EXPECT_EQ(hdr[0], kShardMagic);
  EXPECT_EQ(hdr[1], 1);
  EXPECT_EQ(hdr[2], (int32_t)tokens.size());

  // Moving keeps the mapping valid.
  TokenShard moved(std::move(shard));
  EXPECT_EQ(moved.size(), tokens.size());
  EXPECT_EQ(moved.token(3), 65535);
}

TEST(Shard, EmptyShardRoundTrips) {
  TempDir dir;
  const std::string path = dir.file("empty.bin");
  write_token_shard(path, {});
  EXPECT_EQ(TokenShard(path).size(), 0u);
}

TEST(Shard, WriteRejectsTokensThatDoNotFitUint16) {
  TempDir dir;
  EXPECT_THROW(write_token_shard(dir.file("big.bin"), {1, 65536}), Error);
  EXPECT_FALSE(fs::exists(dir.file("big.bin")));
}

// BUG: write_token_shard opens PATH.tmp before validating the tokens, so a token >= 65536
// throws with the FILE* still open and PATH.tmp left on disk.
TEST(Shard, BUG_WriteRejectingTokensLeavesNoTempFile) {
  TempDir dir;
  EXPECT_THROW(write_token_shard(dir.file("big.bin"), {1, 65536}), Error);
  EXPECT_FALSE(fs::exists(dir.file("big.bin.tmp"))) << "stale temp file left behind";
}

TEST(Shard, MalformedFilesThrowInputErrorNamingThePath) {
  TempDir dir;
  const std::vector<uint16_t> body10(10, 1);
  struct Case {
    const char* name;
    std::function<void(const std::string&)> make;
    const char* expect;  // a word the message must hold
  };
  const std::vector<Case> cases = {
      {"bad_magic.bin", [&](auto& p) { write_raw_shard(p, 12345, 1, 10, pack(body10)); }, "magic"},
      {"truncated.bin", [&](auto& p) { write_raw_shard(p, kShardMagic, 1, 100, pack(body10)); },
       "truncated"},
      {"truncated_v2.bin",  // 10 uint16s are only 5 uint32s
       [&](auto& p) { write_raw_shard(p, kShardMagic, 2, 10, pack(body10)); }, "truncated"},
      {"version3.bin", [&](auto& p) { write_raw_shard(p, kShardMagic, 3, 10, pack(body10)); },
       "version 3"},
      {"negative.bin", [&](auto& p) { write_raw_shard(p, kShardMagic, 1, -5, pack(body10)); },
       "negative"},
      {"short.bin", [&](auto& p) { std::ofstream(p, std::ios::binary) << std::string(100, 'x'); },
       "header"},
      {"zero.bin", [&](auto& p) { std::ofstream(p, std::ios::binary); }, "header"},
      {"missing.bin", [&](auto&) {}, "cannot open"},
  };
  for (const auto& c : cases) {
    const std::string path = dir.file(c.name);
    c.make(path);
    const std::string msg = input_error_of([&] { TokenShard s(path); });
    EXPECT_TRUE(contains(msg, path)) << c.name << ": " << msg;
    EXPECT_TRUE(contains(msg, c.expect)) << c.name << ": " << msg;
  }
}

// Counts this process's memory mappings of a file.
int mappings_of(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  const std::string canon = fs::canonical(path).string();
  while (std::getline(maps, line))
    if (line.size() >= canon.size() && line.compare(line.size() - canon.size(), canon.size(), canon) == 0)
      n++;
  return n;
}

// BUG: TokenShard's constructor maps the file and then throws for a bad magic/version/size;
// the destructor never runs for a throwing constructor, so every rejected shard leaks its
// mapping (visible in /proc/self/maps).
TEST(Shard, BUG_RejectedShardDoesNotLeakItsMapping) {
  TempDir dir;
  const std::string path = dir.file("bad_magic.bin");
  write_raw_shard(path, 12345, 1, 10, std::string(20, '\0'));
  const int before = mappings_of(path);
  for (int i = 0; i < 3; i++) EXPECT_THROW(TokenShard s(path), InputError);
  EXPECT_EQ(mappings_of(path), before) << "rejected shard left its mmap behind";
}

TEST(Shard, CheckVocabNamesThePosition) {
  TempDir dir;
  const std::string path = dir.file("v.bin");
  write_token_shard(path, {1, 2, 3, 9, 4, 12});
  TokenShard shard(path);
  EXPECT_NO_THROW(shard.check_vocab(13));
  const std::string msg = input_error_of([&] { shard.check_vocab(9); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "position 3")) << msg;
  EXPECT_TRUE(contains(msg, "token id 9")) << msg;
  const std::string msg2 = input_error_of([&] { shard.check_vocab(10); });
  EXPECT_TRUE(contains(msg2, "position 5")) << msg2;
}

TEST(Shard, Version2ReadsUint32Tokens) {
  TempDir dir;
  const std::string path = dir.file("v2.bin");
  const std::vector<uint32_t> toks = {0, 65535, 65536, 100000, 1u << 20, 5};
  write_raw_shard(path, kShardMagic, 2, (int32_t)toks.size(), pack(toks));
  TokenShard shard(path);
  ASSERT_EQ(shard.size(), toks.size());
  for (size_t i = 0; i < toks.size(); i++) EXPECT_EQ(shard.token(i), (int32_t)toks[i]);
  std::vector<int32_t> out(3);
  shard.read(2, 3, out.data());
  EXPECT_EQ(out, (std::vector<int32_t>{65536, 100000, 1 << 20}));
  const std::string msg = input_error_of([&] { shard.check_vocab(70000); });
  EXPECT_TRUE(contains(msg, "position 3")) << msg;
}

TEST(Shard, ExtraTrailingBytesAreTolerated) {
  TempDir dir;
  const std::string path = dir.file("trail.bin");
  write_raw_shard(path, kShardMagic, 1, 3, pack(std::vector<uint16_t>{4, 5, 6, 7, 8}));
  TokenShard shard(path);
  EXPECT_EQ(shard.size(), 3u);
  EXPECT_EQ(shard.token(2), 6);
}

// ------------------------------------------------------------------------------------------
// Splits and dataset.json

TEST(TokenSplit, FindsSortedShardsOfTheSplit) {
  TempDir dir;
  write_token_shard(dir.file("d_train_000002.bin"), {20, 21, 22});
  write_token_shard(dir.file("d_train_000000.bin"), {0, 1});
  write_token_shard(dir.file("d_train_000001.bin"), {10, 11, 12, 13});
  write_token_shard(dir.file("d_val_000000.bin"), {90, 91, 92, 93, 94});
  std::ofstream(dir.file("train_notes.txt")) << "not a shard";
  std::ofstream(dir.file("d_train_000003.bin.tmp")) << "not a shard either";
  fs::create_directories(dir.file("train_subdir.bin"));  // a directory, not a file

  TokenSplit train(dir.str(), "train");
  EXPECT_EQ(train.split(), "train");
  ASSERT_EQ(train.shards().size(), 3u);
  EXPECT_EQ(fs::path(train.shards()[0].path()).filename(), "d_train_000000.bin");
  EXPECT_EQ(fs::path(train.shards()[1].path()).filename(), "d_train_000001.bin");
  EXPECT_EQ(fs::path(train.shards()[2].path()).filename(), "d_train_000002.bin");
  EXPECT_EQ(train.tokens(), 9u);
  EXPECT_EQ(train.shards()[2].token(0), 20);

  TokenSplit val(dir.str(), "val");
  ASSERT_EQ(val.shards().size(), 1u);
  EXPECT_EQ(val.tokens(), 5u);

  EXPECT_NO_THROW(train.check_vocab(23));
  const std::string msg = input_error_of([&] { train.check_vocab(22); });
  EXPECT_TRUE(contains(msg, "d_train_000002.bin")) << msg;
  EXPECT_TRUE(contains(msg, "position 2")) << msg;
}

TEST(TokenSplit, ErrorsForMissingDirAndMissingShards) {
  TempDir dir;
  const std::string missing = dir.file("no_such_dir");
  const std::string msg = input_error_of([&] { TokenSplit s(missing, "train"); });
  EXPECT_TRUE(contains(msg, missing)) << msg;

  write_token_shard(dir.file("d_val_000000.bin"), {1, 2, 3});
  const std::string msg2 = input_error_of([&] { TokenSplit s(dir.str(), "train"); });
  EXPECT_TRUE(contains(msg2, dir.str())) << msg2;
  EXPECT_TRUE(contains(msg2, "train")) << msg2;

  // A malformed shard among good ones is named.
  write_token_shard(dir.file("d_train_000000.bin"), {1, 2, 3});
  write_raw_shard(dir.file("d_train_000001.bin"), 7, 1, 0, "");
  const std::string msg3 = input_error_of([&] { TokenSplit s(dir.str(), "train"); });
  EXPECT_TRUE(contains(msg3, "d_train_000001.bin")) << msg3;
}

// Split naming (issue 14 part 4): whole components of the stem, cut at '_', '-' and '.', decide
// the split; a substring does not. The old rule (name.find(split)) fails every Interval/
// Retrieval/Validation case below.
TEST(SplitFiles, WholeNameComponentsDecideTheSplit) {
  const std::map<std::string, ShardSplit> cases = {
      {"fineweb_train_000001.bin", ShardSplit::Train},  // llm.c
      {"fineweb_val_000000.bin", ShardSplit::Val},
      {"train_000000.bin", ShardSplit::Train},  // older `chainrule prepare` data dirs
      {"val_000000.bin", ShardSplit::Val},
      {"tiny_train.bin", ShardSplit::Train},
      {"tiny_val.bin", ShardSplit::Val},
      {"interval_train_000001.bin", ShardSplit::Train},
      {"retrieval_val_000000.bin", ShardSplit::Val},
      {"retrieval_train_000001.bin", ShardSplit::Train},
      {"web-train.part.000.bin", ShardSplit::Train},
      {"a.val.bin", ShardSplit::Val},
      {"interval_000001.bin", ShardSplit::None},
      {"validation_000000.bin", ShardSplit::None},
      {"trainer_000000.bin", ShardSplit::None},
      {"fineweb_train_000001.mask", ShardSplit::None},  // a loss mask, not tokens
      {"fineweb_train_000001.bin.mask", ShardSplit::None},
      {"fineweb_train_000001.bin.tmp", ShardSplit::None},
      {"train.txt", ShardSplit::None},
  };
  for (const auto& [name, want] : cases)
    EXPECT_EQ(split_of_shard_name("/some/dir/" + name), want) << name;
  const std::string msg = input_error_of([] { split_of_shard_name("/d/x_train_val_000.bin"); });
  EXPECT_TRUE(contains(msg, "/d/x_train_val_000.bin")) << msg;
  EXPECT_TRUE(contains(msg, "data.train_files")) << msg;
}

// The issue's first case, verbatim: a directory holding only interval_train_000001.bin used that
// shard as the validation split too ("interval" contains "val").
TEST(SplitFiles, IssueCaseIntervalTrainAloneHasNoValShard) {
  TempDir dir;
  write_token_shard(dir.file("interval_train_000001.bin"), {1, 2, 3});
  TokenSplit train(dir.str(), "train");
  ASSERT_EQ(train.shards().size(), 1u);
  const std::string msg = input_error_of([&] { TokenSplit val(dir.str(), "val"); });
  EXPECT_TRUE(contains(msg, "no val shard")) << msg;
  EXPECT_TRUE(contains(msg, dir.str())) << msg;
  EXPECT_TRUE(contains(msg, "data.val_files")) << msg;
}

// The issue's second case, verbatim: with retrieval_train_000001.bin and retrieval_val_000000.bin
// the train shard was counted into the validation split too ("retrieval" contains "val").
TEST(SplitFiles, IssueCaseRetrievalShardsEachInTheirOwnSplit) {
  TempDir dir;
  write_token_shard(dir.file("retrieval_train_000001.bin"), {1, 2, 3, 4});
  write_token_shard(dir.file("retrieval_val_000000.bin"), {5, 6});
  TokenSplit train(dir.str(), "train"), val(dir.str(), "val");
  ASSERT_EQ(train.shards().size(), 1u);
  ASSERT_EQ(val.shards().size(), 1u);
  EXPECT_EQ(fs::path(train.shards()[0].path()).filename(), "retrieval_train_000001.bin");
  EXPECT_EQ(fs::path(val.shards()[0].path()).filename(), "retrieval_val_000000.bin");
  EXPECT_EQ(val.tokens(), 2u);
}

TEST(SplitFiles, AmbiguousNameAndMaskFiles) {
  TempDir dir;
  write_token_shard(dir.file("d_train_000000.bin"), {1, 2, 3});
  write_token_shard(dir.file("d_val_000000.bin"), {1, 2});
  // Never token shards (their contents are the loader's business, not the split rule's).
  std::ofstream(dir.file("d_train_000000.mask")) << "a loss mask";
  std::ofstream(dir.file("d_val_000000.mask")) << "a loss mask";
  EXPECT_EQ(find_split_files(dir.str()).train.size(), 1u);
  EXPECT_EQ(find_split_files(dir.str()).val.size(), 1u);
  // A glob that also matches the masks still reads only token shards.
  const SplitFiles g = find_split_files(dir.str(), {"d_train_*", "d_val_*"});
  ASSERT_EQ(g.train.size(), 1u);
  EXPECT_EQ(fs::path(g.train[0]).filename(), "d_train_000000.bin");
  ASSERT_EQ(g.val.size(), 1u);

  write_token_shard(dir.file("d_train_val_000000.bin"), {1});
  const std::string msg = input_error_of([&] { find_split_files(dir.str()); });
  EXPECT_TRUE(contains(msg, dir.file("d_train_val_000000.bin"))) << msg;
  // Globs for both splits replace the name rule, ambiguous names included.
  EXPECT_NO_THROW(find_split_files(dir.str(), {"d_train_0*.bin", "d_val_*.bin"}));
}

// data.train_files / data.val_files: globs relative to data.dir (subdirectories, braces) or
// absolute, sorted by path; a directory name with glob metacharacters matches only itself.
TEST(SplitFiles, GlobsOverrideTheNameRule) {
  TempDir root;
  const std::string dir = root.file("data[1]");
  fs::create_directories(dir + "/shards");
  fs::create_directories(dir + "/heldout");
  write_token_shard(dir + "/shards/part-002.bin", {2, 2});
  write_token_shard(dir + "/shards/part-001.bin", {1});
  write_token_shard(dir + "/shards/other.tok", {3, 3, 3});
  write_token_shard(dir + "/heldout/part-000.bin", {9, 9, 9, 9});
  // What the pattern would match if data[1] were not escaped (the class [1] matches "1").
  fs::create_directories(root.file("data1/shards"));
  write_token_shard(root.file("data1/shards/part-009.bin"), {7});

  const SplitFiles f = find_split_files(dir, {"shards/{part-*.bin,other.tok}", "heldout/*.bin"});
  ASSERT_EQ(f.train.size(), 3u);
  EXPECT_EQ(fs::path(f.train[0]).filename(), "other.tok");
  EXPECT_EQ(fs::path(f.train[1]).filename(), "part-001.bin");
  EXPECT_EQ(fs::path(f.train[2]).filename(), "part-002.bin");
  ASSERT_EQ(f.val.size(), 1u);
  // An absolute pattern is the user's own glob: its brackets are glob syntax, escaped here.
  TokenSplit val(dir, "val", {"", fs::absolute(root.str()).string() + "/data\\[1\\]/heldout/*.bin"});
  EXPECT_EQ(val.tokens(), 4u);
  // One glob, the other split by name: no *_val_*.bin at the top of the dir.
  const std::string msg = input_error_of([&] { TokenSplit s(dir, "val", {"shards/*.bin", ""}); });
  EXPECT_TRUE(contains(msg, "no val shard")) << msg;
}

TEST(SplitFiles, GlobMatchingNothingNamesTheKeyAndPattern) {
  TempDir dir;
  write_token_shard(dir.file("d_train_000000.bin"), {1});
  write_token_shard(dir.file("d_val_000000.bin"), {1});
  fs::create_directories(dir.file("held_out.bin"));  // a directory does not count
  const std::string msg =
      input_error_of([&] { TokenSplit s(dir.str(), "train", {"", "held*.bin"}); });
  EXPECT_TRUE(contains(msg, "data.val_files 'held*.bin'")) << msg;
  EXPECT_TRUE(contains(msg, dir.str())) << msg;
  const std::string msg2 = input_error_of([&] { find_split_files(dir.str(), {"x/*.bin", ""}); });
  EXPECT_TRUE(contains(msg2, "data.train_files 'x/*.bin'")) << msg2;
}

TEST(SplitFiles, AFileInBothSplitsIsAnError) {
  TempDir dir;
  write_token_shard(dir.file("d_train_000000.bin"), {1});
  write_token_shard(dir.file("d_val_000000.bin"), {1});
  // Every .bin as train, val by name: d_val_000000.bin is in both.
  const std::string msg = input_error_of([&] { TokenSplit s(dir.str(), "train", {"*.bin", ""}); });
  EXPECT_TRUE(contains(msg, "d_val_000000.bin")) << msg;
  EXPECT_TRUE(contains(msg, "both splits")) << msg;
  EXPECT_TRUE(contains(msg, "data.train_files '*.bin'")) << msg;
  // The same file reached by a relative and an absolute pattern is one file.
  const std::string abs = fs::absolute(dir.file("d_train_000000.bin")).string();
  const std::string msg2 =
      input_error_of([&] { find_split_files(dir.str(), {"d_train_*.bin", abs}); });
  EXPECT_TRUE(contains(msg2, "both splits")) << msg2;
}

TEST(DatasetInfo, WriteReadRoundTrip) {
  TempDir dir;
  EXPECT_FALSE(read_dataset_info(dir.str()).has_value());
  DatasetInfo info;
  info.tokenizer = Tokenizer::char_level_from("xyz\xC3\xA9");
  info.train_tokens = 123456789012ull;
  info.val_tokens = 42;
  info.train_bytes = 223456789012ull;
  info.val_bytes = 0;
  write_dataset_info(dir.str(), info);
  const auto back = read_dataset_info(dir.str());
  ASSERT_TRUE(back.has_value());
  ASSERT_TRUE(back->tokenizer.has_value());
  EXPECT_EQ(back->tokenizer->vocab_size(), 5);
  EXPECT_EQ(back->tokenizer->encode("\xC3\xA9zyx"), (std::vector<int32_t>{3, 2, 1, 0}));
  EXPECT_EQ(back->train_tokens, info.train_tokens);
  EXPECT_EQ(back->val_tokens, info.val_tokens);
  EXPECT_EQ(back->train_bytes, info.train_bytes);
  EXPECT_EQ(back->val_bytes, 0u);
}

TEST(DatasetInfo, MalformedFileThrowsInputError) {
  TempDir dir;
  std::ofstream(dir.file(kDatasetInfoFile)) << R"({"train": {"tokens": 5}})";  // no val
  const std::string msg = input_error_of([&] { read_dataset_info(dir.str()); });
  EXPECT_TRUE(contains(msg, kDatasetInfoFile)) << msg;
}

// ------------------------------------------------------------------------------------------
// BatchLoader

// A data dir whose every token says where it lives: shard k, position i -> 1000*k + i.
// Shard sizes with T = 4: 37 -> 9 windows, 4 -> 0 windows (too short), 20 -> 4, 9 -> 2.
class LoaderTest : public ::testing::Test {
 protected:
  static constexpr int T = 4;
  static constexpr size_t kWindows = 15;
  void SetUp() override {
    const std::vector<int> sizes = {37, 4, 20, 9};
    for (size_t k = 0; k < sizes.size(); k++) {
      std::vector<int32_t> toks(sizes[k]);
      for (int i = 0; i < sizes[k]; i++) toks[i] = 1000 * (int)k + i;
      write_token_shard(dir_.file("d_train_00000" + std::to_string(k) + ".bin"), toks);
    }
    split_ = std::make_unique<TokenSplit>(dir_.str(), "train");
  }
  // All (inputs, targets) of a global batch.
  static std::vector<int32_t> batch(BatchLoader& l, uint64_t step, int G, int first, int count) {
    std::vector<int32_t> in((size_t)count * T), tgt((size_t)count * T);
    l.batch(step, G, first, count, in.data(), tgt.data());
    in.insert(in.end(), tgt.begin(), tgt.end());
    return in;
  }
  // The first input token of each sequence of batch(step): identifies the window.
  static std::vector<int32_t> starts(BatchLoader& l, uint64_t step, int G) {
    std::vector<int32_t> in((size_t)G * T), tgt((size_t)G * T), out;
    l.batch(step, G, 0, G, in.data(), tgt.data());
    for (int j = 0; j < G; j++) out.push_back(in[(size_t)j * T]);
    return out;
  }
  TempDir dir_;
  std::unique_ptr<TokenSplit> split_;
};

TEST_F(LoaderTest, WindowsAreShiftedByOneAndStayInOneShard) {
  BatchLoader loader(*split_, T, 1, /*shuffle=*/false);
  ASSERT_EQ(loader.num_windows(), kWindows);
  EXPECT_EQ(loader.seq_len(), T);
  std::vector<int32_t> in(T), tgt(T);
  std::vector<int32_t> expected_starts;
  for (int k : {0, 2, 3}) {
    const int n = k == 0 ? 9 : k == 2 ? 4 : 2;
    for (int w = 0; w < n; w++) expected_starts.push_back(1000 * k + w * T);
  }
  for (size_t w = 0; w < kWindows; w++) {
    loader.window(w, in.data(), tgt.data());
    EXPECT_EQ(in[0], expected_starts[w]) << "window " << w << " (file order, stride T)";
    for (int t = 0; t < T; t++) {
      EXPECT_EQ(tgt[t], in[t] + 1) << "window " << w << " t " << t;
      if (t + 1 < T) {
        EXPECT_EQ(tgt[t], in[t + 1]);
      }
      EXPECT_EQ(tgt[t] / 1000, in[0] / 1000) << "window " << w << " crosses a shard boundary";
    }
  }
}

TEST_F(LoaderTest, UnshuffledBatchesFollowFileOrder) {
  BatchLoader loader(*split_, T, 7, /*shuffle=*/false);
  std::vector<int32_t> in(T), tgt(T);
  for (uint64_t step = 0; step < 8; step++) {  // crosses epochs: 8 * 4 = 32 > 15
    const auto s = starts(loader, step, 4);
    for (int j = 0; j < 4; j++) {
      loader.window((step * 4 + j) % kWindows, in.data(), tgt.data());
      EXPECT_EQ(s[j], in[0]) << "step " << step << " seq " << j;
    }
  }
}

TEST_F(LoaderTest, ShuffledWindowsAreStillValid) {
  BatchLoader loader(*split_, T, 3, /*shuffle=*/true);
  const int G = 5;
  for (uint64_t step = 0; step < 6; step++) {
    const auto b = batch(loader, step, G, 0, G);
    for (int j = 0; j < G; j++)
      for (int t = 0; t < T; t++) {
        const int32_t x = b[(size_t)j * T + t], y = b[(size_t)(G + j) * T + t];
        EXPECT_EQ(y, x + 1);
        EXPECT_EQ(y / 1000, b[(size_t)j * T] / 1000);
        EXPECT_EQ(b[(size_t)j * T] % 1000 % T, 0) << "window starts at a multiple of T";
      }
  }
}

TEST_F(LoaderTest, BatchIsAPureFunctionOfSeedStepIndex) {
  BatchLoader a(*split_, T, 42, true), b(*split_, T, 42, true);
  const int G = 6;
  const std::vector<uint64_t> steps = {0, 1, 2, 3, 4, 5, 6, 7, 100, 12345};
  std::map<uint64_t, std::vector<int32_t>> from_a;
  for (uint64_t s : steps) from_a[s] = batch(a, s, G, 0, G);
  // b in a scrambled order, with epochs interleaved (the cached permutation must not matter).
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    EXPECT_EQ(batch(b, *it, G, 0, G), from_a[*it]) << "step " << *it;
    EXPECT_EQ(batch(b, 0, G, 0, G), from_a[0]);
  }
  // a itself, asked again.
  EXPECT_EQ(batch(a, 3, G, 0, G), from_a[3]);
}

TEST_F(LoaderTest, OneEpochVisitsEveryWindowOnce) {
  BatchLoader loader(*split_, T, 9, true), plain(*split_, T, 9, false);
  std::multiset<int32_t> all_windows;
  std::vector<int32_t> in(T), tgt(T);
  for (size_t w = 0; w < kWindows; w++) {
    plain.window(w, in.data(), tgt.data());
    all_windows.insert(in[0]);
  }
  const int G = 5;  // 3 steps per epoch of 15 windows
  for (int epoch = 0; epoch < 3; epoch++) {
    std::multiset<int32_t> seen;
    for (int s = 0; s < 3; s++)
      for (int32_t x : starts(loader, (uint64_t)(epoch * 3 + s), G)) seen.insert(x);
    EXPECT_EQ(seen, all_windows) << "epoch " << epoch;
  }
  // With a global batch that does not divide W, the sequence index still runs through epochs:
  // sequences [0, W) across steps are one permutation.
  std::multiset<int32_t> seen;
  const int G2 = 4;
  for (size_t g = 0; g < kWindows; g++) {
    std::vector<int32_t> i1(T), t1(T);
    loader.batch(g / G2, G2, (int)(g % G2), 1, i1.data(), t1.data());
    seen.insert(i1[0]);
  }
  EXPECT_EQ(seen, all_windows);
}

TEST_F(LoaderTest, EpochsUseDifferentPermutations) {
  BatchLoader loader(*split_, T, 5, true);
  const int G = (int)kWindows;  // one step = one epoch
  const auto e0 = starts(loader, 0, G), e1 = starts(loader, 1, G), e2 = starts(loader, 2, G);
  EXPECT_TRUE(e0 != e1 || e1 != e2) << "every epoch has the same order";
}

TEST_F(LoaderTest, DataParallelSlicesConcatenateToTheGlobalBatch) {
  BatchLoader full(*split_, T, 11, true), rank0(*split_, T, 11, true), rank1(*split_, T, 11, true);
  const int G = 6;
  for (uint64_t step : {0ull, 1ull, 2ull, 7ull, 31ull}) {
    std::vector<int32_t> gin((size_t)G * T), gtgt((size_t)G * T);
    full.batch(step, G, 0, G, gin.data(), gtgt.data());
    // dp=2 halves, each rank reading its half in micro-batches of 1 and 2.
    std::vector<int32_t> in((size_t)G * T), tgt((size_t)G * T);
    rank0.batch(step, G, 0, 1, in.data(), tgt.data());
    rank0.batch(step, G, 1, 2, in.data() + 1 * T, tgt.data() + 1 * T);
    rank1.batch(step, G, 3, 2, in.data() + 3 * T, tgt.data() + 3 * T);
    rank1.batch(step, G, 5, 1, in.data() + 5 * T, tgt.data() + 5 * T);
    EXPECT_EQ(in, gin) << "step " << step;
    EXPECT_EQ(tgt, gtgt) << "step " << step;
  }
}

TEST_F(LoaderTest, DifferentSeedsGiveDifferentOrders) {
  BatchLoader a(*split_, T, 1, true), b(*split_, T, 2, true);
  const int G = (int)kWindows;
  const auto sa = starts(a, 0, G), sb = starts(b, 0, G);
  EXPECT_NE(sa, sb);
  EXPECT_EQ(std::multiset<int32_t>(sa.begin(), sa.end()), std::multiset<int32_t>(sb.begin(), sb.end()));
  // And shuffling actually shuffles.
  BatchLoader plain(*split_, T, 1, false);
  EXPECT_NE(sa, starts(plain, 0, G));
}

TEST_F(LoaderTest, TooShortSplitThrowsInputError) {
  const std::string msg = input_error_of([&] { BatchLoader l(*split_, 37, 1, true); });
  EXPECT_TRUE(contains(msg, "train")) << msg;
  BatchLoader ok(*split_, 36, 1, true);  // only the 37-token shard has a window of 36+1
  EXPECT_EQ(ok.num_windows(), 1u);
}

TEST(BatchLoader, ExactFitShardHasOneWindow) {
  TempDir dir;
  write_token_shard(dir.file("train.bin"), {5, 6, 7, 8, 9});  // T + 1 tokens
  TokenSplit split(dir.str(), "train");
  BatchLoader loader(split, 4, 0, true);
  ASSERT_EQ(loader.num_windows(), 1u);
  std::vector<int32_t> in(4), tgt(4);
  loader.batch(3, 1, 0, 1, in.data(), tgt.data());
  EXPECT_EQ(in, (std::vector<int32_t>{5, 6, 7, 8}));
  EXPECT_EQ(tgt, (std::vector<int32_t>{6, 7, 8, 9}));
}

}  // namespace
}  // namespace cr
