#include "parallel/checkpoint/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/common/error.h"
#include "core/common/log.h"
#include "core/io/crc32c.h"

namespace cr {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---- test-only crash hook ----------------------------------------------------------------
// CR_TEST_CKPT_KILL=STAGE@RANK[@STEP] SIGKILLs world rank RANK when a save (of step STEP, or any)
// reaches STAGE: mid_shard, after_shard, before_manifest, after_temp_manifest, before_rename.
void maybe_kill(const char* stage, int rank, int64_t step) {
  static const char* spec = std::getenv("CR_TEST_CKPT_KILL");
  if (!spec) return;
  const std::string s = spec;
  const auto a = s.find('@');
  if (a == std::string::npos || s.substr(0, a) != stage) return;
  const auto b = s.find('@', a + 1);
  if (std::atoi(s.c_str() + a + 1) != rank) return;
  if (b != std::string::npos && std::atoll(s.c_str() + b + 1) != step) return;
  log::warn("test fault hook: killing rank {} at checkpoint stage {} of step {}", rank, stage, step);
  std::fflush(stderr);
  ::raise(SIGKILL);
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) CR_THROW("{}: cannot open to fsync: {}", path, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) CR_THROW("{}: fsync failed: {}", path, std::strerror(err));
}

std::string shard_file_name(int rank) { return fmt::format("shard-r{:05d}.bin", rank); }

proto::Tensor describe_box(const ShardedTensor& t) {
  proto::Tensor p;
  p.set_name(t.name);
  p.set_dtype(proto::F32);
  for (int64_t d : t.global_shape) p.add_global_shape(d);
  auto* c = p.add_chunks();
  for (int64_t d : t.box.offset) c->add_offset(d);
  for (int64_t d : t.box.shape) c->add_shape(d);
  return p;
}

// Which rank writes each distinct (name, box): the holder with the fewest bytes so far (lowest
// rank on ties). Every rank computes the same answer from the same gathered descriptions.
// Returns, for this rank, the indices into `tensors` that it writes.
std::vector<size_t> assign_writers(const std::vector<ShardedTensor>& tensors, Communicator& world) {
  proto::Manifest mine;
  for (const auto& t : tensors) *mine.add_tensors() = describe_box(t);
  std::string bytes;
  mine.SerializeToString(&bytes);
  const auto all = world.all_gather_bytes(bytes, "ckpt.save.boxes");
  std::map<std::string, std::vector<int>> holders;  // key: name + box
  std::vector<std::string> order;
  std::map<std::string, int64_t> size_of;
  for (int r = 0; r < (int)all.size(); r++) {
    proto::Manifest m;
    CR_CHECK(m.ParseFromString(all[r]), "rank {} sent an unparsable tensor list", r);
    for (const auto& t : m.tensors()) {
      const std::string key = t.SerializeAsString();
      auto [it, fresh] = holders.try_emplace(key);
      if (fresh) {
        order.push_back(key);
        size_of[key] = volume({t.chunks(0).shape().begin(), t.chunks(0).shape().end()}) * 4;
      }
      it->second.push_back(r);
    }
  }
  std::vector<int64_t> load(all.size(), 0);
  std::map<std::string, int> writer;
  for (const auto& key : order) {
    int best = holders[key][0];
    for (int r : holders[key])
      if (load[r] < load[best]) best = r;
    load[best] += size_of[key];
    writer[key] = best;
  }
  std::vector<size_t> out;
  for (size_t i = 0; i < tensors.size(); i++)
    if (writer[describe_box(tensors[i]).SerializeAsString()] == world.rank()) out.push_back(i);
  return out;
}

