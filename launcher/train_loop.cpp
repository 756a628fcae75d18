// `chainrule train`: the one file that wires every stage of a training step, in order.
//
//   ranks and groups (RankGrid, TP and DP communicators)
//   -> data (this DP rank's slice of the global batch) -> model shard (this TP rank's slice of
//   every layer) forward/backward over micro-batches, TP collectives inside
//   -> DP gradient reduction (buckets handed over as backward finishes them, reduced while it goes
//   on; averaged once) -> global gradient norm + clipping -> AdamW on the shard at the scheduled
//   learning rate (ZeRO-1: gradients reduce-scattered, AdamW on this rank's parts, parameters
//   all-gathered)
//   -> metrics and progress (rank 0; with run.tensorboard also TensorBoard event files) -> periodic
//   validation (and per-layer norms, a text sample) -> checkpoints (every N steps, at the end, on
//   SIGTERM/SIGUSR1) -> final evaluation and export.
// With checkpoint.dir set, a run first resumes from the newest sound checkpoint there: weights,
// AdamW moments and step count, data position and LR schedule, so the steps that follow are
// bit-identical to an uninterrupted run.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <ctime>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "core/common/error.h"
#include "core/common/log.h"
#include "core/data/loader.h"
#include "core/io/tfevents.h"
#include "core/model/generate.h"
#include "core/model/gpt.h"
#include "core/model/hf_interchange.h"
#include "core/optim/adamw.h"
#include "launcher/commands.h"
#include "launcher/distributed.h"
#include "launcher/evaluate.h"
#include "launcher/memory_plan.h"
#include "launcher/progress.h"
#include "parallel/checkpoint/checkpoint.h"
#include "parallel/comm/flight_recorder.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/comm/nccl_api.h"
#include "parallel/layers/data_parallel.h"
#include "parallel/layers/tensor_parallel_comm.h"

namespace cr {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.1f}k", n / 1e3);
  return fmt::format("{:.0f}", n);
}

// run.dir/metrics.jsonl: one JSON object per line, flushed so a crashed run keeps its history;
// a resumed run appends after a "resume" line (the lines that follow supersede those of its
// steps after the checkpoint), a fresh one starts the file anew. With run.tensorboard the same
// numbers also go to a TensorBoard event file of this run start (core/io/tfevents.h), whose
// SessionLog START makes TensorBoard drop the superseded steps the same way. Only rank 0
// writes; the others hold a closed stream.
class MetricsLog {
 public:
  MetricsLog(const Config& cfg, bool writer, int start_step) {
    if (!writer) return;
    const fs::path path = fs::path(cfg.run.dir) / "metrics.jsonl";
    out_.open(path, start_step > 0 ? std::ios::app : std::ios::trunc);
    if (!out_) CR_INPUT_ERROR("{}: cannot create metrics file", path.string());
    if (cfg.run.tensorboard) events_.emplace(cfg.run.dir, start_step > 0 ? start_step + 1 : 0);
    if (start_step > 0) write({{"type", "resume"}, {"step", start_step}});
  }
  // A text sample's bytes may end inside a UTF-8 character: replaced (U+FFFD), never a throw.
  void write(const nlohmann::json& j) {
    if (!out_.is_open()) return;
    out_ << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n" << std::flush;
    if (events_) record_events(j);
  }
  // The event file's buffered records to disk: at log steps, checkpoints, evaluations and the end.
  void flush() {
    if (events_) events_->flush();
  }

 private:
  // The TensorBoard twin of a metrics line: every number of a "train" line as train/KEY, of an
  // "eval" line as val/KEY (less its val_ prefix), of a "norms" line as norms/param/GROUP and
  // norms/grad/GROUP; a "sample" line's text as samples/text (the text plugin).
  // The text plugin renders Markdown: as an indented code block (every line after 4 spaces) a
  // sample keeps its line breaks and shows every character as it is.
  static std::string code_block(const std::string& text) {
    std::string out = "    ";
    for (char ch : text) out += ch == '\n' ? std::string("\n    ") : std::string(1, ch);
    return out;
  }
  void record_events(const nlohmann::json& j) {
    const std::string type = j.value("type", "");
    const int64_t step = j.value("step", (int64_t)0);
    if (type == "sample") return events_->text("samples/text", step, code_block(j.value("text", "")));
    if (type != "train" && type != "eval" && type != "norms") return;
    std::function<void(const std::string&, const nlohmann::json&)> walk = [&](const std::string& tag,
                                                                             const nlohmann::json& v) {
      if (v.is_number()) events_->scalar(tag, step, v.get<float>());
      if (!v.is_object()) return;
      for (const auto& [k, x] : v.items())
        if (k != "type" && k != "step") walk(tag + "/" + (k.rfind("val_", 0) == 0 ? k.substr(4) : k), x);
    };
    walk(type == "eval" ? "val" : type, j);
  }
  std::ofstream out_;
  std::optional<EventWriter> events_;
};

// SIGTERM (Slurm pre-emption, `kill`) and SIGUSR1 (`#SBATCH --signal`, mpirun forwards it) ask
// for a checkpoint at the next step boundary and a clean exit. The handler only sets a flag;
// the ranks agree on it once per step, so they all stop after the same step.
volatile sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int sig) { g_stop_signal = sig; }

// The stop signal every rank agrees on: the largest one any rank caught, 0 for none. A collective
// over all ranks, so every rank calls it at the same point: after each step, and before each
// evaluation micro-batch (an evaluation can outlast a scheduler's grace period).
int agreed_stop_signal(Communicator& world) {
  float sig = (float)g_stop_signal;
  if (world.size() > 1) world.all_reduce(&sig, 1, ReduceOp::Max, "stop_signal");
  return (int)sig;
}

// Test-only: CR_TEST_KILL_AT_STEP=k SIGKILLs world rank CR_TEST_KILL_RANK (default 0) right after
// step k, before any checkpoint of that step; not in a job restarted by `launch --max-restarts`.
// CR_TEST_STEP_DELAY_MS=t sleeps t ms after every step (the results do not change): a short run
// lasts long enough for a test to act on it mid-run (cut a link, send a signal).
void maybe_kill_at_step(int done, int rank) {
  static const char* delay = std::getenv("CR_TEST_STEP_DELAY_MS");
  if (delay) std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(delay)));
  static const char* at = std::getenv("CR_TEST_KILL_AT_STEP");
  static const char* who = std::getenv("CR_TEST_KILL_RANK");
  static const char* restart = std::getenv("CR_RESTART_COUNT");
  if (!at || std::atoi(at) != done || (who ? std::atoi(who) : 0) != rank) return;
  if (restart && std::atoi(restart) > 0) return;
  log::warn("test fault hook: killing rank {} after step {}", rank, done);
  std::fflush(stderr);
  ::raise(SIGKILL);
}

