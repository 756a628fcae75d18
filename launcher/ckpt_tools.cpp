// `chainrule ckpt inspect|verify|export`: look into a checkpoint without a training job. Each
// takes a checkpoint (a step_NNNNNNNN directory) or a checkpoint.dir (then: its newest, or for
// verify, every committed one). Single process, no MPI.
#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/common/error.h"
#include "core/model/gpt.h"
#include "core/model/hf_interchange.h"
#include "launcher/commands.h"
#include "parallel/checkpoint/checkpoint.h"

namespace cr {

namespace fs = std::filesystem;

namespace {

std::string mb(uint64_t bytes) { return fmt::format("{:.2f} MB", bytes / 1e6); }

std::string utc(int64_t unix_s) {
  const std::time_t t = (std::time_t)unix_s;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

}  // namespace

int run_ckpt_inspect(const CkptOptions& opt) {
  const std::string ckpt = resolve_checkpoint(opt.dir);
  const proto::Manifest m = read_manifest((fs::path(ckpt) / kManifestFile).string());
  const auto& lay = m.saved_layout();
  fmt::print("checkpoint {} (manifest format {})\n", ckpt, m.format_version());
  fmt::print("  step {}, {} tokens seen; saved at tensor {} x data {} ({} ranks){}, {}\n", m.step(),
             m.tokens_seen(), lay.tensor(), lay.data(), lay.world(),
             lay.zero() ? fmt::format(", ZeRO-{} optimizer parts", lay.zero()) : "",
             utc(m.created_unix_s()));
  fmt::print("  model: {} (config hash {:016x})\n", describe(from_proto(m.model())),
             m.model_config_hash());
  const auto& o = m.optimizer();
  fmt::print("  optimizer: {}, {} steps taken, betas ({}, {}), eps {}, weight decay {}\n", o.kind(),
             o.steps_taken(), o.beta1(), o.beta2(), o.eps(), o.weight_decay());
  const auto& s = m.lr_schedule();
  fmt::print("  lr schedule: {} from {} to {}, warmup {} of {} steps; last lr {:.3e}\n", s.kind(),
             s.lr(), s.min_lr(), s.warmup_steps(), s.max_steps(), s.last_lr());
  fmt::print("  data: {} sequences x {} tokens per step\n", m.global_batch(), m.block_size());
  for (const auto& l : m.loader())
    fmt::print("    dp rank {}: next step {}, sequences [{}, {}) of each global batch\n", l.dp_rank(),
               l.next_step(), l.first_sequence(), l.first_sequence() + l.sequences_per_step());
  fmt::print("  rng: seed {} ({})\n", m.rng().seed(), m.rng().generator());
  fmt::print("  versions: MPI {}; NCCL {}; {}\n", m.mpi_version(), m.nccl_version(), m.created_by());
  std::map<std::string, uint64_t> files;
  uint64_t total = 0;
  for (const auto& t : m.tensors())
    for (const auto& c : t.chunks()) {
      files[c.file()] += c.byte_length();
      total += c.byte_length();
    }
  fmt::print("  files ({}, {}):\n", files.size(), mb(total));
  for (const auto& [f, n] : files) fmt::print("    {}  {}\n", f, mb(n));
  fmt::print("  tensors ({}):\n", m.tensors_size());
  size_t width = 0;
  for (const auto& t : m.tensors()) width = std::max(width, t.name().size());
  for (const auto& t : m.tensors()) {
    uint64_t bytes = 0;
    for (const auto& c : t.chunks()) bytes += c.byte_length();
    fmt::print("    {:<{}}  f32  [{}]  {} chunk{}  {}\n", t.name(), width,
               fmt::join(t.global_shape(), ", "), t.chunks_size(), t.chunks_size() == 1 ? "" : "s",
               mb(bytes));
  }
  return 0;
}

int run_ckpt_verify(const CkptOptions& opt) {
  std::vector<std::string> targets;
  if (fs::exists(fs::path(opt.dir) / kManifestFile)) {
    targets.push_back(opt.dir);
  } else {
    targets = committed_checkpoints(opt.dir);
    if (targets.empty()) resolve_checkpoint(opt.dir);  // throws the one-line error
  }
  int damaged = 0;
  for (const auto& ckpt : targets) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::string> problems;
    uint64_t bytes = 0;
    size_t nfiles = 0;
    try {
      const proto::Manifest m = read_manifest((fs::path(ckpt) / kManifestFile).string());
      problems = verify_checkpoint(ckpt, m);
      std::map<std::string, int> files;
      for (const auto& t : m.tensors())
        for (const auto& c : t.chunks()) {
          bytes += c.byte_length();
          files[c.file()]++;
        }
      nfiles = files.size();
    } catch (const InputError& e) {
      problems.push_back(e.message());
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (problems.empty()) {
      fmt::print("{}: ok: {} files, {}, every CRC32C matches ({:.3f} s, {:.0f} MB/s)\n", ckpt,
                 nfiles, mb(bytes), secs, bytes / 1e6 / std::max(secs, 1e-9));
    } else {
      damaged++;
      for (const auto& p : problems) fmt::print("{}: DAMAGED: {}\n", ckpt, p);
    }
  }
  if (targets.size() > 1)
    fmt::print("{} of {} checkpoints sound\n", targets.size() - damaged, targets.size());
  return damaged == 0 ? 0 : 1;
}

int run_ckpt_export(const CkptOptions& opt) {
  if (opt.out.empty()) CR_INPUT_ERROR("ckpt export: --out DIR is required");
  const std::string ckpt = resolve_checkpoint(opt.dir);
  const proto::Manifest m = read_manifest((fs::path(ckpt) / kManifestFile).string());
  const ModelConfig mc = from_proto(m.model());
  GPT whole(mc);
  std::vector<ShardedTensor> tensors;
  for (const ParamTensor& t : whole.layout().tensors())
    tensors.push_back({"model/" + t.name, t.global_shape, shard_box(t.global_shape, -1, 0, 1),
                       whole.params() + t.offset, t.padded_dim});
  load_tensors(ckpt, m, tensors);
  std::error_code ec;
  fs::create_directories(opt.out, ec);
  if (ec || !fs::is_directory(opt.out))
    CR_INPUT_ERROR("--out {}: cannot create the directory: {}", opt.out,
                   ec ? ec.message() : "a file is in the way");
  export_hf_model(whole, opt.out);
  fmt::print("exported {} (step {}, {}) to {}/model.safetensors + config.json\n", ckpt, m.step(),
             describe(mc), opt.out);
  return 0;
}

}  // namespace cr
