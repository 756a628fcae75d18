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
  EXPECT_TRUE(r.offset == (Shape{2, 3}) && r.shape == (Shape{2, 1}));
  EXPECT_FALSE(intersect(a, Box{{4, 0}, {2, 4}}, &r));   // touching below
  EXPECT_FALSE(intersect(a, Box{{0, -3}, {4, 3}}, &r));  // touching on the left
  EXPECT_FALSE(intersect(a, Box{{1, 1}, {2, 0}}, &r));   // empty
  ASSERT_TRUE(intersect(Box{{1, 2}, {2, 1}}, a, &r));    // contained
  EXPECT_TRUE(r.offset == (Shape{1, 2}) && r.shape == (Shape{2, 1}));
}

TEST(ShardedBox, ShardBox) {
  const Shape g{6, 8};
  Box b = shard_box(g, 0, 1, 3);
  EXPECT_TRUE(b.offset == (Shape{2, 0}) && b.shape == (Shape{2, 8}));
  b = shard_box(g, 1, 3, 4);
  EXPECT_TRUE(b.offset == (Shape{0, 6}) && b.shape == (Shape{6, 2}));
  b = shard_box(g, -1, 2, 4);  // replicated: every part holds the whole tensor
  EXPECT_TRUE(b.offset == (Shape{0, 0}) && b.shape == g);
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
    std::vector<Layout> layouts = {split(gs, -1, 1)};
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

// A model's tensors as TP ranks hold them (every rank's boxes, all in this process), named as the
// trainer names them. Move it, never copy it: the tensors point into bufs.
struct Shards {
  std::vector<std::vector<float>> bufs;
  std::vector<ShardedTensor> tensors;
};

// At degree tp: cut from `whole` (a tp 1 Shards; zero-padded to the wider vocabulary) as the
// trainer cuts it, or all NaN (to load into) without it.
Shards shards(const ModelConfig& cfg, int tp, const Shards* whole = nullptr) {
  Shards s;
  for (int p = 0; p < tp; p++) {
    const ParamLayout lay(cfg, p, tp);
    for (size_t i = 0; i < lay.tensors().size(); i++) {
      const ParamTensor& t = lay.tensors()[i];
      std::vector<float> buf(t.numel, NAN);
      if (whole) {
        std::vector<float> padded = whole->bufs[i];
        padded.resize((size_t)volume(t.global_shape), 0.f);
        if (t.shard_dim < 0) buf = padded;
        else copy_shard_out(padded.data(), t.global_shape, t.shard_dim, p, tp, buf.data());
      }
      s.bufs.push_back(std::move(buf));
      s.tensors.push_back({"model/" + t.name, t.global_shape,
                           shard_box(t.global_shape, t.shard_dim, p, tp), nullptr,
                           t.name == "wte" ? 0 : -1});
      EXPECT_EQ(s.tensors.back().box.shape, t.shape) << t.name;
    }
  }
  for (size_t i = 0; i < s.bufs.size(); i++) s.tensors[i].data = s.bufs[i].data();
  return s;
}

Shards random_model(const ModelConfig& cfg, uint32_t seed) {  // tp 1, wte padded to 64 rows
  Shards s = shards(cfg, 1);
  std::mt19937 rng(seed);
  for (auto& b : s.bufs) std::copy_n(random_floats(b.size(), rng).begin(), b.size(), b.begin());
  return s;
}

void expect_same(const Shards& got, const Shards& want, const std::string& what) {
  ASSERT_EQ(got.bufs.size(), want.bufs.size());
  for (size_t i = 0; i < got.bufs.size(); i++)
    EXPECT_TRUE(same_bits(got.bufs[i].data(), want.bufs[i].data(), want.bufs[i].size()))
        << what << ": " << got.tensors[i].name << ", box #" << i;
}

// Splits tensor `name`'s one chunk in two at index `at` of dim 0 (contiguous on disk), listing
// the halves in reverse order, with their CRC32C from the shard file: a valid multi-chunk manifest.
void split_chunk(proto::Manifest& m, const std::string& ckpt, const std::string& name, int64_t at) {
  for (auto& t : *m.mutable_tensors()) {
    if (t.name() != name) continue;
    proto::Chunk a = t.chunks(0), b = a;
    a.set_shape(0, at);
    a.set_byte_length(b.byte_length() / b.shape(0) * at);
    b.set_offset(0, at);
    b.set_shape(0, b.shape(0) - at);
    b.set_byte_offset(a.byte_offset() + a.byte_length());
    b.set_byte_length(b.byte_length() - a.byte_length());
    std::ifstream in(ckpt + "/" + a.file(), std::ios::binary);
    const std::string bytes{std::istreambuf_iterator<char>(in), {}};
    for (auto* c : {&a, &b})
      c->set_crc32c(crc32c(bytes.data() + c->byte_offset(), c->byte_length()));
    t.clear_chunks();
    *t.add_chunks() = b;
    *t.add_chunks() = a;
  }
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
  bool save(const Shards& s, int64_t step, int keep_last = 0) {
    Checkpointer ck(dir(), keep_last, *world);
    ck.prepare();
    proto::Manifest meta;
    meta.set_step(step);
    *meta.mutable_model() = to_proto(cfg);
    return ck.save(s.tensors, meta, 1, 1);
  }
  std::optional<proto::Manifest> load_latest(const Shards& s, const ModelConfig* other = nullptr) {
    Checkpointer ck(dir(), 0, *world);
    return ck.load_latest(s.tensors, other ? *other : cfg);
  }

  TempDir tmp;
  ModelConfig cfg{.n_layer = 2, .n_head = 4, .n_embd = 16, .block_size = 8, .vocab_size = 50};
  std::unique_ptr<Communicator> world = make_single_rank_communicator();
  Shards model = random_model(cfg, 10);
};

TEST_F(Checkpoint, RoundTripAndReshardIntoTp2AndTp4) {
  ASSERT_TRUE(save(model, 5));
  Shards back = random_model(cfg, 99);
  const auto m = load_latest(back);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->step(), 5);
  EXPECT_EQ(m->saved_layout().world(), 1);
  EXPECT_EQ(m->model_config_hash(), model_config_hash(cfg));
  expect_same(back, model, "tp 1");
  for (int tp : {2, 4}) {
    Shards got = shards(cfg, tp);
    load_tensors(step_dir(5), *m, got.tensors);
    expect_same(got, shards(cfg, tp, &model), "tp " + std::to_string(tp));
    // wte is [64 tp, 16] now; every rank but 0 holds only rows past the saved 64: zeros.
    for (size_t i = 0; i < got.tensors.size(); i++) {
      if (got.tensors[i].name != "model/wte" || got.tensors[i].box.offset[0] < 64) continue;
      for (float x : got.bufs[i]) ASSERT_EQ(x, 0.f) << "wte of tp " << tp;
    }
  }
}