// What a checkpoint holds of this rank, in host memory: the f32 parameters and AdamW's m and v
// (whatever train.dtype: the format does not depend on the device or dtype, so a checkpoint
// resumes anywhere). On the CPU these are the model's own buffers; on a GPU, host mirrors copied
// from the device before a save (to_host) and back to it after a resume (to_device).
// With ZeRO-1 this rank's m and v cover only its parts of the flat buffer: each part of a tensor
// is saved as the boxes of that flat range, once, by its owner, so the checkpoint has the same
// tensors as any other layout's and loads into any (tp, dp, zero).
class CheckpointState {
 public:
  CheckpointState(GPT& model, AdamW& opt) : model_(model), opt_(opt) {
    mirrored_ = model.param_buffer().device() != Device::CPU;
    if (mirrored_) {
      p_.assign(model.num_params(), 0.f);
      m_.assign(opt.m().size(), 0.f);
      v_.assign(opt.v().size(), 0.f);
    }
  }
  // This rank's slice of every saved tensor, each a box of the global tensor (its TP shard, or
  // all of it when replicated; with ZeRO, boxes of its parts of those).
  std::vector<ShardedTensor> tensors() {
    std::vector<ShardedTensor> out;
    float* p = host(model_.param_buffer(), p_);
    for (const ParamTensor& t : model_.layout().tensors())
      out.push_back({"model/" + t.name, t.global_shape, tp_box(t), p + t.offset, t.padded_dim});
    for (auto [prefix, base] : {std::pair<const char*, float*>{"optim.m/", host(opt_.m(), m_)},
                                {"optim.v/", host(opt_.v(), v_)}})
      optimizer_parts(prefix, base, out);
    return out;
  }
  void to_host() {
    if (mirrored_)
      for (auto [dev, h] : pairs()) model_.backend().copy(flat(h), dev->view());
  }
  void to_device() {
    if (mirrored_)
      for (auto [dev, h] : pairs()) model_.backend().copy(dev->view(), flat(h));
    model_.params_changed();
  }

 private:
  Box tp_box(const ParamTensor& t) const {
    return shard_box(t.global_shape, t.shard_dim, model_.tp_rank(), model_.tp_size());
  }
  // The optimizer state at `base` (the ranges of opt_, back to back) as boxes of each tensor.
  void optimizer_parts(const std::string& prefix, float* base, std::vector<ShardedTensor>& out) {
    size_t state = 0;
    for (const FlatRange& r : opt_.ranges()) {
      for (const ParamTensor& t : model_.layout().tensors()) {
        const size_t b = std::max(r.begin, t.offset), e = std::min(r.end, t.offset + t.numel);
        if (b >= e) continue;
        const Box shard = tp_box(t);
        for (FlatBox fb : flat_range_boxes(t.shape, (int64_t)(b - t.offset), (int64_t)(e - t.offset))) {
          for (size_t d = 0; d < fb.box.offset.size(); d++) fb.box.offset[d] += shard.offset[d];
          out.push_back({prefix + t.name, t.global_shape, std::move(fb.box),
                         base + state + (t.offset + (size_t)fb.first - r.begin), t.padded_dim});
        }
      }
      state += r.size();
    }
  }
  float* host(DeviceBuffer& b, std::vector<float>& mirror) { return mirrored_ ? mirror.data() : b.f32(); }
  static TensorView flat(std::vector<float>* h) { return TensorView::f32(h->data(), {(int64_t)h->size()}); }
  std::vector<std::pair<DeviceBuffer*, std::vector<float>*>> pairs() {
    return {{&model_.param_buffer(), &p_}, {&opt_.m(), &m_}, {&opt_.v(), &v_}};
  }
  GPT& model_;
  AdamW& opt_;
  bool mirrored_;
  std::vector<float> p_, m_, v_;
};

// The model config of the run: model.vocab_size 0 takes the data's tokenizer's vocabulary.
ModelConfig model_config(const Config& cfg, const std::optional<DatasetInfo>& info) {
  ModelConfig mc = cfg.model;
  if (mc.vocab_size == 0) {
    if (!info || !info->tokenizer)
      CR_INPUT_ERROR("{}: model.vocab_size is 0 (take it from the data) but {} has no {} with a "
                     "tokenizer; set model.vocab_size",
                     cfg.source, cfg.data.dir, kDatasetInfoFile);
    mc.vocab_size = info->tokenizer->vocab_size();
  }
  return mc;
}

std::string eval_line(int step, const EvalResult& r, double secs) {
  const std::string bpb = r.bytes_per_token > 0 ? fmt::format("{:.4f}", r.bits_per_byte()) : "n/a";
  return fmt::format("eval step {} | val loss {:.4f} nats | {:.4f} bits/token | {} bits/byte | "
                     "ppl {:.2f} | {} tokens in {}",
                     step, r.loss, r.bits_per_token(), bpb, r.perplexity(),
                     human_count((double)r.tokens), format_duration(secs));
}

// Resuming with other schedule, seed or batch settings is allowed, but said.
void warn_resume_differences(const proto::Manifest& m, const Config& cfg) {
  auto differs = [&](const char* what, double was, double now) {
    if (was != now)
      log::warn("resuming with {} = {} (the checkpoint was saved with {}): the run will not "
                "match an uninterrupted one",
                what, now, was);
  };
  differs("train.max_steps", (double)m.lr_schedule().max_steps(), cfg.train.max_steps);
  differs("train.lr", m.lr_schedule().lr(), cfg.train.lr);
  differs("train.warmup_steps", (double)m.lr_schedule().warmup_steps(), cfg.train.warmup_steps);
  differs("train.seed", (double)m.rng().seed(), (double)cfg.train.seed);
  differs("train.global_batch", (double)m.global_batch(), cfg.train.global_batch);
  if (!cfg.train.init_from.empty())
    log::info("train.init_from is ignored: the checkpoint's weights take its place");
}

