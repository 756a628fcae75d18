#include "parallel/checkpoint/manifest.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/common/error.h"
#include "core/io/crc32c.h"
#include "parallel/checkpoint/sharded_tensor.h"

namespace cr {

namespace {

constexpr char kMagic[8] = {'C', 'R', 'M', 'A', 'N', 'I', 'F', '\n'};
constexpr size_t kHeader = 24;
constexpr int kMaxDims = 8;
constexpr int64_t kMaxDim = int64_t(1) << 40;
constexpr int64_t kMaxBytes = int64_t(1) << 50;  // per tensor: 1 PB

template <typename T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof(T));  // little-endian hosts only (x86, arm)
}
template <typename T>
T get(const std::string& s, size_t at) {
  T v;
  std::memcpy(&v, s.data() + at, sizeof(T));
  return v;
}

void write_all(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) CR_THROW("{}: write failed: {}", path, std::strerror(errno));
    done += (size_t)w;
  }
}

bool safe_file_name(const std::string& f) {
  if (f.empty() || f.size() > 128 || f == "." || f == "..") return false;
  for (char c : f)
    if (!(std::isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-')) return false;
  return true;
}

}  // namespace

void write_manifest(const proto::Manifest& m, const std::string& path,
                    const std::function<void()>& before_rename) {
  std::string payload;
  if (!m.SerializeToString(&payload)) CR_THROW("{}: cannot serialize the manifest", path);
  std::string file(kMagic, sizeof(kMagic));
  put<uint32_t>(file, kManifestFormat);
  put<uint32_t>(file, crc32c(payload.data(), payload.size()));
  put<uint64_t>(file, payload.size());
  file += payload;

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) CR_THROW("{}: cannot create: {}", tmp, std::strerror(errno));
  try {
    write_all(fd, file, tmp);
    if (::fsync(fd) != 0) CR_THROW("{}: fsync failed: {}", tmp, std::strerror(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) CR_THROW("{}: close failed: {}", tmp, std::strerror(errno));
  if (before_rename) before_rename();
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    CR_THROW("{}: cannot rename to {}: {}", tmp, path, std::strerror(errno));
}

proto::Manifest read_manifest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) CR_INPUT_ERROR("{}: cannot open the manifest: {}", path, std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string file = ss.str();
  if (file.size() < kHeader || std::memcmp(file.data(), kMagic, sizeof(kMagic)) != 0)
    CR_INPUT_ERROR("{}: not a chainrule checkpoint manifest (bad magic or {} bytes)", path,
                   file.size());
  const uint32_t version = get<uint32_t>(file, 8);
  if (version != kManifestFormat)
    CR_INPUT_ERROR("{}: manifest format version {}, this build reads version {}", path, version,
                   kManifestFormat);
  const uint32_t crc = get<uint32_t>(file, 12);
  const uint64_t len = get<uint64_t>(file, 16);
  if (len != file.size() - kHeader)
    CR_INPUT_ERROR("{}: manifest is {} bytes, its header says {} (truncated or damaged)", path,
                   file.size(), kHeader + len);
  const uint32_t actual = crc32c(file.data() + kHeader, len);
  if (actual != crc)
    CR_INPUT_ERROR("{}: manifest checksum mismatch (CRC32C {:08x}, header says {:08x}): damaged",
                   path, actual, crc);
  proto::Manifest m;
  if (!m.ParseFromArray(file.data() + kHeader, (int)len))
    CR_INPUT_ERROR("{}: manifest does not parse", path);
  validate_manifest(m, path);
  return m;
}

void validate_manifest(const proto::Manifest& m, const std::string& where) {
  auto bad = [&](const std::string& what) { CR_INPUT_ERROR("{}: invalid manifest: {}", where, what); };
  if (m.format_version() != kManifestFormat)
    bad(fmt::format("format_version {} (expected {})", m.format_version(), kManifestFormat));
  if (m.step() < 0) bad(fmt::format("step {}", m.step()));
  const auto& mc = m.model();
  if (mc.n_layer() < 1 || mc.n_head() < 1 || mc.n_embd() < 1 || mc.block_size() < 1 ||
      mc.vocab_size() < 1)
    bad("model config has a non-positive size");
  const auto& lay = m.saved_layout();
  if (lay.world() < 1 || lay.tensor() < 1 || lay.data() < 1 ||
      (int64_t)lay.tensor() * lay.data() != lay.world())
    bad(fmt::format("layout world {} != tensor {} x data {}", lay.world(), lay.tensor(), lay.data()));
  if (m.tensors_size() == 0) bad("no tensors");
  std::set<std::string> names;
  for (const auto& t : m.tensors()) {
    const std::string tn = fmt::format("tensor '{}'", t.name());
    if (t.name().empty() || t.name().size() > 256) bad("a tensor name is empty or too long");
    if (!names.insert(t.name()).second) bad(tn + " appears twice");
    if (t.dtype() != proto::F32) bad(fmt::format("{}: dtype {} (expected F32)", tn, (int)t.dtype()));
    const int nd = t.global_shape_size();
    if (nd < 1 || nd > kMaxDims) bad(fmt::format("{}: {} dimensions", tn, nd));
    std::vector<int64_t> g(t.global_shape().begin(), t.global_shape().end());
    int64_t vol = 1;
    for (int64_t d : g) {
      if (d < 0 || d > kMaxDim) bad(fmt::format("{}: dimension of size {}", tn, d));
      if (d > 0 && vol > kMaxBytes / 4 / d) bad(tn + ": too large");
      vol *= d;
    }
    if (t.chunks_size() < 1 || t.chunks_size() > 65536)
      bad(fmt::format("{}: {} chunks", tn, t.chunks_size()));
    int64_t covered = 0;
    std::vector<Box> boxes;
    for (const auto& c : t.chunks()) {
      if (c.offset_size() != nd || c.shape_size() != nd)
        bad(fmt::format("{}: a chunk has {}/{} dimensions, the tensor {}", tn, c.offset_size(),
                        c.shape_size(), nd));
      Box b{{c.offset().begin(), c.offset().end()}, {c.shape().begin(), c.shape().end()}};
      for (int d = 0; d < nd; d++)
        if (b.offset[d] < 0 || b.shape[d] < 0 || b.offset[d] > g[d] || b.shape[d] > g[d] - b.offset[d])
          bad(fmt::format("{}: chunk at offset {} of shape {} leaves the global shape {}", tn,
                          fmt::join(b.offset, ","), fmt::join(b.shape, ","), fmt::join(g, ",")));
      const int64_t cv = volume(b.shape);
      if (c.byte_length() != (uint64_t)cv * 4)
        bad(fmt::format("{}: chunk of {} elements has byte_length {}", tn, cv, c.byte_length()));
      if (c.byte_offset() > (uint64_t)kMaxBytes) bad(tn + ": chunk byte_offset out of range");
      if (!safe_file_name(c.file()))
        bad(fmt::format("{}: chunk file '{}' is not a plain file name inside the checkpoint", tn,
                        c.file()));
      for (const Box& o : boxes) {
        Box x;
        if (cv > 0 && volume(o.shape) > 0 && intersect(o, b, &x)) bad(tn + ": chunks overlap");
      }
      boxes.push_back(b);
      covered += cv;
    }
    if (covered != vol)
      bad(fmt::format("{}: chunks cover {} of {} elements", tn, covered, vol));
  }
  if (m.loader_size() > lay.data()) bad("more loader positions than data-parallel ranks");
}

uint64_t model_config_hash(const ModelConfig& c) {
  // A gpt2 model with the default keys hashes as it did before the families existed, so those
  // checkpoints keep loading.
  std::string s = fmt::format("gpt2;n_layer={};n_head={};n_embd={};block_size={};vocab_size={}",
                              c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size);
  const ModelConfig d;
  const bool defaults = !c.llama() && c.kv_heads() == c.n_head && c.ffn_hidden_size() == 4 * c.n_embd &&
                        c.norm_eps == d.norm_eps && c.tie_embeddings && c.bias;
  if (!defaults)
    s += fmt::format(";family={};n_kv_head={};ffn_hidden={};rope_theta={};norm_eps={};tie={};bias={}",
                     family_name(c.family), c.kv_heads(), c.ffn_hidden_size(),
                     c.llama() ? c.rope_theta : 0.f, c.norm_eps, c.tie_embeddings, c.bias);
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

proto::ModelConfig to_proto(const ModelConfig& c) {
  proto::ModelConfig p;
  p.set_n_layer(c.n_layer);
  p.set_n_head(c.n_head);
  p.set_n_embd(c.n_embd);
  p.set_block_size(c.block_size);
  p.set_vocab_size(c.vocab_size);
  p.set_family(family_name(c.family));
  p.set_n_kv_head(c.n_kv_head);
  p.set_ffn_hidden(c.ffn_hidden);
  p.set_rope_theta(c.rope_theta);
  p.set_norm_eps(c.norm_eps);
  p.set_tie_embeddings(c.tie_embeddings);
  p.set_bias(c.bias);
  return p;
}

ModelConfig from_proto(const proto::ModelConfig& p) {
  ModelConfig c;
  c.n_layer = p.n_layer();
  c.n_head = p.n_head();
  c.n_embd = p.n_embd();
  c.block_size = p.block_size();
  c.vocab_size = p.vocab_size();
  if (p.has_family()) {
    if (p.family() != "gpt2" && p.family() != "llama")
      CR_INPUT_ERROR("the manifest's model family '{}' is not gpt2 or llama", p.family());
    c.family = p.family() == "llama" ? ModelFamily::Llama : ModelFamily::GPT2;
  }
  if (p.has_n_kv_head()) c.n_kv_head = p.n_kv_head();
  if (p.has_ffn_hidden()) c.ffn_hidden = p.ffn_hidden();
  if (p.has_rope_theta()) c.rope_theta = p.rope_theta();
  if (p.has_norm_eps()) c.norm_eps = p.norm_eps();
  if (p.has_tie_embeddings()) c.tie_embeddings = p.tie_embeddings();
  if (p.has_bias()) c.bias = p.bias();
  return c;
}

std::string describe(const ModelConfig& c) {
  std::string s = fmt::format("{} {} layers, {} heads, {} wide, context {}, vocabulary {}",
                              family_name(c.family), c.n_layer, c.n_head, c.n_embd, c.block_size,
                              c.vocab_size);
  if (c.kv_heads() != c.n_head) s += fmt::format(", {} kv heads", c.kv_heads());
  if (c.ffn_hidden_size() != 4 * c.n_embd) s += fmt::format(", MLP {}", c.ffn_hidden_size());
  if (!c.tie_embeddings) s += ", untied head";
  return s;
}

}  // namespace cr
