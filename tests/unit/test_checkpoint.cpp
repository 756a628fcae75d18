// The checkpoint library: CRC32C (known vectors, streaming at any alignment, bit flips), box
// arithmetic (intersect, shard_box, re-tiling a tensor between layouts with copy_region), the
// save/load protocol at world size 1 (round trip, resharding into tp 2/4 with padded vocabulary,
// directory layout, keep_last, crash leftovers, config mismatch), damage detection with fallback,
// and the checks on untrusted manifests.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/common/error.h"
#include "core/io/crc32c.h"
#include "core/model/gpt.h"
#include "parallel/checkpoint/checkpoint.h"
#include "parallel/comm/communicator.h"
#include "tests/unit/test_util.h"

namespace cr {
namespace {

using testing::contains;
using testing::input_error_of;
using testing::TempDir;
namespace fs = std::filesystem;
using Shape = std::vector<int64_t>;
using Layout = std::vector<Box>;

std::vector<float> random_floats(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * 4) == 0; }

// ---- CRC32C ----------------------------------------------------------------------------------

uint32_t crc32c_bitwise(const uint8_t* p, size_t n) {  // the definition, one bit at a time
  uint32_t c = ~0u;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
  }
  return ~c;
}

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  const std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF);
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c(zeros.data(), 0), 0u);
  EXPECT_EQ(crc32c_extend(0x12345678u, zeros.data(), 0), 0x12345678u);
}

TEST(Crc32c, StreamingEqualsOneShotAtAnyAlignment) {
  std::mt19937 rng(1);
  std::vector<uint8_t> pool(1010);
  for (auto& b : pool) b = (uint8_t)rng();
  for (int trial = 0; trial < 300; trial++) {
    const size_t start = rng() % 8, n = rng() % 1001;  // unaligned starts, ragged lengths
    const uint8_t* p = pool.data() + start;
    const uint32_t whole = crc32c(p, n);
    ASSERT_EQ(whole, crc32c_bitwise(p, n)) << "start " << start << ", " << n << " bytes";
    size_t a = rng() % (n + 1), b = rng() % (n + 1);
    if (a > b) std::swap(a, b);
    const uint32_t inc = crc32c_extend(crc32c_extend(crc32c(p, a), p + a, b - a), p + b, n - b);
    ASSERT_EQ(inc, whole) << "split at " << a << " and " << b << " of " << n;
  }
}

TEST(Crc32c, SingleBitFlipsChangeIt) {
  std::mt19937 rng(2);
  std::vector<uint8_t> buf(4096);
  for (auto& b : buf) b = (uint8_t)rng();
  const uint32_t good = crc32c(buf.data(), buf.size());
  for (int i = 0; i < 200; i++) {
    const size_t bit = rng() % (buf.size() * 8);
    buf[bit / 8] ^= uint8_t(1u << (bit % 8));
    EXPECT_NE(crc32c(buf.data(), buf.size()), good) << "bit " << bit;
    buf[bit / 8] ^= uint8_t(1u << (bit % 8));
  }
}

// ---- boxes -----------------------------------------------------------------------------------

TEST(ShardedBox, Intersect) {
  const Box a{{0, 0}, {4, 4}};
  Box r;
  ASSERT_TRUE(intersect(a, Box{{2, 3}, {4, 4}}, &r));
  EXPECT_EQ(r.offset, (Shape{2, 3}));
  EXPECT_EQ(r.shape, (Shape{2, 1}));
  EXPECT_FALSE(intersect(a, Box{{4, 0}, {2, 4}}, &r));   // touching below
  EXPECT_FALSE(intersect(a, Box{{0, -3}, {4, 3}}, &r));  // touching on the left
  EXPECT_FALSE(intersect(a, Box{{1, 1}, {2, 0}}, &r));   // empty
  ASSERT_TRUE(intersect(Box{{1, 2}, {2, 1}}, a, &r));    // contained
  EXPECT_EQ(r.offset, (Shape{1, 2}));
  EXPECT_EQ(r.shape, (Shape{2, 1}));
}