// Loads the newest sound checkpoint of checkpoint.dir into the tensors and AdamW's step count;
// returns its step (0: none there, start from scratch).
int resume(Checkpointer& ckpt, const std::vector<ShardedTensor>& tensors, const ModelConfig& mc,
           AdamW& opt, const Config& cfg) {
  ckpt.prepare();
  const auto m = ckpt.load_latest(tensors, mc);
  if (!m) {
    log::info("checkpoint: none in {}; starting from step 0", cfg.checkpoint.dir);
    return 0;
  }
  opt.set_steps_taken((int)m->optimizer().steps_taken());
  const auto& lt = ckpt.last_load();
  log::info("resumed at step {}: {:.1f} MB verified in {:.2f} s and loaded in {:.2f} s ({:.0f} MB/s)",
            m->step(), lt.bytes / 1e6, lt.verify_seconds, lt.seconds,
            lt.bytes / 1e6 / std::max(lt.seconds, 1e-9));
  warn_resume_differences(*m, cfg);
  return (int)m->step();
}

// Everything a checkpoint of `done` steps records besides the tensors: the step, the model, each
// DP rank's data position, the seed, the LR schedule, AdamW's state and the libraries.
proto::Manifest checkpoint_meta(const Config& cfg, const ModelConfig& mc, int done, float lr,
                                int dp, int adam_steps, const ParallelContext& ctx) {
  const int G = cfg.train.global_batch, T = mc.block_size;
  proto::Manifest meta;
  meta.set_step(done);
  meta.set_tokens_seen((int64_t)done * G * T);
  meta.set_global_batch(G);
  meta.set_block_size(T);
  *meta.mutable_model() = to_proto(mc);
  for (int d = 0; d < dp; d++) {
    auto* l = meta.add_loader();
    l->set_dp_rank(d);
    l->set_next_step(done);
    l->set_first_sequence((int64_t)d * (G / dp));
    l->set_sequences_per_step(G / dp);
  }
  meta.mutable_rng()->set_seed((uint64_t)cfg.train.seed);
  meta.mutable_rng()->set_generator(
      "xoshiro256** seeded by train.seed: initial weights; per-epoch data permutation; no "
      "other randomness in a step");
  auto* sched = meta.mutable_lr_schedule();
  sched->set_kind("warmup_cosine");
  sched->set_lr(cfg.train.lr);
  sched->set_min_lr(cfg.train.min_lr);
  sched->set_warmup_steps(cfg.train.warmup_steps);
  sched->set_max_steps(cfg.train.max_steps);
  sched->set_last_lr(lr);
  auto* o = meta.mutable_optimizer();
  o->set_kind("adamw");
  o->set_steps_taken(adam_steps);
  o->set_beta1(cfg.train.beta1);
  o->set_beta2(cfg.train.beta2);
  o->set_eps(cfg.train.eps);
  o->set_weight_decay(cfg.train.weight_decay);
  meta.mutable_saved_layout()->set_zero(dp > 1 ? cfg.parallel.zero : 0);
  meta.set_mpi_version(ctx.mpi ? mpi_library_version() : "none (one rank, no MPI)");
  meta.set_nccl_version(ctx.nccl ? ctx.nccl->version() : "none");
  meta.set_created_by("chainrule train");
  meta.set_created_unix_s((int64_t)std::time(nullptr));
  return meta;
}

// rank 0: run.dir with the resolved config.yaml and the tokenizer.
void write_run_dir(const Config& cfg, const ModelConfig& mc, const std::optional<DatasetInfo>& info) {
  std::error_code ec;
  fs::create_directories(cfg.run.dir, ec);
  if (ec || !fs::is_directory(cfg.run.dir))
    CR_INPUT_ERROR("run.dir '{}': cannot create the directory: {}", cfg.run.dir,
                   ec ? ec.message() : "a file is in the way");
  std::ofstream(fs::path(cfg.run.dir) / "config.yaml") << [&] {
    Config resolved = cfg;  // what was run, exactly: derived vocab, data dir usable from anywhere
    resolved.model.vocab_size = mc.vocab_size;
    resolved.data.dir = fs::absolute(cfg.data.dir).lexically_normal().string();
    return config_to_yaml(resolved);
  }();
  if (info && info->tokenizer)
    std::ofstream(fs::path(cfg.run.dir) / kRunTokenizerFile) << info->tokenizer->to_json().dump() << "\n";
}

// ---- device, dtype and the memory plan -------------------------------------------------------

// train.device (empty: cuda when this binary has it and a GPU is visible). One GPU per rank,
// chosen by the rank's index on its node; more ranks than GPUs share them round-robin.
Backend& select_backend(const Config& cfg, const ParallelContext& ctx) {
  const std::string device = !cfg.train.device.empty() ? cfg.train.device
                             : cuda_available()         ? "cuda"
                                                        : "cpu";
  if (device == "cpu") return cpu_backend();
  const int gpus = cuda_device_count();
  Backend& be = cuda_backend(gpus > 0 ? ctx.local_rank % gpus : 0);  // throws, named, if none
  if (ctx.world->rank() == 0)  // before build_groups: the grid is not set yet
    log::info("device: cuda, {} GPU(s) visible per node, {} rank(s) per node{}", gpus,
              ctx.local_size, ctx.local_size > gpus ? " (ranks share GPUs)" : "");
  return be;
}

// data.document_mask and model.prefix_lm, checked against the data: a document mask needs the
// tokenizer's end-of-text token, prefix-LM a loss mask (prepare --format pairs).
AttentionMaskSpec attention_mask_spec(const Config& cfg, const std::optional<DatasetInfo>& info,
                                      const TokenSplit& train) {
  AttentionMaskSpec spec{cfg.data.document_mask, cfg.prefix_lm, -1};
  if (spec.document_mask) {
    if (!info || !info->tokenizer || info->tokenizer->eot_id() < 0)
      CR_INPUT_ERROR("data.document_mask: {} has no tokenizer with an end-of-text token in {} "
                     "(prepare the data again with this version)", cfg.data.dir, kDatasetInfoFile);
    spec.eot = info->tokenizer->eot_id();
  }
  if (spec.prefix_lm && !train.has_loss_mask())
    CR_INPUT_ERROR("model.prefix_lm: the train split of {} has no loss mask to find the prompts "
                   "in (prepare --format pairs writes one)", cfg.data.dir);
  return spec;
}