class File {
 public:
  File(const std::string& path, int flags) : path_(path) {
    fd_ = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
    if (fd_ < 0) CR_THROW("{}: cannot open: {}", path, std::strerror(errno));
  }
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, std::min<size_t>(n, size_t(1) << 30));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) CR_THROW("{}: write failed: {}", path_, std::strerror(errno));
      p += w;
      n -= (size_t)w;
    }
  }
  void read_at(void* data, size_t n, uint64_t offset) {
    char* p = static_cast<char*>(data);
    while (n > 0) {
      const ssize_t r = ::pread(fd_, p, std::min<size_t>(n, size_t(1) << 30), (off_t)offset);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) CR_INPUT_ERROR("{}: read failed: {}", path_, std::strerror(errno));
      if (r == 0) CR_INPUT_ERROR("{}: unexpected end of file (truncated)", path_);
      p += r;
      n -= (size_t)r;
      offset += (uint64_t)r;
    }
  }
  void sync_and_close() {
    if (::fsync(fd_) != 0) CR_THROW("{}: fsync failed: {}", path_, std::strerror(errno));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) CR_THROW("{}: close failed: {}", path_, std::strerror(errno));
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// Expected size of every shard file: the end of its last chunk (writers pack chunks densely).
std::map<std::string, uint64_t> file_sizes(const proto::Manifest& m) {
  std::map<std::string, uint64_t> sizes;
  for (const auto& t : m.tensors())
    for (const auto& c : t.chunks()) {
      auto& s = sizes[c.file()];
      s = std::max<uint64_t>(s, c.byte_offset() + c.byte_length());
    }
  return sizes;
}

}  // namespace

// ---- single-process access ------------------------------------------------------------------

std::string step_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

std::vector<std::string> committed_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() < 13 || name.size() > 24 || name.rfind("step_", 0) != 0 || !e.is_directory())
      continue;
    if (!std::all_of(name.begin() + 5, name.end(), ::isdigit)) continue;
    found.emplace_back(std::stoll(name.substr(5)), e.path().string());
  }
  std::sort(found.rbegin(), found.rend());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

std::string resolve_checkpoint(const std::string& dir) {
  if (fs::exists(fs::path(dir) / kManifestFile)) return dir;
  if (!fs::is_directory(dir))
    CR_INPUT_ERROR("{}: no such checkpoint directory", dir);
  const auto all = committed_checkpoints(dir);
  if (all.empty())
    CR_INPUT_ERROR("{}: neither a checkpoint (no {}) nor a checkpoint.dir holding step_* checkpoints",
                   dir, kManifestFile);
  return all.front();
}

std::vector<std::string> verify_checkpoint(const std::string& ckpt, const proto::Manifest& m,
                                           int rank, int nranks, double* crc_seconds) {
  std::vector<std::string> problems;
  const auto sizes = file_sizes(m);
  int index = -1;
  std::vector<char> buf;
  for (const auto& [file, expect] : sizes) {
    if (++index % nranks != rank) continue;
    const std::string path = (fs::path(ckpt) / file).string();
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      problems.push_back(fmt::format("{}: missing shard file ({})", path, std::strerror(errno)));
      continue;
    }
    if ((uint64_t)st.st_size != expect) {
      problems.push_back(fmt::format("{}: {} bytes, the manifest expects {} ({})", path,
                                     (uint64_t)st.st_size, expect,
                                     (uint64_t)st.st_size < expect ? "truncated" : "extra bytes"));
      continue;
    }
    try {
      File f(path, O_RDONLY);
      for (const auto& t : m.tensors())
        for (const auto& c : t.chunks()) {
          if (c.file() != file) continue;
          buf.resize(c.byte_length());
          f.read_at(buf.data(), buf.size(), c.byte_offset());
          const auto t0 = Clock::now();
          const uint32_t crc = crc32c(buf.data(), buf.size());
          if (crc_seconds) *crc_seconds += since(t0);
          if (crc != c.crc32c())
            problems.push_back(fmt::format(
                "{}: tensor '{}' chunk at offset [{}] (bytes {}..{}): CRC32C {:08x}, the manifest "
                "says {:08x}: damaged",
                path, t.name(), fmt::join(c.offset(), ","), c.byte_offset(),
                c.byte_offset() + c.byte_length(), crc, c.crc32c()));
        }
    } catch (const Error& e) {
      problems.push_back(e.message());
    }
  }
  return problems;
}