TEST(ShardedBox, ShardBox) {
  const Shape g{6, 8};
  Box b = shard_box(g, 0, 1, 3);
  EXPECT_EQ(b.offset, (Shape{2, 0}));
  EXPECT_EQ(b.shape, (Shape{2, 8}));
  b = shard_box(g, 1, 3, 4);
  EXPECT_EQ(b.offset, (Shape{0, 6}));
  EXPECT_EQ(b.shape, (Shape{6, 2}));
  b = shard_box(g, -1, 2, 4);  // replicated: every part holds the whole tensor
  EXPECT_EQ(b.offset, (Shape{0, 0}));
  EXPECT_EQ(b.shape, g);
  EXPECT_THROW(shard_box(g, 1, 0, 3), Error);
}

// The elements of `box` of a dense global tensor, by plain index arithmetic.
std::vector<float> slice(const std::vector<float>& g, const Shape& gs, const Box& box) {
  std::vector<float> out;
  for (int64_t i = 0; i < volume(box.shape); i++) {
    int64_t rem = i, idx = 0, stride = 1;
    for (int d = (int)gs.size() - 1; d >= 0; d--, stride *= gs[d + 1]) {
      idx += (box.offset[d] + rem % box.shape[d]) * stride;
      rem /= box.shape[d];
    }
    out.push_back(g[(size_t)idx]);
  }
  return out;
}

Layout split(const Shape& gs, int dim, int parts) {
  Layout l;
  for (int p = 0; p < parts; p++) l.push_back(shard_box(gs, dim, p, parts));
  return l;
}

TEST(ShardedBox, CopyRegionRetilesBetweenLayouts) {
  std::mt19937 rng(3);
  for (const Shape& gs : {Shape{3, 8, 5}, Shape{40}, Shape{2, 4, 6, 3}}) {
    const std::vector<float> global = random_floats((size_t)volume(gs), rng);
    std::vector<Layout> layouts = {split(gs, -1, 0, 1)};
    for (int d = 0; d < (int)gs.size(); d++)
      for (int k = 2; k <= gs[d]; k++)
        if (gs[d] % k == 0) layouts.push_back(split(gs, d, k));
    // A ragged grid: the first split crossed with uneven random cuts of the last dimension.
    const int last = (int)gs.size() - 1;
    Layout grid;
    for (int64_t at = 0, w; at < gs[last]; at += w) {
      Box cut{Shape(gs.size(), 0), gs};
      w = cut.shape[last] = std::min<int64_t>(1 + rng() % 3, gs[last] - at);
      cut.offset[last] = at;
      for (const Box& b : layouts[1])
        if (Box r; intersect(b, cut, &r)) grid.push_back(r);
    }
    layouts.push_back(grid);
    for (const Layout& from : layouts) {
      std::vector<std::vector<float>> src;
      for (const Box& b : from) src.push_back(slice(global, gs, b));
      for (const Layout& to : layouts)
        for (const Box& dst_box : to) {
          const size_t n = (size_t)volume(dst_box.shape);
          std::vector<float> dst(n + 4, NAN);  // NaN: not written; the last 4 are guards
          for (size_t i = 0; i < from.size(); i++)
            if (Box r; intersect(from[i], dst_box, &r))
              copy_region(src[i].data(), from[i], dst.data(), dst_box, r);
          ASSERT_TRUE(same_bits(dst.data(), slice(global, gs, dst_box).data(), n))
              << "layouts of " << from.size() << " and " << to.size() << " boxes, "
              << gs.size() << "-D";
          ASSERT_TRUE(std::isnan(dst[n]) && std::isnan(dst[n + 3])) << "wrote past the box";
        }
    }
  }
}

// ---- save / load at world size 1 --------------------------------------------------------------

ModelConfig small_config() {
  ModelConfig c;
  c.n_layer = 2, c.n_head = 4, c.n_embd = 16, c.block_size = 8, c.vocab_size = 50;
  return c;
}

// The whole model (tp 1, wte padded to 64 rows), random, named as the trainer names it.
struct FullModel {
  FullModel(const ModelConfig& cfg, uint32_t seed) : layout(cfg) {
    std::mt19937 rng(seed);
    for (const auto& t : layout.tensors()) data.push_back(random_floats(t.numel, rng));
  }
  std::vector<ShardedTensor> tensors() {
    std::vector<ShardedTensor> out;
    for (size_t i = 0; i < data.size(); i++) {
      const auto& t = layout.tensors()[i];
      out.push_back({"model/" + t.name, t.global_shape, shard_box(t.global_shape, -1, 0, 1),
                     data[i].data()});
    }
    return out;
  }
  ParamLayout layout;
  std::vector<std::vector<float>> data;
};