// What one optimizer step works on: the model shard, its optimizer and communication, and the
// data of this DP rank.
struct StepContext {
  GPT& model;
  AdamW& opt;
  GradientSync& grad_sync;
  Communicator& dp;
  TensorParallelComm& tp;
  BatchLoader& loader;
  FlightRecorder* flight;  // null on one rank: a stall watch sees each micro-batch as progress
};
// The host buffers of one micro-batch: inputs and targets [M,T], kv_range [M,T,2] (empty
// without document masks or prefix-LM: causal attention).
struct StepBuffers {
  StepBuffers(int M, int T, const AttentionMaskSpec& spec)
      : inputs((size_t)M * T), targets((size_t)M * T),
        kv_range(spec.document_mask || spec.prefix_lm ? 2 * (size_t)M * T : 0) {}
  std::vector<int32_t> inputs, targets, kv_range;
};
struct StepResult {
  float loss, norm, lr;  // mean loss over the global batch (nats), pre-clip gradient norm, LR
  double comm_exposed_s = 0;  // time the step waited for the DP gradient reduction
  nlohmann::json norms;  // per-layer norms (layer_norms) when due (norms_due), else null
};

// ZeRO-1: the parts of the flat buffer whose squares this rank adds to a global norm, so that
// over the DP group every element counts once: its part of every bucket, and on DP rank 0 only
// the bucket tails (fewer than dp floats each) that every rank owns and updates.
std::vector<FlatRange> zero_norm_ranges(const GradientSync& gs, const Communicator& dp) {
  std::vector<FlatRange> out;
  for (const FlatRange& b : gs.buckets())
    for (const FlatRange& r : {owned_part(b, dp.rank(), dp.size()),
                               dp.rank() == 0 ? bucket_tail(b, dp.size()) : FlatRange{0, 0}})
      if (r.size() > 0) out.push_back(r);
  return out;
}

// ZeRO-1's global gradient norm: each DP rank holds the mean gradient only in its parts, so the
// sum of squares is summed over the DP group (each element once) and then over the TP group (TP
// shards each once, replicated tensors from TP rank 0); clipping scales the parts.
float clip_zero_grad_norm(StepContext& c, float* grads, float max_norm) {
  Backend& be = c.model.backend();
  float sq = (float)grad_sum_squares(c.model.layout(), grads, zero_norm_ranges(c.grad_sync, c.dp),
                                     c.tp.rank() == 0, be);
  c.dp.all_reduce(&sq, 1, ReduceOp::Sum, "grad_norm.dp");
  if (c.tp.size() > 1) c.tp.all_reduce_sum(&sq, 1, "grad_norm");
  const float norm = std::sqrt(sq);
  if (max_norm > 0.f && norm > max_norm)
    for (const FlatRange& r : c.grad_sync.owned())
      be.scale(TensorView(grads + r.begin, {(int64_t)r.size()}, DType::F32, be.device()), max_norm / norm);
  return norm;
}

// ---- per-layer norms ----------------------------------------------------------------------------

// Per-layer norms are recorded every run.eval_every steps and after the last step.
bool norms_due(const Config& cfg, int done) {
  return done == cfg.train.max_steps || (cfg.run.eval_every > 0 && done % cfg.run.eval_every == 0);
}

// The group a parameter's norm is reported under: its transformer block ("layer_07", the index
// zero-padded to the widest), the token embedding (also the LM head when tied), the position
// embedding (gpt2), the final norm, the untied LM head.
std::string norm_group(const std::string& name, int n_layer) {
  if (name.rfind("h.", 0) == 0)
    return fmt::format("layer_{:0{}}", std::stoi(name.substr(2)),
                       std::max<size_t>(2, std::to_string(n_layer - 1).size()));
  if (name == "wte") return "embedding";
  if (name == "wpe") return "position_embedding";
  if (name.rfind("ln_f.", 0) == 0) return "final_norm";
  return name;  // lm_head
}

// The whole model's L2 norm of each group's parameters and gradients (the DP mean, before
// clipping): {"param": {GROUP: norm}, "grad": {GROUP: norm}}, the same numbers at any layout.
// Each element counts once: sums of squares over TP shards are summed over the TP group and
// replicated tensors come from TP rank 0 only; with ZeRO-1 (the mean gradient exists only in
// each rank's parts) every DP rank sums its zero_norm_ranges and the sums are summed over DP.
// A collective over TP (and DP with ZeRO): every rank calls it at the same steps.
nlohmann::json layer_norms(StepContext& c, float* grads) {
  const GPT& model = c.model;
  Backend& be = model.backend();
  const bool zero = c.grad_sync.zero() && c.dp.size() > 1;
  const std::vector<FlatRange> ranges =
      zero ? zero_norm_ranges(c.grad_sync, c.dp) : std::vector<FlatRange>{{0, model.layout().total()}};
  std::vector<std::string> groups;
  std::vector<double> sq;  // per group: the sum of squares of its parameters, then of its gradients
  for (const ParamTensor& t : model.layout().tensors()) {
    const std::string g = norm_group(t.name, model.config().n_layer);
    const size_t k = std::find(groups.begin(), groups.end(), g) - groups.begin();
    if (k == groups.size()) groups.push_back(g), sq.resize(2 * groups.size(), 0.0);
    if (t.shard_dim < 0 && c.tp.rank() != 0) continue;
    for (const FlatRange& r : ranges) {
      const size_t b = std::max(r.begin, t.offset), e = std::min(r.end, t.offset + t.numel);
      if (b >= e) continue;
      sq[2 * k] += be.sum_squares(model.param_buffer().view(b, e - b));
      sq[2 * k + 1] += be.sum_squares(TensorView(grads + b, {(int64_t)(e - b)}, DType::F32, be.device()));
    }
  }
  std::vector<float> sum(sq.begin(), sq.end());
  if (zero) c.dp.all_reduce(sum.data(), sum.size(), ReduceOp::Sum, "norms.dp");
  if (c.tp.size() > 1) c.tp.all_reduce_sum(sum.data(), sum.size(), "norms");
  nlohmann::json out = {{"param", nlohmann::json::object()}, {"grad", nlohmann::json::object()}};
  for (size_t k = 0; k < groups.size(); k++) {
    out["param"][groups[k]] = std::sqrt(sum[2 * k]);
    out["grad"][groups[k]] = std::sqrt(sum[2 * k + 1]);
  }
  return out;
}

