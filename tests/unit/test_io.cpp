// Weights files: the safetensors reader/writer (round trip, untrusted-file checks, F16/BF16/F64
// conversion on known bit patterns) and the Hugging Face GPT-2 interchange (names, Conv1D
// transposes, unpadded wte, "transformer." prefix, shape checks, export + load_trained_model).
#include <gtest/gtest.h>

#include "tests/unit/test_util.h"
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/common/error.h"
#include "core/io/safetensors.h"
#include "core/model/gpt.h"
#include "core/model/hf_interchange.h"
#include "launcher/evaluate.h"

namespace cr {
namespace {

using testing::TempDir;
using testing::contains;
using testing::input_error_of;

namespace fs = std::filesystem;
using nlohmann::json;




// Writes a safetensors file by hand: u64 header length (the real one unless overridden),
// header text, data bytes.
void write_st(const std::string& path, const std::string& header, const std::string& data,
              uint64_t hlen_override = UINT64_MAX) {
  const uint64_t hlen = hlen_override == UINT64_MAX ? header.size() : hlen_override;
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&hlen), 8);
  out.write(header.data(), (std::streamsize)header.size());
  out.write(data.data(), (std::streamsize)data.size());
}

template <typename U>
std::string pack(const std::vector<U>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(U));
}

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// ------------------------------------------------------------------------------------------
// safetensors