TEST_F(Checkpoint, MultiChunkTensorsLoadWholeAndIntoTp4) {
  ASSERT_TRUE(save(model, 3));
  proto::Manifest m = read_manifest(manifest(3));
  split_chunk(m, step_dir(3), "model/wte", 20);
  split_chunk(m, step_dir(3), "model/h.0.attn.qkv.weight", 1);
  split_chunk(m, step_dir(3), "model/h.1.mlp.fc.weight", 37);
  write_manifest(m, manifest(3));
  Shards back = random_model(cfg, 99);
  ASSERT_EQ(load_latest(back)->tensors(0).chunks_size(), 2);
  expect_same(back, model, "tp 1");
  Shards tp4 = shards(cfg, 4);
  load_tensors(step_dir(3), m, tp4.tensors);
  expect_same(tp4, shards(cfg, 4, &model), "tp 4");
}

TEST_F(Checkpoint, DirectoryLayoutKeepLastLeftoversAndConfigMismatch) {
  EXPECT_FALSE(load_latest(model).has_value());  // nothing saved yet
  for (int64_t s : {1, 2, 3}) ASSERT_TRUE(save(model, s, /*keep_last=*/2));
  EXPECT_EQ(committed_checkpoints(dir()), (std::vector<std::string>{step_dir(3), step_dir(2)}));
  ASSERT_TRUE(save(model, 5));  // keep_last 0 keeps all
  EXPECT_EQ(committed_checkpoints(dir()),
            (std::vector<std::string>{step_dir(5), step_dir(3), step_dir(2)}));
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(step_dir(5))) files.push_back(e.path().filename());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"manifest.pb", "shard-r00000.bin"}));
  for (const auto& e : fs::recursive_directory_iterator(dir()))
    EXPECT_NE(e.path().extension().string(), ".tmp") << e.path().string();
  EXPECT_EQ(resolve_checkpoint(dir()), step_dir(5));
  EXPECT_EQ(resolve_checkpoint(step_dir(2)), step_dir(2));
  EXPECT_TRUE(contains(input_error_of([&] { resolve_checkpoint(tmp.file("none")); }), "none"));

  // Another model's checkpoint is an error naming its manifest, not a reason to fall back.
  ModelConfig other = cfg;
  other.n_layer = 3;
  const std::string msg = input_error_of([&] { load_latest(model, &other); });
  EXPECT_TRUE(contains(msg, manifest(5))) << msg;

  // A crashed save's temporary goes at the next prepare(); nothing else does.
  fs::create_directories(dir() + "/step_00000009.tmp");
  std::ofstream(dir() + "/step_00000009.tmp/shard-r00000.bin") << "partial";
  std::ofstream(dir() + "/notes.tmp") << "mine";
  Checkpointer(dir(), 0, *world).prepare();
  EXPECT_FALSE(fs::exists(dir() + "/step_00000009.tmp"));
  EXPECT_TRUE(fs::exists(dir() + "/notes.tmp"));
  EXPECT_EQ(committed_checkpoints(dir()).size(), 3u);
}