// One optimizer step: train.global_batch sequences as micro-batches of forward and backward on
// this rank's slice (gradients accumulated in f32), the DP mean of the gradients and of the
// loss, global-norm clipping, then AdamW at the step's scheduled learning rate.
// With a loss mask the step's loss is the mean over the counted targets of the whole global
// batch (n of them, the same number on every rank): a micro-batch with n_k counted targets
// weighs n_k dp / n, so the DP mean of the gradients is d(sum of counted losses) / n.
StepResult train_step(int step, const Config& cfg, StepContext& c, int first_seq, StepBuffers& b) {
  const int G = cfg.train.global_batch, M = cfg.train.micro_batch, T = c.model.config().block_size;
  const int dp = c.dp.size(), accum = G / (M * dp);
  const bool masked = c.loader.split().has_loss_mask();
  const double counted = masked ? (double)c.loader.counted_targets((uint64_t)step, G) : 0.0;
  c.model.zero_grad();
  float* grads = c.model.grad_buffer().f32();  // on the backend's device
  float loss = 0;
  double loss_sum = 0;  // masked: sum of counted losses on this rank
  int32_t* range = b.kv_range.empty() ? nullptr : b.kv_range.data();
  for (int k = 0; k < accum; k++) {
    if (c.flight) c.flight->note_progress(fmt::format("step {} micro-batch {}/{}", step + 1, k + 1, accum));
    c.loader.batch((uint64_t)step, G, first_seq + k * M, M, b.inputs.data(), b.targets.data(), range);
    const auto n_k = (double)std::count_if(b.targets.begin(), b.targets.end(),
                                           [](int32_t t) { return t >= 0; });
    const float scale = !masked ? 1.f / (float)accum : counted > 0 ? (float)(n_k * dp / counted) : 0.f;
    if (k == accum - 1) {  // the last backward hands each finished bucket to the DP reduction
      c.grad_sync.begin(grads);
      c.model.set_grad_ready_hook([&](size_t offset) { c.grad_sync.ready(offset); });
    }
    struct Unhook {  // also when backward throws: the hook refers to this step
      GPT& m;
      ~Unhook() { m.set_grad_ready_hook(nullptr); }
    } unhook{c.model};
    const float mean = c.model.forward_backward(b.inputs.data(), b.targets.data(), M, T, scale, range);
    loss += mean;
    loss_sum += (double)mean * n_k;
  }
  c.grad_sync.finish();  // grads: the DP mean (with ZeRO-1, in this rank's parts)
  // The step's loss is the mean over the whole global batch: of this rank's micro-batch means,
  // or (masked) this rank's share of the counted losses, then summed over DP.
  loss = masked ? (counted > 0 ? (float)(loss_sum / counted) : 0.f) : loss / (float)(accum * dp);
  if (dp > 1) c.dp.all_reduce(&loss, 1, ReduceOp::Sum, "loss.mean");
  if (!std::isfinite(loss))
    CR_INPUT_ERROR("training diverged: loss is {} at step {} (lower train.lr = {}?)", loss,
                   step + 1, cfg.train.lr);
  nlohmann::json norms = norms_due(cfg, step + 1) ? layer_norms(c, grads) : nlohmann::json();
  const float norm = c.grad_sync.zero() ? clip_zero_grad_norm(c, grads, cfg.train.grad_clip)
                                        : clip_grad_norm(c.model.layout(), grads, cfg.train.grad_clip,
                                                         &c.tp, c.model.backend());
  const float lr =
      lr_at(step, cfg.train.max_steps, cfg.train.warmup_steps, cfg.train.lr, cfg.train.min_lr);
  c.opt.step(c.model.param_buffer().f32(), grads, lr);  // marks the bf16 weight copy stale
  c.grad_sync.gather_params(c.model.param_buffer().f32());  // ZeRO-1: every rank's parts
  return {loss, norm, lr, c.grad_sync.last_exposed_seconds(), std::move(norms)};
}

// Fresh weights from train.seed, or Hugging Face weights from train.init_from.
void init_model(GPT& model, const Config& cfg) {
  model.set_recompute(cfg.train.recompute);
  if (cfg.train.init_from.empty())
    model.init((uint64_t)cfg.train.seed);
  else
    model.load_full(load_hf_init(model.config(), cfg.train.init_from).data());
}

// The final evaluation's windows: the first ceil(tokens / T) of the val split, or 0 (the whole
// split) when run.final_eval_tokens is 0 or covers it.
size_t final_eval_windows(int64_t tokens, uint64_t split_tokens, int T) {
  return tokens > 0 && (uint64_t)tokens < split_tokens ? (size_t)((tokens + T - 1) / T) : 0;
}

// After an agreed stop (signal, or train.stop_after_step) at `done` steps, with that step's
// checkpoint attempted: the exit status. 0 when the run can resume from a checkpoint of `done`.
int stop_status(bool checkpointing, int last_saved, int done, int sig, const std::string& why) {
  if (!checkpointing) {
    log::warn("stopped after step {} ({}); checkpoint.dir is not set, so nothing was saved", done, why);
    return sig > 0 ? 128 + sig : 0;
  }
  if (last_saved != done)
    CR_INPUT_ERROR("stopped after step {} ({}) but its checkpoint could not be saved (see the "
                   "warnings); the latest is step {}", done, why, last_saved);
  log::info("stopped after step {} ({}); resume with the same command", done, why);
  return 0;
}

// parallel.* as the gradient reduction's options. Overlap needs MPI_THREAD_MULTIPLE; an MPI
// without it runs the same reductions after backward (same results), and says so.
// drop: the tests' negative control (CR_TEST_DROP_COLLECTIVE): a "grad.bucket K/" prefix skips
// that bucket's reduction.
GradientSync::Options gradient_sync_options(const Config& cfg, const ParallelContext& ctx,
                                            const char* drop) {
  GradientSync::Options o;
  o.bucket_bytes = (size_t)(cfg.parallel.bucket_mb * 1024 * 1024);
  o.zero = cfg.parallel.zero;
  o.overlap = cfg.parallel.overlap && ctx.grid.dp() > 1;
  const bool needs_thread = !ctx.dp->device_memory();  // NCCL overlaps on its stream instead
  if (drop && std::string(drop).rfind("grad.", 0) == 0) o.drop_label = drop;
  if (o.overlap && needs_thread && !ctx.thread_multiple) {
    if (ctx.grid.rank() == 0)
      log::warn("parallel.overlap: this MPI does not provide MPI_THREAD_MULTIPLE, so the gradient "
                "reduction runs after backward instead (the results are the same)");
    o.overlap = false;
  }
  return o;
}