TEST(Safetensors, WriteReadRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  std::vector<float> a(6), b = {-1.5f, 0.f, 3.25f, std::numeric_limits<float>::denorm_min()};
  for (int i = 0; i < 6; i++) a[i] = 0.1f * (float)i - 0.2f;
  const float scalar = 42.f;
  SafetensorsWriter w;
  w.add("layer.a", a.data(), {2, 3});
  w.add("b", b.data(), {4});
  w.add("scalar", &scalar, {});
  w.add("empty", nullptr, {0, 3});
  w.set_metadata("format", "pt");
  w.set_metadata("note", "h\xC3\xA9llo \"quoted\"");
  w.write(path);
  for (const auto& e : fs::directory_iterator(dir.str()))  // no temporary left beside it
    EXPECT_EQ(e.path().filename().string(), "t.safetensors");

  // Data starts 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  uint64_t hlen = 0;
  in.read(reinterpret_cast<char*>(&hlen), 8);
  EXPECT_EQ((8 + hlen) % 8, 0u);
  EXPECT_EQ(fs::file_size(path), 8 + hlen + (6 + 4 + 1) * 4);

  SafetensorsReader r(path);
  EXPECT_EQ(r.path(), path);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"b", "empty", "layer.a", "scalar"}));
  EXPECT_TRUE(r.has("layer.a"));
  EXPECT_FALSE(r.has("__metadata__"));
  EXPECT_EQ(r.info("layer.a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r.info("layer.a").dtype, "F32");
  EXPECT_EQ(r.info("layer.a").numel(), 6u);
  EXPECT_EQ(r.info("scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(r.info("scalar").numel(), 1u);
  EXPECT_EQ(r.info("empty").numel(), 0u);
  const auto ra = r.read_f32("layer.a"), rb = r.read_f32("b");
  ASSERT_EQ(ra.size(), a.size());
  for (size_t i = 0; i < a.size(); i++) EXPECT_EQ(bits_of(ra[i]), bits_of(a[i]));
  ASSERT_EQ(rb.size(), b.size());
  for (size_t i = 0; i < b.size(); i++) EXPECT_EQ(bits_of(rb[i]), bits_of(b[i]));
  EXPECT_EQ(r.read_f32("scalar"), std::vector<float>{42.f});
  EXPECT_TRUE(r.read_f32("empty").empty());
  EXPECT_EQ(r.metadata().at("format"), "pt");
  EXPECT_EQ(r.metadata().at("note"), "h\xC3\xA9llo \"quoted\"");
  EXPECT_EQ(r.metadata().size(), 2u);

  const std::string msg = input_error_of([&] { r.read_f32("nope"); });
  EXPECT_TRUE(contains(msg, path) && contains(msg, "nope")) << msg;
}

TEST(Safetensors, RejectsMalformedFilesNamingThem) {
  TempDir dir;
  const std::string twelve(12, '\0');  // 3 floats of data
  struct Case {
    const char* name;
    std::function<void(const std::string&)> make;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"short.st", [](auto& p) { std::ofstream(p, std::ios::binary) << "abc"; }, "8 bytes"},
      {"hlen_beyond.st",
       [&](auto& p) {
         write_st(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", twelve, 1 << 20);
       },
       "header length"},
      {"hlen_huge.st",
       [&](auto& p) {
         write_st(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", twelve,
                  0xFFFFFFFFFFFFFFF0ull);
       },
       "header length"},
      {"offsets_beyond.st",
       [&](auto& p) {
         write_st(p, R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", twelve);
       },
       "'a'"},
      {"offsets_vs_shape.st",
       [&](auto& p) {
         write_st(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", twelve);
       },
       "'a'"},
      {"begin_after_end.st",
       [&](auto& p) {
         write_st(p, R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", twelve);
       },
       "'a'"},
      {"dtype.st",
       [&](auto& p) {
         write_st(p, R"({"a":{"dtype":"I32","shape":[3],"data_offsets":[0,12]}})", twelve);
       },
       "I32"},
      {"negative_dim.st",
       [&](auto& p) {
         write_st(p, R"({"a":{"dtype":"F32","shape":[-3],"data_offsets":[0,12]}})", twelve);
       },
       "'a'"},
      {"missing_field.st",
       [&](auto& p) { write_st(p, R"({"a":{"dtype":"F32","shape":[3]}})", twelve); }, "'a'"},
      {"bad_json.st", [&](auto& p) { write_st(p, R"({"a": )", twelve); }, "malformed"},
      {"not_object.st", [&](auto& p) { write_st(p, "[1,2]", twelve); }, "object"},
      {"missing.st", [](auto&) {}, "cannot open"},
  };
  for (const auto& c : cases) {
    const std::string path = dir.file(c.name);
    c.make(path);
    const std::string msg = input_error_of([&] { SafetensorsReader r(path); });
    EXPECT_TRUE(contains(msg, path)) << c.name << ": " << msg;
    EXPECT_TRUE(contains(msg, c.expect)) << c.name << ": " << msg;
  }
}

// BUG: Info::numel() multiplies the dimensions in size_t without an overflow check, so a shape
// whose element count wraps around 2^64 passes the "offsets match shape" check. Here
// 239075442 * 77158673929 = 2^64 + 2: a tensor claiming ~1.8e19 elements is accepted with 8
// bytes of data (each dimension is under the reader's 2^40 limit).
TEST(Safetensors, BUG_RejectsShapeWhoseElementCountOverflows) {
  TempDir dir;
  const std::string path = dir.file("overflow.st");
  write_st(path,
           R"({"a":{"dtype":"F32","shape":[239075442,77158673929],"data_offsets":[0,8]}})",
           std::string(8, '\0'));
  const std::string msg = input_error_of([&] { SafetensorsReader r(path); });
  EXPECT_TRUE(contains(msg, path)) << msg;
}

TEST(Safetensors, HalfPrecisionConversion) {
  TempDir dir;
  const std::string path = dir.file("half.st");
  // F16 bit patterns and their exact values.
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x3555, 0x7BFF, 0x0400, 0x0001,
                                     0x03FF, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x3800};
  const std::vector<float> f16_want = {1.f,
                                       -2.f,
                                       0.333251953125f,
                                       65504.f,
                                       std::ldexp(1.f, -14),  // smallest normal
                                       std::ldexp(1.f, -24),  // smallest subnormal
                                       std::ldexp(1023.f, -24),  // largest subnormal
                                       -0.f,
                                       INFINITY,
                                       -INFINITY,
                                       NAN,
                                       0.5f};
  // BF16: the top 16 bits of an fp32.
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC040, 0x4049, 0x0001, 0x7F80, 0x8000, 0x3E80};
  const std::vector<float> bf16_want = {1.f, -3.f, 3.140625f, std::ldexp(1.f, -133), INFINITY,
                                        -0.f, 0.25f};
  const std::vector<double> f64 = {0.1, -2.5, 1e300};
  const std::string data = pack(f16) + pack(bf16) + pack(f64);
  const size_t a = f16.size() * 2, b = a + bf16.size() * 2, c = b + f64.size() * 8;
  const json header = {
      {"h", {{"dtype", "F16"}, {"shape", {f16.size()}}, {"data_offsets", {0, a}}}},
      {"bf", {{"dtype", "BF16"}, {"shape", {bf16.size()}}, {"data_offsets", {a, b}}}},
      {"d", {{"dtype", "F64"}, {"shape", {f64.size()}}, {"data_offsets", {b, c}}}},
  };
  write_st(path, header.dump(), data);
  SafetensorsReader r(path);

  const auto h = r.read_f32("h");
  ASSERT_EQ(h.size(), f16_want.size());
  for (size_t i = 0; i < h.size(); i++) {
    if (std::isnan(f16_want[i])) {
      EXPECT_TRUE(std::isnan(h[i])) << "f16 0x" << std::hex << f16[i];
    } else {
      EXPECT_EQ(bits_of(h[i]), bits_of(f16_want[i]))
          << "f16 0x" << std::hex << f16[i] << " -> " << h[i] << ", want " << f16_want[i];
    }
  }
  const auto bfv = r.read_f32("bf");
  ASSERT_EQ(bfv.size(), bf16_want.size());
  for (size_t i = 0; i < bfv.size(); i++)
    EXPECT_EQ(bits_of(bfv[i]), bits_of(bf16_want[i])) << "bf16 0x" << std::hex << bf16[i];
  const auto d = r.read_f32("d");
  EXPECT_EQ(d[0], 0.1f);
  EXPECT_EQ(d[1], -2.5f);
  EXPECT_TRUE(std::isinf(d[2]));
}

TEST(Safetensors, EveryF16ValueMatchesTheReferenceConversion) {
  // Reference: value = (-1)^s * 2^(e-15) * (1 + m/1024), subnormals 2^-14 * m/1024.
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
  TempDir dir;
  const std::string path = dir.file("allf16.st");
  write_st(path,
           json{{"x", {{"dtype", "F16"}, {"shape", {65536}}, {"data_offsets", {0, 131072}}}}}.dump(),
           pack(all));
  const auto got = SafetensorsReader(path).read_f32("x");
  int bad = 0;
  for (int i = 0; i < 65536; i++) {
    const int s = i >> 15, e = (i >> 10) & 31, m = i & 1023;
    double want;
    if (e == 31)
      want = m ? NAN : INFINITY;
    else if (e == 0)
      want = std::ldexp((double)m, -24);
    else
      want = std::ldexp(1.0 + m / 1024.0, e - 15);
    if (s) want = -want;
    const bool ok = std::isnan(want) ? std::isnan(got[i])
                                     : (got[i] == (float)want && std::signbit(got[i]) == (bool)s);
    if (!ok && bad++ < 5) ADD_FAILURE() << "f16 0x" << std::hex << i << " -> " << got[i];
  }
  EXPECT_EQ(bad, 0);
}

// ------------------------------------------------------------------------------------------
// Hugging Face GPT-2 interchange

ModelConfig small_config() {
  ModelConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 8;
  c.block_size = 8;
  c.vocab_size = 50;  // padded to 64: 14 padding rows
  return c;
}

// Every parameter distinct and non-zero (including biases and LayerNorms), so a swapped or
// mis-transposed tensor cannot go unnoticed.
std::vector<float> distinct_params(const ModelConfig& cfg) {
  ParamLayout layout(cfg);
  std::vector<float> p(layout.total());
  for (size_t i = 0; i < p.size(); i++) p[i] = 0.001f * (float)(i + 1);
  const auto& wte = layout.at("wte");
  for (size_t i = (size_t)cfg.vocab_size * cfg.n_embd; i < wte.numel; i++) p[wte.offset + i] = 0.f;
  return p;
}

TEST(HfGpt2, SaveLoadRoundTripIsExact) {
  TempDir dir;
  const ModelConfig cfg = small_config();
  ParamLayout layout(cfg);
  std::vector<float> params = distinct_params(cfg);
  const std::string path = dir.file("model.safetensors");
  save_hf_safetensors(cfg, params.data(), path);

  std::vector<float> back(layout.total(), 7.f);  // garbage, including the padding rows
  load_hf_safetensors(cfg, back.data(), path);
  ASSERT_EQ(back.size(), params.size());
  EXPECT_EQ(std::memcmp(back.data(), params.data(), params.size() * 4), 0);
  const auto& wte = layout.at("wte");
  for (size_t i = (size_t)cfg.vocab_size * cfg.n_embd; i < wte.numel; i++)
    ASSERT_EQ(back[wte.offset + i], 0.f) << "padded wte row element " << i;
}

TEST(HfGpt2, PaddingRowsAreNotSaved) {
  TempDir dir;
  const ModelConfig cfg = small_config();
  ParamLayout layout(cfg);
  std::vector<float> params = distinct_params(cfg);
  const auto& wte = layout.at("wte");
  for (size_t i = (size_t)cfg.vocab_size * cfg.n_embd; i < wte.numel; i++) params[wte.offset + i] = 99.f;
  const std::string path = dir.file("model.safetensors");
  save_hf_safetensors(cfg, params.data(), path);
  std::vector<float> back(layout.total(), 7.f);
  load_hf_safetensors(cfg, back.data(), path);
  for (size_t i = 0; i < wte.numel; i++) {
    const bool pad = i >= (size_t)cfg.vocab_size * cfg.n_embd;
    ASSERT_EQ(back[wte.offset + i], pad ? 0.f : params[wte.offset + i]) << i;
  }
}

TEST(HfGpt2, FileUsesHfNamesShapesAndConv1dLayout) {
  TempDir dir;
  const ModelConfig cfg = small_config();
  const int64_t C = cfg.n_embd, V = cfg.vocab_size;
  ParamLayout layout(cfg);
  const std::vector<float> params = distinct_params(cfg);
  const std::string path = dir.file("model.safetensors");
  save_hf_safetensors(cfg, params.data(), path);
  SafetensorsReader r(path);

  std::set<std::string> want_names = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
  for (int l = 0; l < cfg.n_layer; l++)
    for (const char* s : {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                          "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                          "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
                          "mlp.c_proj.bias"})
      want_names.insert("h." + std::to_string(l) + "." + s);
  const auto names = r.names();
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), want_names);

  using S = std::vector<int64_t>;
  EXPECT_EQ(r.info("wte.weight").shape, (S{V, C}));
  EXPECT_EQ(r.info("wpe.weight").shape, (S{cfg.block_size, C}));
  EXPECT_EQ(r.info("h.0.attn.c_attn.weight").shape, (S{C, 3 * C}));
  EXPECT_EQ(r.info("h.0.attn.c_attn.bias").shape, (S{3 * C}));
  EXPECT_EQ(r.info("h.1.attn.c_proj.weight").shape, (S{C, C}));
  EXPECT_EQ(r.info("h.1.mlp.c_fc.weight").shape, (S{C, 4 * C}));
  EXPECT_EQ(r.info("h.1.mlp.c_proj.weight").shape, (S{4 * C, C}));
  EXPECT_EQ(r.info("h.1.ln_2.weight").shape, (S{C}));
  EXPECT_EQ(r.metadata().at("format"), "pt");

  // Conv1D [in, out] = our [out, in] transposed.
  auto check_transposed = [&](const std::string& ours, const std::string& hf, int64_t out, int64_t in) {
    const auto& t = layout.at(ours);
    const auto v = r.read_f32(hf);
    ASSERT_EQ(v.size(), (size_t)(out * in));
    for (int64_t i = 0; i < in; i++)
      for (int64_t o = 0; o < out; o++)
        ASSERT_EQ(v[i * out + o], params[t.offset + o * in + i]) << hf << " [" << i << "," << o << "]";
  };
  check_transposed("h.0.attn.qkv.weight", "h.0.attn.c_attn.weight", 3 * C, C);
  check_transposed("h.1.attn.proj.weight", "h.1.attn.c_proj.weight", C, C);
  check_transposed("h.0.mlp.fc.weight", "h.0.mlp.c_fc.weight", 4 * C, C);
  check_transposed("h.1.mlp.proj.weight", "h.1.mlp.c_proj.weight", C, 4 * C);
  // Not transposed: embeddings, biases, LayerNorms.
  auto check_same = [&](const std::string& ours, const std::string& hf, size_t n) {
    const auto v = r.read_f32(hf);
    ASSERT_EQ(v.size(), n);
    EXPECT_EQ(std::memcmp(v.data(), params.data() + layout.at(ours).offset, n * 4), 0) << hf;
  };
  check_same("wte", "wte.weight", (size_t)(V * C));
  check_same("wpe", "wpe.weight", (size_t)(cfg.block_size * C));
  check_same("h.0.attn.qkv.bias", "h.0.attn.c_attn.bias", (size_t)(3 * C));
  check_same("h.1.ln_1.weight", "h.1.ln_1.weight", (size_t)C);
  check_same("ln_f.bias", "ln_f.bias", (size_t)C);
}

TEST(HfGpt2, LoadsTransformerPrefixedFileWithExtras) {
  TempDir dir;
  const ModelConfig cfg = small_config();
  ParamLayout layout(cfg);
  const std::vector<float> params = distinct_params(cfg);
  const std::string plain = dir.file("plain.safetensors"), hf = dir.file("hf.safetensors");
  save_hf_safetensors(cfg, params.data(), plain);
  // Rewrite as transformers' GPT2LMHeadModel does: "transformer." prefix, attention-mask
  // buffers, and the tied lm_head.
  SafetensorsReader r(plain);
  SafetensorsWriter w;
  for (const auto& n : r.names()) {
    const auto v = r.read_f32(n);
    w.add("transformer." + n, v.data(), r.info(n).shape);
  }
  const std::vector<float> mask((size_t)cfg.block_size * cfg.block_size, 1.f);
  for (int l = 0; l < cfg.n_layer; l++) {
    w.add("transformer.h." + std::to_string(l) + ".attn.bias", mask.data(),
          {1, 1, cfg.block_size, cfg.block_size});
    w.add("transformer.h." + std::to_string(l) + ".attn.masked_bias", mask.data(), {});
  }
  const auto wte = r.read_f32("wte.weight");
  w.add("lm_head.weight", wte.data(), r.info("wte.weight").shape);
  w.write(hf);

  std::vector<float> back(layout.total(), 3.f);
  load_hf_safetensors(cfg, back.data(), hf);
  EXPECT_EQ(std::memcmp(back.data(), params.data(), params.size() * 4), 0);
}

TEST(HfGpt2, ShapeMismatchMissingAndUnexpectedTensorsError) {
  TempDir dir;
  const ModelConfig cfg = small_config();
  const std::vector<float> params = distinct_params(cfg);
  const std::string path = dir.file("model.safetensors");
  save_hf_safetensors(cfg, params.data(), path);

  ModelConfig other = cfg;
  other.vocab_size = 60;  // same padded size (64), different real vocabulary
  std::vector<float> buf(ParamLayout(other).total());
  std::string msg = input_error_of([&] { load_hf_safetensors(other, buf.data(), path); });
  EXPECT_TRUE(contains(msg, path) && contains(msg, "wte.weight")) << msg;

  other = cfg;
  other.block_size = 16;
  buf.assign(ParamLayout(other).total(), 0.f);
  msg = input_error_of([&] { load_hf_safetensors(other, buf.data(), path); });
  EXPECT_TRUE(contains(msg, path) && contains(msg, "wpe.weight")) << msg;

  other = cfg;
  other.n_embd = 16;
  buf.assign(ParamLayout(other).total(), 0.f);
  msg = input_error_of([&] { load_hf_safetensors(other, buf.data(), path); });
  EXPECT_TRUE(contains(msg, path)) << msg;

  // More layers than the file has: a missing tensor.
  other = cfg;
  other.n_layer = 3;
  buf.assign(ParamLayout(other).total(), 0.f);
  msg = input_error_of([&] { load_hf_safetensors(other, buf.data(), path); });
  EXPECT_TRUE(contains(msg, "h.2.")) << msg;

  // Fewer layers than the file has: h.1.* is unexpected.
  other = cfg;
  other.n_layer = 1;
  buf.assign(ParamLayout(other).total(), 0.f);
  msg = input_error_of([&] { load_hf_safetensors(other, buf.data(), path); });
  EXPECT_TRUE(contains(msg, "h.1.")) << msg;
}

TEST(HfGpt2, ConfigJsonRoundTrip) {
  TempDir dir;
  const ModelConfig cfg = small_config();
  const json j = hf_config_json(cfg);
  EXPECT_EQ(j.at("n_positions"), cfg.block_size);
  EXPECT_EQ(j.at("vocab_size"), cfg.vocab_size);
  EXPECT_EQ(j.at("model_type"), "gpt2");
  std::ofstream(dir.file("config.json")) << j.dump();
  const ModelConfig back = read_hf_config(dir.file("config.json"));
  EXPECT_EQ(back.n_layer, cfg.n_layer);
  EXPECT_EQ(back.n_head, cfg.n_head);
  EXPECT_EQ(back.n_embd, cfg.n_embd);
  EXPECT_EQ(back.block_size, cfg.block_size);
  EXPECT_EQ(back.vocab_size, cfg.vocab_size);

  json bad = j;
  bad["n_head"] = 3;  // does not divide 8
  std::ofstream(dir.file("bad.json")) << bad.dump();
  std::string msg = input_error_of([&] { read_hf_config(dir.file("bad.json")); });
  EXPECT_TRUE(contains(msg, "bad.json")) << msg;
  bad = j;
  bad.erase("n_embd");
  std::ofstream(dir.file("bad2.json")) << bad.dump();
  msg = input_error_of([&] { read_hf_config(dir.file("bad2.json")); });
  EXPECT_TRUE(contains(msg, "bad2.json")) << msg;
}

TEST(HfGpt2, ExportThenLoadTrainedModel) {
  TempDir dir;
  GPT model(small_config());
  model.init(5);
  const std::string run = dir.file("run");
  export_hf_model(model, run);
  EXPECT_TRUE(fs::exists(run + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(run + "/config.json"));

  for (const std::string& where : {run, run + "/model.safetensors"}) {
    LoadedModel lm = load_trained_model(where);
    ASSERT_TRUE(lm.model) << where;
    EXPECT_EQ(lm.model->config().vocab_size, model.config().vocab_size);
    EXPECT_EQ(lm.model->config().n_layer, model.config().n_layer);
    ASSERT_EQ(lm.model->num_params(), model.num_params());
    EXPECT_EQ(std::memcmp(lm.model->params(), model.params(), model.num_params() * 4), 0) << where;
    EXPECT_TRUE(lm.tokenizer_path.empty());
  }
  const std::string msg = input_error_of([&] { load_trained_model(dir.file("nothing")); });
  EXPECT_TRUE(contains(msg, "nothing")) << msg;
}

}  // namespace
}  // namespace cr