TEST_F(Checkpoint, DamagedShardIsReportedAndTheOneBeforeLoads) {
  Shards older = random_model(cfg, 1);
  ASSERT_TRUE(save(older, 1));
  ASSERT_TRUE(save(model, 2));
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
    Shards into = shards(cfg, 1);
    EXPECT_TRUE(contains(input_error_of([&] { load_tensors(step_dir(2), m, into.tensors); }),
                         victim));
    flip_bit(shard(2), at, bit);
  }
  EXPECT_TRUE(verify_checkpoint(step_dir(2), m).empty());
  flip_bit(shard(2), size / 2, 3);
  Shards back = shards(cfg, 1);
  const auto loaded = load_latest(back);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step(), 1);
  expect_same(back, older, "fallback to step 1");
}

TEST_F(Checkpoint, DamagedManifestIsRejectedNamingTheFile) {
  ASSERT_TRUE(save(model, 1));
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
  ASSERT_TRUE(save(model, 1));
  const proto::Manifest m = read_manifest(manifest(1));
  const uint64_t size = fs::file_size(shard(1));
  auto expect_problem = [&](const std::string& word) {
    const auto p = verify_checkpoint(step_dir(1), m);
    ASSERT_EQ(p.size(), 1u) << word;
    EXPECT_TRUE(contains(p[0], shard(1)) && contains(p[0], word)) << p[0];
  };
  fs::resize_file(shard(1), size - 1);
  expect_problem("truncated");
  fs::resize_file(shard(1), size + 1);
  expect_problem("extra bytes");
  fs::remove(shard(1));
  expect_problem("missing");
  EXPECT_FALSE(load_latest(model).has_value());  // no sound checkpoint left
}

// ---- untrusted manifests ------------------------------------------------------------------------

// Starts from the valid manifest of a real save, with qkv of layer 0 split into 2 chunks.
class ManifestValidation : public Checkpoint {
 protected:
  void SetUp() override {
    ASSERT_TRUE(save(model, 1));
    base = read_manifest(manifest(1));
    split_chunk(base, step_dir(1), "model/h.0.attn.qkv.weight", 1);
  }
  // validate_manifest must throw an InputError naming the source and containing `word`.
  void expect_rejected(const std::string& word, const std::function<void(proto::Manifest&)>& f) {
    proto::Manifest m = base;
    f(m);
    const std::string msg = input_error_of([&] { validate_manifest(m, "where"); });
    EXPECT_TRUE(contains(msg, "where: invalid manifest") && contains(msg, word)) << msg;
  }
  proto::Manifest base;
};

// Two boxes of one tensor held by one rank, a step past 10^8 (a wider directory name), a
// shape that differs outside the padded dimension, and re-saving a committed step.
TEST_F(Checkpoint, SeveralBoxesPerRankWideStepsShapeChecksAndResave) {
  std::vector<float> a(8, 1.f), b(8, 2.f);
  const std::vector<ShardedTensor> halves = {{"w", {4, 4}, {{0, 0}, {2, 4}}, a.data()},
                                             {"w", {4, 4}, {{2, 0}, {2, 4}}, b.data()}};
  Checkpointer ck(dir(), 0, *world);
  ck.prepare();
  proto::Manifest meta;
  *meta.mutable_model() = to_proto(cfg);
  for (int64_t step : {99999999LL, 100000000LL}) {
    meta.set_step(step);
    ASSERT_TRUE(ck.save(halves, meta, 1, 1)) << step;
  }
  const auto listed = committed_checkpoints(dir());
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(fs::path(listed[0]).filename(), "step_100000000");
  const proto::Manifest m = read_manifest(listed[0] + "/manifest.pb");
  ASSERT_EQ(m.tensors_size(), 1);
  EXPECT_EQ(m.tensors(0).chunks_size(), 2);
  std::vector<float> whole(16, 0.f);
  load_tensors(listed[0], m, {{"w", {4, 4}, {{0, 0}, {4, 4}}, whole.data()}});
  EXPECT_EQ(whole[0], 1.f);
  EXPECT_EQ(whole[15], 2.f);
  // Shapes must agree except along padded_dim.
  std::vector<float> wide(20, 0.f);
  EXPECT_THROW(load_tensors(listed[0], m, {{"w", {4, 5}, {{0, 0}, {4, 5}}, wide.data()}}), InputError);
  EXPECT_NO_THROW(load_tensors(listed[0], m, {{"w", {5, 4}, {{0, 0}, {5, 4}}, wide.data(), 0}}));
  EXPECT_EQ(wide[19], 0.f);  // the row the checkpoint lacks
  // Re-saving a committed step replaces it (atomically) with the new contents.
  a.assign(8, 3.f);
  ASSERT_TRUE(ck.save(halves, meta, 1, 1));
  load_tensors(listed[0], read_manifest(listed[0] + "/manifest.pb"),
               {{"w", {4, 4}, {{0, 0}, {4, 4}}, whole.data()}});
  EXPECT_EQ(whole[0], 3.f);
  EXPECT_EQ(committed_checkpoints(dir()).size(), 2u);
}