// Why the run stops after `done` steps, given the agreed signal: the signal, or
// train.stop_after_step; empty to go on.
std::string stop_reason(const Config& cfg, int done, int sig) {
  if (sig > 0) return fmt::format("signal {}", strsignal(sig));
  if (cfg.train.stop_after_step > 0 && done >= cfg.train.stop_after_step && done < cfg.train.max_steps)
    return fmt::format("train.stop_after_step = {}", cfg.train.stop_after_step);
  return "";
}

// ---- what a run reports -------------------------------------------------------------------------

void log_run_start(const Config& cfg, const ModelConfig& mc, const RankGrid& grid,
                   size_t num_params, const TokenSplit& train, const TokenSplit& val,
                   const BatchLoader& loader) {
  const int T = mc.block_size, G = cfg.train.global_batch, M = cfg.train.micro_batch;
  const int accum = G / (M * grid.dp());
  log::info("layout: {} ranks = tensor {} x data {}; {} micro-batches of {} per rank per step",
            grid.world(), grid.tp(), grid.dp(), accum, M);
  log::info("model: {} (padded {}): {} parameters", describe(mc), mc.padded_vocab(),
            human_count((double)num_params));
  log::info("data: {} train tokens ({} windows of {}), {} val tokens; {} tokens/step in {} micro-batches of {} x {}",
            human_count((double)train.tokens()), loader.num_windows(), T,
            human_count((double)val.tokens()), G * T, accum, M, T);
  log_memory_plan(cfg, mc, grid.tp(), grid.dp());
}

// After the first step of a multi-rank run: the bytes each rank moved, against the expectation.
// ZeRO-1 moves the gradients once (reduce-scatter) and the parameters once (all-gather).
void log_communication(size_t num_params, int dp, int zero, uint64_t dp_bytes, uint64_t tp_bytes) {
  const int passes = zero ? 2 : 1;
  log::info("communication per rank per step: DP {} {:.2f} MB (expected {}: {}{} local "
            "parameters x 4 B), TP collectives {:.2f} MB",
            zero ? "reduce-scatter + all-gather" : "all-reduce", dp_bytes / 1e6,
            dp > 1 ? fmt::format("{:.2f} MB", passes * num_params * 4 / 1e6) : "none at dp 1",
            zero ? "2 x " : "", num_params, tp_bytes / 1e6);
}

// Model FLOPs per trained token, forward and backward: 6 per weight that takes part in a GEMM
// (the LM head included) plus the attention scores and their weighted sum, 12 L T C (all T keys
// counted, as PaLM's MFU, llm.c and bench/gpu/models.py count them).
double model_flops_per_token(const ModelConfig& m) {
  const double C = m.n_embd, hs = m.head_size(), H = m.n_head, Hkv = m.kv_heads();
  const double attn = C * (H + 2 * Hkv) * hs + H * hs * C;  // q, k, v and the output projection
  const double mlp = (m.llama() ? 3 : 2) * C * m.ffn_hidden_size();  // SwiGLU 3 GEMMs, GELU 2
  return 6 * (m.n_layer * (attn + mlp) + (double)m.vocab_size * C) + 12.0 * m.n_layer * m.block_size * C;
}

// A finished step: its metrics line (and the per-layer norms when due), a progress line every
// run.log_every steps, and the TensorBoard events flushed then and at each checkpoint.
// model_tflops: the job's model FLOP/s / 1e12; mfu: that over world x run.peak_tflops.
void report_step(const Config& cfg, const ModelConfig& mc, int world, int done, const StepResult& r,
                 double secs, double sec_per_step, MetricsLog& metrics, Progress& progress) {
  const double tok_per_s = (double)cfg.train.global_batch * mc.block_size / secs;
  nlohmann::json line = {{"type", "train"}, {"step", done}, {"loss", r.loss}, {"lr", r.lr},
                         {"grad_norm", r.norm}, {"tokens_per_s", tok_per_s}, {"ms_per_step", secs * 1e3},
                         {"comm_exposed_ms", r.comm_exposed_s * 1e3}};
  line["model_tflops"] = model_flops_per_token(mc) * tok_per_s / 1e12;
  if (cfg.run.peak_tflops > 0) line["mfu"] = line["model_tflops"].get<double>() / (world * cfg.run.peak_tflops);
  metrics.write(line);
  if (!r.norms.is_null()) {
    nlohmann::json norms = r.norms;
    norms["type"] = "norms", norms["step"] = done;
    metrics.write(norms);
  }
  const bool log_step = done % cfg.run.log_every == 0 || done == cfg.train.max_steps || done == 1;
  if (log_step || (cfg.checkpoint.every > 0 && done % cfg.checkpoint.every == 0)) metrics.flush();
  if (log_step) {
    progress.line(fmt::format(
        "step {:>{}}/{} | loss {:.4f} | lr {:.2e} | norm {:.3f} | {} tok/s | {:.1f} ms | ETA {}",
        done, (int)std::to_string(cfg.train.max_steps).size(), cfg.train.max_steps, r.loss, r.lr,
        r.norm, human_count(tok_per_s), secs * 1e3,
        format_duration(sec_per_step * (cfg.train.max_steps - done))));
  }
  progress.update(done, sec_per_step);
}

std::string checkpoint_line(const Config& cfg, int done, const Checkpointer::Timing& st) {
  return fmt::format(
      "checkpoint: step {} saved to {}/{}: {:.1f} MB in {:.2f} s ({:.0f} MB/s; CRC32C {:.0f}% of "
      "rank 0's time)",
      done, cfg.checkpoint.dir, step_dir_name(done), st.bytes / 1e6, st.seconds,
      st.bytes / 1e6 / std::max(st.seconds, 1e-9), 100.0 * st.crc_seconds / std::max(st.seconds, 1e-9));
}

// ---- text samples ----------------------------------------------------------------------------

