// TensorBoard event files (core/io/tfevents.h): the TFRecord framing and its masked CRC32C
// against known values, and a written file parsed back by an independent reader below, which
// also catches a corrupted byte. tests/cli/tensorboard.sh reads the files with TensorBoard's own
// reader.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "core/io/crc32c.h"
#include "core/io/tfevents.h"
#include "proto/tensorboard.pb.h"
#include "tests/unit/test_util.h"

namespace cr {
namespace {

namespace fs = std::filesystem;

// The mask written out independently of tfevents.cpp: rotate right by 15, add the constant.
uint32_t mask_by_hand(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

uint64_t le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v |= (uint64_t)(uint8_t)s[at + i] << (8 * i);
  return v;
}

// A TFRecord reader of our own: every record's payload, or the first framing error.
struct Records {
  std::vector<std::string> payloads;
  std::string error;  // empty when every record is whole and its CRCs match
};
Records read_records(const std::string& bytes) {
  Records r;
  size_t at = 0;
  while (at < bytes.size()) {
    if (bytes.size() - at < 12) return r.error = fmt::format("torn header at byte {}", at), r;
    const uint64_t n = le(bytes, at, 8);
    if (le(bytes, at + 8, 4) != masked_crc32c(bytes.data() + at, 8))
      return r.error = fmt::format("length CRC mismatch at byte {}", at), r;
    if (bytes.size() - at - 12 < n + 4) return r.error = fmt::format("torn record at byte {}", at), r;
    const std::string data = bytes.substr(at + 12, n);
    if (le(bytes, at + 12 + n, 4) != masked_crc32c(data.data(), data.size()))
      return r.error = fmt::format("data CRC mismatch in record {}", r.payloads.size()), r;
    r.payloads.push_back(data);
    at += 12 + n + 4;
  }
  return r;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST(TfEvents, MaskedCrcKnownValues) {
  // The CRC32C check value (RFC 3720 / iSCSI: crc32c("123456789") = 0xE3069283), masked by hand.
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(masked_crc32c("123456789", 9), 0xc78ab0e5u);
  EXPECT_EQ(mask_by_hand(0xE3069283u), 0xc78ab0e5u);
  // The empty string's CRC is 0, so its masked CRC is the constant itself; "foo" as TensorBoard's
  // own masked_crc32c (tensorboard.compat.tensorflow_stub.pywrap_tensorflow) computes it.
  EXPECT_EQ(masked_crc32c("", 0), 0xa282ead8u);
  EXPECT_EQ(masked_crc32c("foo", 3), 0xfebe8a61u);
  const std::vector<int32_t> bytes = testing::random_tokens(1000, 256, 7);
  std::string s;
  for (int32_t b : bytes) s.push_back((char)b);
  EXPECT_EQ(masked_crc32c(s.data(), s.size()), mask_by_hand(crc32c(s.data(), s.size())));
}

TEST(TfEvents, FrameLayout) {
  const std::string f = tfrecord_frame("abcd");
  ASSERT_EQ(f.size(), 8u + 4 + 4 + 4);
  EXPECT_EQ(le(f, 0, 8), 4u);
  EXPECT_EQ(le(f, 8, 4), mask_by_hand(crc32c(f.data(), 8)));
  EXPECT_EQ(f.substr(12, 4), "abcd");
  EXPECT_EQ(le(f, 16, 4), mask_by_hand(crc32c("abcd", 4)));
}

TEST(TfEvents, WrittenFileParsesBack) {
  testing::TempDir dir;
  std::string path;
  {
    EventWriter w(dir.str(), 7);
    path = w.path();
    w.scalar("train/loss", 7, 2.5f);
    EXPECT_EQ(read_records(slurp(path)).payloads.size(), 2u) << "records before flush() reached the file";
    w.text("samples/text", 8, "one\ntwo \xe2\x82\xac");  // a euro sign: UTF-8 passes unchanged
    w.scalar("val/loss", 8, -0.125f);
    w.flush();
    w.text("samples/text", 9, std::string("cut \xe2\x82", 6));  // a character cut short
  }  // the destructor flushes the last record
  const std::string name = fs::path(path).filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  EXPECT_EQ(fs::path(path).parent_path(), fs::path(dir.str()));

  const Records r = read_records(slurp(path));
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.payloads.size(), 6u);
  std::vector<tensorboard::Event> ev(r.payloads.size());
  for (size_t i = 0; i < ev.size(); i++) ASSERT_TRUE(ev[i].ParseFromString(r.payloads[i])) << i;
  EXPECT_EQ(ev[0].file_version(), "brain.Event:2");
  EXPECT_GT(ev[0].wall_time(), 1.6e9);  // seconds since 1970, not milliseconds or 0
  EXPECT_LT(ev[0].wall_time(), 1e10);
  ASSERT_TRUE(ev[1].has_session_log());
  EXPECT_EQ(ev[1].session_log().status(), tensorboard::SessionLog::START);
  EXPECT_EQ(ev[1].step(), 7);

  ASSERT_TRUE(ev[2].has_summary());
  ASSERT_EQ(ev[2].summary().value_size(), 1);
  EXPECT_EQ(ev[2].step(), 7);
  EXPECT_EQ(ev[2].summary().value(0).tag(), "train/loss");
  EXPECT_EQ(ev[2].summary().value(0).simple_value(), 2.5f);
  EXPECT_EQ(ev[4].summary().value(0).simple_value(), -0.125f);

  const auto& text = ev[3].summary().value(0);
  EXPECT_EQ(ev[3].step(), 8);
  EXPECT_EQ(text.tag(), "samples/text");
  EXPECT_EQ(text.metadata().plugin_data().plugin_name(), "text");
  EXPECT_EQ(text.tensor().dtype(), tensorboard::DT_STRING);
  EXPECT_EQ(text.tensor().tensor_shape().dim_size(), 0);  // a scalar string
  ASSERT_EQ(text.tensor().string_val_size(), 1);
  EXPECT_EQ(text.tensor().string_val(0), "one\ntwo \xe2\x82\xac");
  EXPECT_EQ(ev[5].summary().value(0).tensor().string_val(0), "cut \xef\xbf\xbd");  // U+FFFD
}

TEST(TfEvents, CorruptedByteIsDetected) {
  testing::TempDir dir;
  std::string path;
  {
    EventWriter w(dir.str(), 0);
    path = w.path();
    w.scalar("train/loss", 1, 1.f);
  }
  const std::string good = slurp(path);
  ASSERT_EQ(read_records(good).error, "");
  // The last record is the scalar: flip a byte of its payload, then one of its length.
  const size_t last = good.size() - read_records(good).payloads.back().size() - 16;
  std::string bad = good;
  bad[last + 12 + 3] ^= 0x01;
  EXPECT_EQ(read_records(bad).error, "data CRC mismatch in record 2");
  bad = good;
  bad[last] ^= 0x01;
  EXPECT_EQ(read_records(bad).error, fmt::format("length CRC mismatch at byte {}", last));
  EXPECT_EQ(read_records(good.substr(0, good.size() - 1)).error, fmt::format("torn record at byte {}", last));
}

TEST(TfEvents, UnwritableDirectoryIsAnInputError) {
  testing::TempDir dir;
  const std::string msg = testing::input_error_of([&] { EventWriter w(dir.file("missing"), 0); });
  EXPECT_NE(msg.find(dir.file("missing") + "/events.out.tfevents."), std::string::npos) << msg;
}

}  // namespace
}  // namespace cr