// Every TP rank's boxes at degree tp, all in this process: cut from `from` (zero-padded to the
// wider vocabulary) as the trainer cuts them, or NaN to load into. `once`: replicated tensors
// only from rank 0 (what a save sees spread over ranks).
struct ShardSet {
  std::vector<std::vector<float>> bufs;
  std::vector<ShardedTensor> tensors;
};
ShardSet shards_of(const ModelConfig& cfg, const FullModel* from, int tp, bool once = false) {
  ShardSet s;
  for (int p = 0; p < tp; p++) {
    const ParamLayout lay(cfg, p, tp);
    for (size_t i = 0; i < lay.tensors().size(); i++) {
      const auto& t = lay.tensors()[i];
      if (once && p > 0 && t.shard_dim < 0) continue;
      std::vector<float> buf(t.numel, NAN);
      if (from) {
        std::vector<float> padded = from->data[i];
        padded.resize((size_t)volume(t.global_shape), 0.f);
        if (t.shard_dim < 0) buf = padded;
        else copy_shard_out(padded.data(), t.global_shape, t.shard_dim, p, tp, buf.data());
      }
      s.bufs.push_back(std::move(buf));
      s.tensors.push_back({"model/" + t.name, t.global_shape,
                           shard_box(t.global_shape, t.shard_dim, p, tp), nullptr});
      EXPECT_EQ(s.tensors.back().box.shape, t.shape) << t.name;
    }
  }
  for (size_t i = 0; i < s.bufs.size(); i++) s.tensors[i].data = s.bufs[i].data();
  return s;
}

void expect_same(const ShardSet& got, const ShardSet& want, const std::string& what) {
  ASSERT_EQ(got.bufs.size(), want.bufs.size());
  for (size_t i = 0; i < got.bufs.size(); i++)
    EXPECT_TRUE(same_bits(got.bufs[i].data(), want.bufs[i].data(), want.bufs[i].size()))
        << what << ": " << got.tensors[i].name << " box #" << i;
}

void flip_bit(const std::string& path, uint64_t byte, int bit) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg((std::streamoff)byte);
  const char c = (char)(f.get() ^ (1 << bit));
  f.seekp((std::streamoff)byte);
  f.put(c);
  ASSERT_TRUE(f.good()) << path;
}

class Checkpoint : public ::testing::Test {
 protected:
  std::string dir() const { return tmp.file("ckpt"); }
  std::string step_dir(int64_t s) const { return (fs::path(dir()) / step_dir_name(s)).string(); }
  std::string shard(int64_t s) const { return step_dir(s) + "/shard-r00000.bin"; }
  std::string manifest(int64_t s) const { return step_dir(s) + "/manifest.pb"; }
  // Saves through the real protocol, as the trainer does: prepare, then save.
  bool save(const std::vector<ShardedTensor>& tensors, int64_t step, int keep_last = 0) {
    Checkpointer ck(dir(), keep_last, *world);
    ck.prepare();
    proto::Manifest meta;
    meta.set_step(step);
    *meta.mutable_model() = to_proto(cfg);
    return ck.save(tensors, meta, 1, 1);
  }
  std::optional<proto::Manifest> load_latest(const std::vector<ShardedTensor>& t) {
    Checkpointer ck(dir(), 0, *world);
    return ck.load_latest(t, cfg);
  }

  TempDir tmp;
  ModelConfig cfg = small_config();
  std::unique_ptr<Communicator> world = make_single_rank_communicator();
  FullModel model{cfg, 10};
};

TEST_F(Checkpoint, RoundTripAndReshardIntoTp2AndTp4) {
  ASSERT_TRUE(save(model.tensors(), 5));
  FullModel back(cfg, 99);
  const auto m = load_latest(back.tensors());
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->step(), 5);
  EXPECT_EQ(m->saved_layout().world(), 1);
  EXPECT_EQ(m->model_config_hash(), model_config_hash(cfg));
  for (size_t i = 0; i < model.data.size(); i++)
    EXPECT_TRUE(same_bits(back.data[i].data(), model.data[i].data(), model.data[i].size()))
        << model.layout.tensors()[i].name;
  for (int tp : {2, 4}) {
    ShardSet got = shards_of(cfg, nullptr, tp);
    load_tensors(step_dir(5), *m, got.tensors);
    expect_same(got, shards_of(cfg, &model, tp), "tp " + std::to_string(tp));
    // wte is [64 x tp, 16] now; every rank but 0 holds only rows past the saved 64: zeros.
    for (size_t i = 0; i < got.tensors.size(); i++)
      if (got.tensors[i].name == "model/wte" && got.tensors[i].box.offset[0] >= 64)
        EXPECT_TRUE(std::all_of(got.bufs[i].begin(), got.bufs[i].end(), [](float x) { return x == 0.f; }));
  }
}