void load_tensors(const std::string& ckpt, const proto::Manifest& m,
                  const std::vector<ShardedTensor>& tensors) {
  std::map<std::string, const proto::Tensor*> by_name;
  for (const auto& t : m.tensors()) by_name[t.name()] = &t;
  std::map<std::string, std::unique_ptr<File>> files;
  std::vector<float> buf;
  for (const ShardedTensor& dst : tensors) {
    auto it = by_name.find(dst.name);
    if (it == by_name.end()) CR_INPUT_ERROR("{}: the checkpoint has no tensor '{}'", ckpt, dst.name);
    const proto::Tensor& src = *it->second;
    bool same = src.global_shape_size() == (int)dst.global_shape.size();
    for (int d = 0; same && d < src.global_shape_size(); d++)
      same = d == dst.padded_dim || src.global_shape(d) == dst.global_shape[d];
    if (!same)
      CR_INPUT_ERROR("{}: tensor '{}' has shape [{}], this model's is [{}]", ckpt, dst.name,
                     fmt::join(src.global_shape(), ","), fmt::join(dst.global_shape, ","));
    std::fill(dst.data, dst.data + volume(dst.box.shape), 0.f);
    // What of this box the checkpoint holds: the rest (extra vocabulary padding) stays zero.
    Box saved{std::vector<int64_t>(dst.global_shape.size(), 0),
              {src.global_shape().begin(), src.global_shape().end()}};
    Box wanted;
    const int64_t need = intersect(dst.box, saved, &wanted) ? volume(wanted.shape) : 0;
    int64_t got = 0;
    for (const auto& c : src.chunks()) {
      Box cb{{c.offset().begin(), c.offset().end()}, {c.shape().begin(), c.shape().end()}};
      Box region;
      if (volume(cb.shape) == 0 || !intersect(cb, dst.box, &region)) continue;
      const std::string path = (fs::path(ckpt) / c.file()).string();
      auto& f = files[c.file()];
      if (!f) f = std::make_unique<File>(path, O_RDONLY);
      buf.resize((size_t)volume(cb.shape));
      f->read_at(buf.data(), c.byte_length(), c.byte_offset());
      const uint32_t crc = crc32c(buf.data(), c.byte_length());
      if (crc != c.crc32c())
        CR_INPUT_ERROR("{}: tensor '{}': chunk CRC32C {:08x}, the manifest says {:08x}: damaged",
                       path, dst.name, crc, c.crc32c());
      copy_region(buf.data(), cb, dst.data, dst.box, region);
      got += volume(region.shape);
    }
    if (got != need)
      CR_INPUT_ERROR("{}: tensor '{}': the chunks cover {} of the {} elements this rank needs",
                     ckpt, dst.name, got, need);
  }
}

// ---- the collective protocol ------------------------------------------------------------------

Checkpointer::Checkpointer(std::string dir, int keep_last, Communicator& world)
    : dir_(std::move(dir)), keep_last_(keep_last), world_(world) {}

bool Checkpointer::agree(bool ok) {
  float failed = ok ? 0.f : 1.f;
  world_.all_reduce(&failed, 1, ReduceOp::Max, "ckpt.agree");
  return failed == 0.f;
}

void Checkpointer::prepare() {
  std::string error;
  if (world_.rank() == 0) {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (ec || !fs::is_directory(dir_)) {
      error = fmt::format("checkpoint.dir '{}': cannot create the directory: {}", dir_,
                          ec ? ec.message() : "a file is in the way");
    } else {
      for (const auto& e : fs::directory_iterator(dir_, ec)) {
        const std::string name = e.path().filename().string();
        if (name.rfind("step_", 0) == 0 && name.size() > 4 &&
            name.compare(name.size() - 4, 4, ".tmp") == 0) {
          log::info("checkpoint: removing {}, left by an interrupted save", e.path().string());
          fs::remove_all(e.path(), ec);
        }
      }
    }
  }
  if (!agree(error.empty())) {
    if (!error.empty()) CR_INPUT_ERROR("{}", error);
    CR_INPUT_ERROR("checkpoint.dir '{}': rank 0 could not prepare it", dir_);
  }
}