proto::Tensor* named(proto::Manifest& m, const std::string& name) {
  for (auto& t : *m.mutable_tensors())
    if (t.name() == name) return &t;
  throw std::runtime_error("no tensor " + name);
}

TEST_F(ManifestValidation, RejectsEachKindOfDamage) {
  EXPECT_NO_THROW(validate_manifest(base, "where"));
  auto wpe = [](proto::Manifest& m) { return named(m, "model/wpe"); };  // [8, 16]: 64-byte rows
  auto qkv = [](proto::Manifest& m) { return named(m, "model/h.0.attn.qkv.weight"); };
  auto c0 = [&](proto::Manifest& m) { return wpe(m)->mutable_chunks(0); };
  ASSERT_EQ(wpe(base)->chunks_size(), 1);
  ASSERT_EQ(qkv(base)->chunks_size(), 2);
  for (const char* f : {"../evil.bin", "/etc/passwd", "a/b.bin", "", "..", "."})
    expect_rejected("not a plain file name", [&](auto& m) { c0(m)->set_file(f); });
  const std::string out = "leaves the global shape";
  expect_rejected(out, [&](auto& m) { c0(m)->set_offset(1, 1); });
  expect_rejected(out, [&](auto& m) { c0(m)->set_offset(0, -1); });
  expect_rejected(out, [&](auto& m) { c0(m)->set_shape(0, 9); c0(m)->set_byte_length(9 * 64); });
  expect_rejected("byte_length", [&](auto& m) { c0(m)->set_byte_length(8 * 64 + 4); });
  expect_rejected("overlap", [&](auto& m) { *qkv(m)->add_chunks() = qkv(m)->chunks(0); });
  expect_rejected("overlap", [&](auto& m) { qkv(m)->mutable_chunks(1)->set_offset(0, 1); });
  expect_rejected("cover", [&](auto& m) { qkv(m)->mutable_chunks()->RemoveLast(); });
  expect_rejected("cover", [&](auto& m) {
    c0(m)->set_shape(0, 7);
    c0(m)->set_byte_length(7 * 64);
  });
  expect_rejected("appears twice", [&](auto& m) { *m.add_tensors() = m.tensors(1); });
  expect_rejected("dtype", [&](auto& m) { wpe(m)->set_dtype(proto::DTYPE_UNSPECIFIED); });
  expect_rejected("9 dimensions", [&](auto& m) {
    for (int d = 0; d < 7; d++) wpe(m)->add_global_shape(1);
  });
  expect_rejected("too large", [&](auto& m) {
    wpe(m)->set_global_shape(0, int64_t(1) << 40);
    wpe(m)->set_global_shape(1, int64_t(1) << 40);
  });
  expect_rejected("dimension of size",
                  [&](auto& m) { wpe(m)->set_global_shape(0, int64_t(1) << 41); });
  expect_rejected("format_version 2", [](auto& m) { m.set_format_version(2); });
  expect_rejected("layout world 3", [](auto& m) { m.mutable_saved_layout()->set_world(3); });
  expect_rejected("no tensors", [](auto& m) { m.clear_tensors(); });

  // read_manifest validates too: a well-framed file with an overlap is rejected, naming it.
  proto::Manifest bad = base;
  *qkv(bad)->add_chunks() = qkv(bad)->chunks(1);
  write_manifest(bad, tmp.file("bad.pb"));
  const std::string msg = input_error_of([&] { read_manifest(tmp.file("bad.pb")); });
  EXPECT_TRUE(contains(msg, tmp.file("bad.pb")) && contains(msg, "overlap")) << msg;
}

}  // namespace
}  // namespace cr