TEST_F(Checkpoint, WiderSavedLayoutLoadsWholeAndIntoTp4) {
  ShardSet tp2 = shards_of(cfg, &model, 2, /*once=*/true);
  ASSERT_TRUE(save(tp2.tensors, 3));
  const proto::Manifest saved = read_manifest(manifest(3));
  EXPECT_EQ(saved.tensors(0).name(), "model/wte");
  EXPECT_EQ(saved.tensors(0).global_shape(0), 128);
  EXPECT_EQ(saved.tensors(0).chunks_size(), 2);
  FullModel back(cfg, 99);
  ASSERT_TRUE(load_latest(back.tensors()).has_value());
  for (size_t i = 0; i < model.data.size(); i++)
    EXPECT_TRUE(same_bits(back.data[i].data(), model.data[i].data(), model.data[i].size()))
        << model.layout.tensors()[i].name;
  ShardSet tp4 = shards_of(cfg, nullptr, 4);
  load_tensors(step_dir(3), saved, tp4.tensors);
  expect_same(tp4, shards_of(cfg, &model, 4), "tp 2 -> tp 4");
}

TEST_F(Checkpoint, DirectoryLayoutKeepLastAndLeftovers) {
  EXPECT_FALSE(load_latest(model.tensors()).has_value());  // nothing saved yet
  for (int64_t s : {1, 2, 3}) ASSERT_TRUE(save(model.tensors(), s, /*keep_last=*/2));
  EXPECT_EQ(committed_checkpoints(dir()), (std::vector<std::string>{step_dir(3), step_dir(2)}));
  ASSERT_TRUE(save(model.tensors(), 5));  // keep_last 0: keeps all
  EXPECT_EQ(committed_checkpoints(dir()),
            (std::vector<std::string>{step_dir(5), step_dir(3), step_dir(2)}));
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(step_dir(5))) files.push_back(e.path().filename());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"manifest.pb", "shard-r00000.bin"}));
  for (const auto& e : fs::recursive_directory_iterator(dir()))
    EXPECT_NE(e.path().extension(), ".tmp") << e.path();
  EXPECT_EQ(resolve_checkpoint(dir()), step_dir(5));
  EXPECT_EQ(resolve_checkpoint(step_dir(2)), step_dir(2));
  EXPECT_TRUE(contains(input_error_of([&] { resolve_checkpoint(tmp.file("none")); }), "none"));

  // A crashed save's temporary goes at the next prepare(); nothing else does.
  fs::create_directories(dir() + "/step_00000009.tmp");
  std::ofstream(dir() + "/step_00000009.tmp/shard-r00000.bin") << "partial";
  std::ofstream(dir() + "/notes.tmp") << "mine";
  Checkpointer ck(dir(), 0, *world);
  ck.prepare();
  EXPECT_FALSE(fs::exists(dir() + "/step_00000009.tmp"));
  EXPECT_TRUE(fs::exists(dir() + "/notes.tmp"));
  EXPECT_EQ(committed_checkpoints(dir()).size(), 3u);
}

TEST_F(Checkpoint, AnotherModelConfigIsAnErrorNamingTheManifest) {
  ASSERT_TRUE(save(model.tensors(), 5));
  ModelConfig other = cfg;
  other.n_layer = 3;
  Checkpointer ck(dir(), 0, *world);
  const std::string msg = input_error_of([&] { ck.load_latest(model.tensors(), other); });
  EXPECT_TRUE(contains(msg, manifest(5))) << msg;
}