bool Checkpointer::save(const std::vector<ShardedTensor>& tensors, proto::Manifest meta, int tp,
                        int dp) {
  const auto t0 = Clock::now();
  save_timing_ = Timing{};
  const int rank = world_.rank();
  const int64_t step = meta.step();
  const fs::path final_dir = fs::path(dir_) / step_dir_name(step);
  const fs::path tmp_dir = fs::path(dir_) / (step_dir_name(step) + ".tmp");

  // 1. the temporary directory
  std::string error;
  if (rank == 0) {
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);
    if (!fs::create_directories(tmp_dir, ec) || ec)
      error = fmt::format("{}: cannot create: {}", tmp_dir.string(), ec.message());
  }
  if (!agree(error.empty())) {
    log::warn("checkpoint step {} not saved: {}", step, error.empty() ? "rank 0 failed" : error);
    return false;
  }

  // 2. this rank's shard file
  const std::vector<size_t> mine = assign_writers(tensors, world_);
  proto::Manifest records;
  if (!mine.empty()) {
    const std::string file = shard_file_name(rank);
    const std::string path = (tmp_dir / file).string();
    try {
      File f(path, O_WRONLY | O_CREAT | O_TRUNC);
      uint64_t at = 0;
      for (size_t k = 0; k < mine.size(); k++) {
        const ShardedTensor& t = tensors[mine[k]];
        const size_t n = (size_t)volume(t.box.shape) * sizeof(float);
        const auto tc = Clock::now();
        const uint32_t crc = crc32c(t.data, n);
        save_timing_.crc_seconds += since(tc);
        f.write(t.data, n);
        proto::Tensor rec = describe_box(t);
        auto* c = rec.mutable_chunks(0);
        c->set_file(file);
        c->set_byte_offset(at);
        c->set_byte_length(n);
        c->set_crc32c(crc);
        *records.add_tensors() = std::move(rec);
        at += n;
        if (k == 0) maybe_kill("mid_shard", rank, step);
      }
      f.sync_and_close();
    } catch (const Error& e) {
      error = e.message();
    }
  }
  if (error.empty()) maybe_kill("after_shard", rank, step);

  // 3. agree on the shards
  if (!error.empty()) log::warn("checkpoint step {}: {}", step, error);
  if (!agree(error.empty())) {
    if (rank == 0) {
      std::error_code ec;
      fs::remove_all(tmp_dir, ec);
      log::warn("checkpoint step {} abandoned: a rank failed to write its shard (see its "
                "warning); the latest checkpoint is unchanged",
                step);
    }
    return false;
  }

  // 4. rank 0: merge the records, check coverage, write the manifest last
  std::string bytes;
  records.SerializeToString(&bytes);
  const auto all = world_.all_gather_bytes(bytes, "ckpt.save.chunks");
  bool committed = false;
  if (rank == 0) {
    try {
      maybe_kill("before_manifest", rank, step);
      // The manifest lists tensors in the model's order (every rank holds every name).
      std::map<std::string, int> index;
      for (const ShardedTensor& t : tensors) {
        if (index.count(t.name)) continue;  // a rank may hold several boxes of one tensor
        proto::Tensor* nt = meta.add_tensors();
        *nt = describe_box(t);
        nt->clear_chunks();
        index[t.name] = meta.tensors_size() - 1;
      }
      for (const auto& part : all) {
        proto::Manifest m;
        CR_CHECK(m.ParseFromString(part), "unparsable chunk records");
        for (const auto& t : m.tensors()) {
          auto [it, fresh] = index.try_emplace(t.name(), meta.tensors_size());
          if (fresh) {
            proto::Tensor* nt = meta.add_tensors();
            *nt = t;
            nt->clear_chunks();
          }
          *meta.mutable_tensors(it->second)->add_chunks() = t.chunks(0);
        }
      }
      meta.set_format_version(kManifestFormat);
      meta.set_model_config_hash(model_config_hash(from_proto(meta.model())));
      meta.mutable_saved_layout()->set_world(world_.size());
      meta.mutable_saved_layout()->set_tensor(tp);
      meta.mutable_saved_layout()->set_data(dp);
      validate_manifest(meta, (tmp_dir / kManifestFile).string());  // coverage, before commit
      for (const auto& t : meta.tensors())
        for (const auto& c : t.chunks()) save_timing_.bytes += c.byte_length();
      write_manifest(meta, (tmp_dir / kManifestFile).string(),
                     [&] { maybe_kill("after_temp_manifest", rank, step); });
      fsync_path(tmp_dir.string(), true);
      maybe_kill("before_rename", rank, step);
      // 5. commit
      if (fs::exists(final_dir)) {
        // A re-save of a step (after falling back past a damaged one): swap the two atomically,
        // so a crash leaves one of them committed, then drop the old one.
        if (::renameat2(AT_FDCWD, tmp_dir.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0)
          CR_THROW("{}: cannot exchange with {}: {}", tmp_dir.string(), final_dir.string(),
                   std::strerror(errno));
        std::error_code ec;
        fs::remove_all(tmp_dir, ec);
      } else if (::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) {
        CR_THROW("{}: cannot rename to {}: {}", tmp_dir.string(), final_dir.string(),
                 std::strerror(errno));
      }
      fsync_path(dir_, true);
      committed = true;
    } catch (const Error& e) {
      error = e.message();
      log::warn("checkpoint step {} abandoned: {}; the latest checkpoint is unchanged", step, error);
      std::error_code ec;
      fs::remove_all(tmp_dir, ec);
    }
    if (committed && keep_last_ > 0) {
      // Keep this one and the keep_last - 1 newest before it. Newer ones (damaged checkpoints
      // the run fell back past) are not counted and not touched.
      int kept = 1;
      for (const auto& c : committed_checkpoints(dir_)) {
        const int64_t s = std::stoll(fs::path(c).filename().string().substr(5));
        if (s >= step || kept++ < keep_last_) continue;
        std::error_code ec;
        fs::remove_all(c, ec);
        if (ec) log::warn("checkpoint.keep_last: cannot remove {}: {}", c, ec.message());
      }
    }
  }
  // 6. everyone learns the outcome
  const bool ok = agree(rank != 0 || committed);
  save_timing_.seconds = since(t0);
  return ok;
}