// The text sample of each evaluation (run.tensorboard, with a tokenizer that has an end-of-text
// token): kSampleTokens tokens from the end-of-text token at `chainrule sample`'s defaults
// (temperature, top-k, seed), as `chainrule sample` generates them, so the sample of the final
// evaluation is what `chainrule sample RUN_DIR --max-new-tokens 64` prints.
constexpr int kSampleTokens = 64;
struct TextSampler {
  const Tokenizer* tok = nullptr;  // null: no samples
  bool gathers = false;            // a TP rank of rank 0's group: takes part in the gather
  bool generates = false;          // rank 0
};

TextSampler text_sampler(const Config& cfg, const std::optional<DatasetInfo>& info, const RankGrid& grid) {
  if (!cfg.run.tensorboard) return {};
  if (!info || !info->tokenizer || info->tokenizer->eot_id() < 0) {
    if (grid.rank() == 0)
      log::info("run.tensorboard: {} has no tokenizer with an end-of-text token, so no text samples",
                cfg.data.dir);
    return {};
  }
  return {&*info->tokenizer, grid.dp_rank() == 0, grid.rank() == 0};
}

// Generation needs the whole model (tp 1) in f32 on the CPU: gathered over the TP group of rank 0
// (GPT::gather_full, a collective of that group only; the other DP groups hold the same weights
// and skip it), then generated by rank 0 alone. Empty on every other rank.
std::optional<std::string> generate_sample(const TextSampler& s, const GPT& model) {
  if (!s.tok || !s.gathers) return std::nullopt;
  const std::vector<float> full = model.gather_full();
  if (!s.generates) return std::nullopt;
  GPT whole(model.config());
  whole.load_full(full.data());
  const SampleOptions defaults;
  const int T = model.config().block_size, V = std::min(s.tok->vocab_size(), model.config().vocab_size);
  Generator gen(whole);
  Rng rng(defaults.seed);
  std::vector<int32_t> context{s.tok->eot_id()};
  const float* logits = gen.prefill(context.data(), 1, false);
  std::string text;
  for (int i = 0; i < kSampleTokens; i++) {
    const int32_t next = sample_token(logits, V, defaults.temperature, defaults.top_k, rng);
    text += s.tok->decode_one(next);
    context.push_back(next);
    if (i + 1 == kSampleTokens) break;
    if (gen.position() == T) {  // context full: re-read its last half, as `sample` does
      gen.reset();
      for (size_t k = context.size() - T / 2; k + 1 < context.size(); k++) gen.step(context[k]);
    }
    logits = gen.step(next);
  }
  return text;
}

// A finished evaluation's metrics line, and (run.tensorboard) the model's text sample, both on
// disk at once.
void record_eval(MetricsLog& metrics, int step, const EvalResult& r, bool full_split,
                 const TextSampler& sampler, const GPT& model) {
  nlohmann::json j = r.to_json();
  j["type"] = "eval";
  j["step"] = step;
  j["full_split"] = full_split;
  metrics.write(j);
  if (auto text = generate_sample(sampler, model))
    metrics.write({{"type", "sample"}, {"step", step}, {"text", *text}});
  metrics.flush();  // a resumed run evaluates its first step again: both records must exist
}

// SIGTERM (Slurm, kill) and SIGUSR1 ask every rank to stop after the current step.
void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGUSR1, &sa, nullptr);
}

// The whole model gathered over the TP group (a collective) and exported by rank 0 as Hugging
// Face safetensors + config.json.
void export_final_model(const GPT& model, const std::string& dir, bool rank0) {
  const std::vector<float> full = model.gather_full();
  if (!rank0) return;
  GPT whole(model.config());
  whole.load_full(full.data());
  export_hf_model(whole, dir);
}

}  // namespace