TEST_F(Checkpoint, DamagedShardIsReportedAndTheOneBeforeLoads) {
  FullModel older(cfg, 1);
  ASSERT_TRUE(save(older.tensors(), 1));
  ASSERT_TRUE(save(model.tensors(), 2));
  const proto::Manifest m = read_manifest(manifest(2));
  EXPECT_TRUE(verify_checkpoint(step_dir(2), m).empty());
  std::mt19937 rng(4);
  const uint64_t size = fs::file_size(shard(2));
  for (uint64_t at : {uint64_t(0), size - 1, rng() % size, rng() % size}) {
    std::string victim;  // the tensor whose chunk holds byte `at`
    for (const auto& t : m.tensors())
      for (const auto& c : t.chunks())
        if (at >= c.byte_offset() && at < c.byte_offset() + c.byte_length()) victim = t.name();
    const int bit = (int)(rng() % 8);
    flip_bit(shard(2), at, bit);
    const auto problems = verify_checkpoint(step_dir(2), m);
    ASSERT_EQ(problems.size(), 1u) << "byte " << at;
    EXPECT_TRUE(contains(problems[0], shard(2)) && contains(problems[0], "'" + victim + "'"))
        << problems[0];
    FullModel into(cfg, 99);
    EXPECT_TRUE(contains(input_error_of([&] { load_tensors(step_dir(2), m, into.tensors()); }),
                         victim));
    flip_bit(shard(2), at, bit);
  }
  EXPECT_TRUE(verify_checkpoint(step_dir(2), m).empty());
  flip_bit(shard(2), size / 2, 3);
  FullModel back(cfg, 99);
  const auto loaded = load_latest(back.tensors());
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step(), 1);
  for (size_t i = 0; i < older.data.size(); i++)
    EXPECT_TRUE(same_bits(back.data[i].data(), older.data[i].data(), older.data[i].size()));
}

TEST_F(Checkpoint, DamagedManifestIsRejectedNamingTheFile) {
  ASSERT_TRUE(save(model.tensors(), 1));
  const std::string copy = tmp.file("manifest-copy.pb");
  const uint64_t size = fs::file_size(manifest(1));
  std::mt19937 rng(5);
  std::vector<uint64_t> offsets = {0, 8, 12, 16, 23, size - 1};  // magic, version, crc, length
  while (offsets.size() < 20) offsets.push_back(rng() % size);
  for (uint64_t at : offsets) {
    fs::copy_file(manifest(1), copy, fs::copy_options::overwrite_existing);
    flip_bit(copy, at, (int)(rng() % 8));
    EXPECT_TRUE(contains(input_error_of([&] { read_manifest(copy); }), copy)) << "byte " << at;
  }
  fs::copy_file(manifest(1), copy, fs::copy_options::overwrite_existing);
  fs::resize_file(copy, size - 1);
  EXPECT_TRUE(contains(input_error_of([&] { read_manifest(copy); }), "truncated"));
}

TEST_F(Checkpoint, TruncatedExtendedAndMissingShards) {
  ASSERT_TRUE(save(model.tensors(), 1));
  const proto::Manifest m = read_manifest(manifest(1));
  const uint64_t size = fs::file_size(shard(1));
  auto problem = [&] {
    const auto p = verify_checkpoint(step_dir(1), m);
    EXPECT_EQ(p.size(), 1u);
    EXPECT_TRUE(p.empty() || contains(p[0], shard(1))) << (p.empty() ? "" : p[0]);
    return p.empty() ? std::string() : p[0];
  };
  fs::resize_file(shard(1), size - 1);
  EXPECT_TRUE(contains(problem(), "truncated"));
  fs::resize_file(shard(1), size + 1);
  EXPECT_TRUE(contains(problem(), "extra bytes"));
  fs::remove(shard(1));
  EXPECT_TRUE(contains(problem(), "missing"));
  EXPECT_FALSE(load_latest(model.tensors()).has_value());  // no sound checkpoint left
}

// ---- untrusted manifests ------------------------------------------------------------------------

// Starts from a valid manifest of a tp 2 save (sharded tensors have 2 chunks).
class ManifestValidation : public Checkpoint {
 protected:
  void SetUp() override {
    ShardSet tp2 = shards_of(cfg, &model, 2, /*once=*/true);
    ASSERT_TRUE(save(tp2.tensors, 1));
    base = read_manifest(manifest(1));
  }
  static proto::Tensor& named(proto::Manifest& m, const std::string& name) {
    for (auto& t : *m.mutable_tensors())
      if (t.name() == name) return t;
    throw std::runtime_error("no tensor " + name);
  }
  // The InputError validate_manifest throws for the mutated manifest (it names "where").
  std::string reject(const std::function<void(proto::Manifest&)>& mutate) {
    proto::Manifest m = base;
    mutate(m);
    const std::string msg = input_error_of([&] { validate_manifest(m, "where"); });
    EXPECT_TRUE(contains(msg, "where")) << msg;
    return msg;
  }
  proto::Manifest base;
};