std::optional<proto::Manifest> Checkpointer::load_latest(const std::vector<ShardedTensor>& tensors,
                                                         const ModelConfig& expect) {
  const auto t0 = Clock::now();
  load_timing_ = Timing{};
  // Every rank lists the same directory; rank 0's list is the one used.
  std::vector<std::string> candidates;
  {
    std::string listing;
    if (world_.rank() == 0)
      for (const auto& c : committed_checkpoints(dir_)) listing += c + "\n";
    const std::string all = world_.all_gather_bytes(listing, "ckpt.load.listing")[0];
    size_t a = 0;
    for (size_t b; (b = all.find('\n', a)) != std::string::npos; a = b + 1)
      candidates.push_back(all.substr(a, b - a));
  }
  for (const std::string& ckpt : candidates) {
    // The manifest: rank 0 reads and checks it, every rank gets the same bytes.
    std::string problem, payload;
    const std::string mpath = (fs::path(ckpt) / kManifestFile).string();
    if (world_.rank() == 0) {
      try {
        proto::Manifest m = read_manifest(mpath);
        if (m.model_config_hash() != model_config_hash(expect) ||
            m.model_config_hash() != model_config_hash(from_proto(m.model())))
          problem = fmt::format(
              "{}: saved for another model ({}), this run's is {}; point checkpoint.dir "
              "elsewhere or match the model",
              mpath, describe(from_proto(m.model())), describe(expect));
        else
          m.SerializeToString(&payload);
      } catch (const InputError& e) {
        payload.clear();
        log::warn("checkpoint {} is damaged, skipping it: {}", ckpt, e.message());
      }
    }
    const std::string got = world_.all_gather_bytes(problem + '\0' + payload, "ckpt.load.verify")[0];
    const size_t nul = got.find('\0');
    if (nul > 0) CR_INPUT_ERROR("{}", got.substr(0, nul));
    if (got.size() == 1) continue;  // damaged manifest: the one before
    proto::Manifest m;
    CR_CHECK(m.ParseFromString(got.substr(1)), "manifest broadcast did not parse");
    validate_manifest(m, mpath);

    // The shards: each rank checks every world-size-th file.
    const auto tv = Clock::now();
    const auto problems = verify_checkpoint(ckpt, m, world_.rank(), world_.size(),
                                            &load_timing_.crc_seconds);
    for (const auto& p : problems) log::warn("checkpoint {} is damaged: {}", ckpt, p);
    const bool sound = agree(problems.empty());
    load_timing_.verify_seconds = since(tv);
    if (!sound) {
      log::warn("checkpoint {} failed verification; falling back to the one before it", ckpt);
      continue;
    }
    std::string error;
    try {
      load_tensors(ckpt, m, tensors);
    } catch (const InputError& e) {
      error = e.message();
    }
    if (!agree(error.empty())) {
      if (!error.empty()) CR_INPUT_ERROR("{}", error);
      CR_INPUT_ERROR("{}: another rank could not load its tensors (see its error)", ckpt);
    }
    for (const auto& t : m.tensors())
      for (const auto& c : t.chunks()) load_timing_.bytes += c.byte_length();
    load_timing_.seconds = since(t0);
    log::info("checkpoint: loaded {} (step {}, saved at tensor {} x data {})", ckpt, m.step(),
              m.saved_layout().tensor(), m.saved_layout().data());
    return m;
  }
  load_timing_.seconds = since(t0);
  return std::nullopt;
}

}  // namespace cr