int run_train(const Config& cfg, ParallelContext& ctx) {
  // ---- ranks and groups --------------------------------------------------------------------
  validate_layout(cfg, ctx.world->size());  // on every rank, before any collective
  check_output_dirs(cfg);  // run.dir, checkpoint.dir writable: saves must not fail at the end
  Backend& backend = select_backend(cfg, ctx);  // where the model, gradients and AdamW live
  build_groups(ctx, cfg, backend);  // NCCL groups (CUDA, one GPU per rank) follow its stream
  const FlightSession flight =  // collectives recorded, stalls watched (flight_recorder.h)
      attach_flight_recorder(*ctx.world, *ctx.tp, *ctx.dp, cfg.run.dir,
                             cfg.parallel.flight_records, TestFaultHooks::from_env());
  if (auto peers = exchange_peers(ctx)) flight.recorder->set_peers(peers);  // + the rank map log
  const RankGrid& grid = ctx.grid;
  const bool rank0 = grid.rank() == 0;
  const char* drop = std::getenv("CR_TEST_DROP_COLLECTIVE");  // negative control only
  CommTensorParallel tp_comm(*ctx.tp, drop ? drop : "");
  if (drop) log::warn("test fault: dropping the tensor-parallel collective '{}'", drop);

  // ---- data --------------------------------------------------------------------------------
  const auto info = read_dataset_info(cfg.data.dir);
  const SplitPatterns shard_globs{cfg.data.train_files, cfg.data.val_files};
  TokenSplit train_split(cfg.data.dir, "train", shard_globs);
  TokenSplit val_split(cfg.data.dir, "val", shard_globs);
  const ModelConfig mc = model_config(cfg, info);
  for (const TokenSplit* split : {&train_split, &val_split}) split->check_vocab(mc.vocab_size);
  const int T = mc.block_size, G = cfg.train.global_batch, M = cfg.train.micro_batch;
  const int dp = grid.dp(), first_seq = grid.dp_rank() * (G / dp);  // this rank's slice of a batch
  const AttentionMaskSpec mask_spec = attention_mask_spec(cfg, info, train_split);
  BatchLoader train_loader(train_split, T, (uint64_t)cfg.train.seed, /*shuffle=*/true, mask_spec);
  const double val_bytes_per_token = info ? info->val_bytes_per_token(val_split.has_loss_mask()) : 0.0;

  // ---- model and optimizer -----------------------------------------------------------------
  check_memory_plan(cfg, mc, grid.tp(), backend.memory_info(), grid.dp());
  GPT model(mc, &tp_comm, &backend, train_dtype(cfg));
  init_model(model, cfg);
  GradientSync grad_sync(*ctx.dp, model.grad_ready_offsets(), model.num_params(),
                         gradient_sync_options(cfg, ctx, drop), backend);
  AdamW opt(model.layout(), {cfg.train.beta1, cfg.train.beta2, cfg.train.eps, cfg.train.weight_decay},
            backend, grad_sync.owned());
  if (rank0 && grid.dp() > 1) log::info("{}", grad_sync.describe());

  // ---- resume from the latest checkpoint ---------------------------------------------------
  Progress progress(cfg.train.max_steps);
  const bool checkpointing = !cfg.checkpoint.dir.empty();
  Checkpointer ckpt(cfg.checkpoint.dir, cfg.checkpoint.keep_last, *ctx.world);
  CheckpointState ckpt_state(model, opt);
  const auto ckpt_tensors = ckpt_state.tensors();
  const int start_step = checkpointing ? resume(ckpt, ckpt_tensors, mc, opt, cfg) : 0;
  if (start_step > 0) ckpt_state.to_device();
  auto save_checkpoint = [&](int done, float lr) {
    ckpt_state.to_host();
    proto::Manifest meta = checkpoint_meta(cfg, mc, done, lr, dp, opt.steps_taken(), ctx);
    const bool ok = ckpt.save(ckpt_tensors, std::move(meta), grid.tp(), dp);
    if (ok) progress.line(checkpoint_line(cfg, done, ckpt.last_save()));
    return ok;
  };

  // ---- run directory -----------------------------------------------------------------------
  if (rank0) write_run_dir(cfg, mc, info);
  MetricsLog metrics(cfg, rank0, start_step);
  const TextSampler sampler = text_sampler(cfg, info, grid);

  log_run_start(cfg, mc, grid, model.num_params(), train_split, val_split, train_loader);
  // With the run summary on stdout (rank 0), not stderr: allowed settings, not failures.
  for (const std::string& w : config_warnings(cfg)) log::info("warning: {}", w);

  // Periodic evaluations score eval_batches micro-batches; the final one run.final_eval_tokens
  // (a prefix of full windows), or the whole split. A stop signal caught meanwhile, agreed by all
  // ranks, abandons it (r.stopped) with the signal in eval_stop_signal.
  const size_t final_windows = final_eval_windows(cfg.run.final_eval_tokens, val_split.tokens(), T);
  int eval_stop_signal = 0;
  auto validate = [&](int step, bool is_final) {
    const auto t0 = Clock::now();
    const size_t max_windows = is_final ? final_windows : (size_t)cfg.run.eval_batches * M;
    const EvalResult r = evaluate_split(model, val_split, T, M, max_windows, val_bytes_per_token, [&] {
      eval_stop_signal = agreed_stop_signal(*ctx.world);
      return eval_stop_signal > 0;
    }, mask_spec);
    if (!r.stopped) record_eval(metrics, step, r, max_windows == 0, sampler, model);
    return std::make_pair(r, seconds_since(t0));
  };

  // ---- the training loop -------------------------------------------------------------------
  StepBuffers buffers(M, T, mask_spec);
  StepContext sc{model, opt, grad_sync, *ctx.dp, tp_comm, train_loader, flight.recorder.get()};
  const auto run_start = Clock::now();
  double train_secs = 0;
  install_stop_handlers();
  int last_saved = start_step;
  auto stopped_run = [&](int done, int sig, const std::string& why) {
    return stop_status(checkpointing, last_saved, done, sig, why);
  };
  for (int step = start_step; step < cfg.train.max_steps; step++) {
    if (cfg.run.eval_every > 0 && step % cfg.run.eval_every == 0) {
      auto [r, secs] = validate(step, false);
      if (r.stopped) {  // abandoned: save what the steps so far trained, if not saved yet
        if (checkpointing && last_saved != step &&
            save_checkpoint(step, lr_at(step - 1, cfg.train.max_steps, cfg.train.warmup_steps,
                                        cfg.train.lr, cfg.train.min_lr)))
          last_saved = step;
        return stopped_run(step, eval_stop_signal,
                           fmt::format("signal {}, during the evaluation", strsignal(eval_stop_signal)));
      }
      progress.line(eval_line(step, r, secs));
    }
    const auto t0 = Clock::now();
    const uint64_t tp_bytes0 = ctx.tp->bytes_issued(), dp_bytes0 = ctx.dp->bytes_issued();
    const StepResult result = train_step(step, cfg, sc, first_seq, buffers);
    const double secs = seconds_since(t0);
    train_secs += secs;

    const int done = step + 1;
    maybe_kill_at_step(done, grid.rank());
    if (done == start_step + 1 && grid.world() > 1)
      log_communication(model.num_params(), dp, grad_sync.zero(), ctx.dp->bytes_issued() - dp_bytes0,
                        ctx.tp->bytes_issued() - tp_bytes0);
    report_step(cfg, mc, grid.world(), done, result, secs, train_secs / (done - start_step), metrics,
                progress);

    // ---- checkpoint, and stop on a signal or at train.stop_after_step -----------------------
    const int sig = agreed_stop_signal(*ctx.world);  // every rank stops together
    const std::string stop = stop_reason(cfg, done, sig);
    const bool due = (cfg.checkpoint.every > 0 && done % cfg.checkpoint.every == 0) ||
                     done == cfg.train.max_steps || !stop.empty();
    if (checkpointing && due && save_checkpoint(done, result.lr)) last_saved = done;
    if (!stop.empty()) return stopped_run(done, sig, stop);
  }
  if (checkpointing && last_saved < cfg.train.max_steps)
    log::warn("the final checkpoint could not be saved; the latest is step {}", last_saved);

  // ---- final evaluation and export ---------------------------------------------------------
  auto [r, secs] = validate(cfg.train.max_steps, true);
  if (!r.stopped) progress.line(eval_line(cfg.train.max_steps, r, secs));
  export_final_model(model, cfg.run.dir, rank0);
  log::info("trained {} steps in {}; model saved to {}/model.safetensors", cfg.train.max_steps,
            format_duration(seconds_since(run_start)), cfg.run.dir);
  if (r.stopped) {  // training is complete and exported; only the final evaluation is missing
    const std::string why = fmt::format("signal {}, during the final evaluation, which did not finish",
                                        strsignal(eval_stop_signal));
    if (!checkpointing) {
      log::warn("stopped after step {} ({}); `chainrule eval {}` evaluates the exported model",
                cfg.train.max_steps, why, cfg.run.dir);
      return 128 + eval_stop_signal;
    }
    return stopped_run(cfg.train.max_steps, eval_stop_signal, why);
  }
  return 0;
}

}  // namespace cr