TEST_F(ManifestValidation, RejectsEachKindOfDamage) {
  EXPECT_NO_THROW(validate_manifest(base, "where"));
  ASSERT_EQ(named(base, "model/h.0.attn.qkv.weight").chunks_size(), 2);
  ASSERT_EQ(named(base, "model/wpe").chunks_size(), 1);
  auto wpe = [&](proto::Manifest& m) { return named(m, "model/wpe").mutable_chunks(0); };
  auto qkv = [&](proto::Manifest& m) { return &named(m, "model/h.0.attn.qkv.weight"); };

  for (const char* f : {"../evil.bin", "/etc/passwd", "a/b.bin", "", "..", "."})
    EXPECT_TRUE(contains(reject([&](auto& m) { wpe(m)->set_file(f); }), "not a plain file name"))
        << "'" << f << "'";
  const char* leaves = "leaves the global shape";
  EXPECT_TRUE(contains(reject([&](auto& m) { wpe(m)->set_offset(1, 1); }), leaves));
  EXPECT_TRUE(contains(reject([&](auto& m) { wpe(m)->set_offset(0, -1); }), leaves));
  EXPECT_TRUE(contains(reject([&](auto& m) { wpe(m)->set_shape(0, 9); wpe(m)->set_byte_length(9 * 16 * 4); }), leaves));
  EXPECT_TRUE(contains(reject([&](auto& m) { wpe(m)->set_byte_length(8 * 16 * 4 + 4); }), "byte_length"));
  EXPECT_TRUE(contains(reject([&](auto& m) { *qkv(m)->add_chunks() = qkv(m)->chunks(0); }), "overlap"));
  EXPECT_TRUE(contains(reject([&](auto& m) { qkv(m)->mutable_chunks(1)->set_offset(1, 7); }), "overlap"));
  EXPECT_TRUE(contains(reject([&](auto& m) { qkv(m)->mutable_chunks()->RemoveLast(); }), "cover"));
  EXPECT_TRUE(contains(reject([&](auto& m) { wpe(m)->set_shape(0, 7); wpe(m)->set_byte_length(7 * 16 * 4); }), "cover"));
  EXPECT_TRUE(contains(reject([&](auto& m) { *m.add_tensors() = m.tensors(1); }), "appears twice"));
  EXPECT_TRUE(contains(reject([&](auto& m) { named(m, "model/wpe").set_dtype(proto::DTYPE_UNSPECIFIED); }), "dtype"));
  EXPECT_TRUE(contains(reject([&](auto& m) {
    for (int d = 0; d < 7; d++) named(m, "model/wpe").add_global_shape(1);
  }), "9 dimensions"));
  EXPECT_TRUE(contains(reject([&](auto& m) {
    named(m, "model/wpe").set_global_shape(0, int64_t(1) << 40);
    named(m, "model/wpe").set_global_shape(1, int64_t(1) << 40);
  }), "too large"));
  EXPECT_TRUE(contains(reject([&](auto& m) { named(m, "model/wpe").set_global_shape(0, int64_t(1) << 41); }), "dimension of size"));
  EXPECT_TRUE(contains(reject([](auto& m) { m.set_format_version(2); }), "format_version 2"));
  EXPECT_TRUE(contains(reject([](auto& m) { m.mutable_saved_layout()->set_world(3); }), "layout world 3"));
  EXPECT_TRUE(contains(reject([](auto& m) { m.clear_tensors(); }), "no tensors"));

  // read_manifest validates too: a well-framed file with an overlap is rejected, naming it.
  proto::Manifest bad = base;
  *qkv(bad)->add_chunks() = qkv(bad)->chunks(1);
  write_manifest(bad, tmp.file("bad.pb"));
  const std::string msg = input_error_of([&] { read_manifest(tmp.file("bad.pb")); });
  EXPECT_TRUE(contains(msg, tmp.file("bad.pb")) && contains(msg, "overlap")) << msg;
}

}  // namespace
}  // namespace cr
