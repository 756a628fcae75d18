// `chainrule train`: the one file that wires every stage of a training step, in order.
//
//   ranks and groups (RankGrid, TP and DP communicators)
//   -> data (this DP rank's slice of the global batch) -> model shard (this TP rank's slice of
//   every layer) forward/backward over micro-batches, TP collectives inside
//   -> DP gradient all-reduce (bucketed, averaged once) -> global gradient norm + clipping
//   -> AdamW on the shard at the scheduled learning rate
//   -> metrics and progress (rank 0) -> periodic validation -> final evaluation and export.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/common/error.h"
#include "core/common/log.h"
#include "core/data/loader.h"
#include "core/model/gpt.h"
#include "core/model/hf_gpt2.h"
#include "core/optim/adamw.h"
#include "launcher/commands.h"
#include "launcher/distributed.h"
#include "launcher/evaluate.h"
#include "launcher/progress.h"
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

// Appends one JSON object per line; flushed so a crashed run keeps its history.
// Only rank 0 writes; the others hold a closed stream.
class MetricsLog {
 public:
  MetricsLog(const fs::path& path, bool writer) {
    if (!writer) return;
    out_.open(path, std::ios::trunc);
    if (!out_) CR_INPUT_ERROR("{}: cannot create metrics file", path.string());
  }
  void write(const nlohmann::json& j) {
    if (out_.is_open()) out_ << j.dump() << "\n" << std::flush;
  }

 private:
  std::ofstream out_;
};

}  // namespace

int run_train(const Config& cfg, ParallelContext& ctx) {
  // ---- ranks and groups --------------------------------------------------------------------
  validate_layout(cfg, ctx.world->size());  // on every rank, before any collective
  build_groups(ctx, cfg);
  const RankGrid& grid = ctx.grid;
  const bool rank0 = grid.rank() == 0;
  const char* drop = std::getenv("CR_TEST_DROP_COLLECTIVE");  // negative control only
  CommTensorParallel tp_comm(*ctx.tp, drop ? drop : "");
  GradientSync grad_sync(*ctx.dp, (size_t)(cfg.parallel.bucket_mb * 1024 * 1024));
  if (drop) log::warn("test fault: dropping the tensor-parallel collective '{}'", drop);

  // ---- data --------------------------------------------------------------------------------
  const auto info = read_dataset_info(cfg.data.dir);
  TokenSplit train_split(cfg.data.dir, "train");
  TokenSplit val_split(cfg.data.dir, "val");
  ModelConfig mc = cfg.model;
  if (mc.vocab_size == 0) {
    if (!info || !info->tokenizer)
      CR_INPUT_ERROR("{}: model.vocab_size is 0 (take it from the data) but {} has no {} with a "
                     "tokenizer; set model.vocab_size",
                     cfg.source, cfg.data.dir, kDatasetInfoFile);
    mc.vocab_size = info->tokenizer->vocab_size();
  }
  train_split.check_vocab(mc.vocab_size);
  val_split.check_vocab(mc.vocab_size);
  const int T = mc.block_size;
  const int G = cfg.train.global_batch, M = cfg.train.micro_batch;
  const int dp = grid.dp(), accum = G / (M * dp);
  const int first_seq = grid.dp_rank() * (G / dp);  // this DP rank's slice of every global batch
  BatchLoader train_loader(train_split, T, (uint64_t)cfg.train.seed, /*shuffle=*/true);
  const double val_bytes_per_token =
      info && info->val_bytes > 0 ? (double)info->val_bytes / (double)info->val_tokens : 0.0;

  // ---- model and optimizer -----------------------------------------------------------------
  GPT model(mc, &tp_comm);
  if (cfg.train.init_from.empty()) {
    model.init((uint64_t)cfg.train.seed);
  } else {
    std::vector<float> full(ParamLayout(mc).total());
    load_hf_safetensors(mc, full.data(), cfg.train.init_from);
    model.load_full(full.data());
  }
  AdamW opt(model.layout(), {cfg.train.beta1, cfg.train.beta2, cfg.train.eps, cfg.train.weight_decay});

  // ---- run directory -----------------------------------------------------------------------
  std::error_code ec;
  if (rank0) fs::create_directories(cfg.run.dir, ec);
  if (rank0 && (ec || !fs::is_directory(cfg.run.dir)))
    CR_INPUT_ERROR("run.dir '{}': cannot create the directory: {}", cfg.run.dir,
                   ec ? ec.message() : "a file is in the way");
  if (rank0) std::ofstream(fs::path(cfg.run.dir) / "config.yaml") << [&] {
    Config resolved = cfg;  // what was run, exactly: derived vocab, data dir usable from anywhere
    resolved.model.vocab_size = mc.vocab_size;
    resolved.data.dir = fs::absolute(cfg.data.dir).lexically_normal().string();
    return config_to_yaml(resolved);
  }();
  if (rank0 && info && info->tokenizer)
    std::ofstream(fs::path(cfg.run.dir) / kRunTokenizerFile) << info->tokenizer->to_json().dump() << "\n";
  MetricsLog metrics(fs::path(cfg.run.dir) / "metrics.jsonl", rank0);

  log::info("layout: {} ranks = tensor {} x data {}; {} micro-batches of {} per rank per step",
            grid.world(), grid.tp(), dp, accum, M);
  log::info("model: {} layers, {} heads, {} wide, context {}, vocabulary {} (padded {}): {} parameters",
            mc.n_layer, mc.n_head, mc.n_embd, mc.block_size, mc.vocab_size, mc.padded_vocab(),
            human_count((double)model.num_params()));
  log::info("data: {} train tokens ({} windows of {}), {} val tokens; {} tokens/step in {} micro-batches of {} x {}",
            human_count((double)train_split.tokens()), train_loader.num_windows(), T,
            human_count((double)val_split.tokens()), G * T, accum, M, T);
  log::info("memory per rank: parameters + gradients + AdamW {:.1f} MB, activations {:.1f} MB (tp 1)",
            4.0 * model.num_params() * 4 / 1e6, GPT::activation_bytes(mc, M, T) / 1e6);

  auto validate = [&](int step, bool full) {
    const auto t0 = Clock::now();
    const size_t max_windows = full ? 0 : (size_t)cfg.run.eval_batches * M;
    const EvalResult r = evaluate_split(model, val_split, T, M, max_windows, val_bytes_per_token);
    nlohmann::json j = r.to_json();
    j["type"] = "eval";
    j["step"] = step;
    j["full_split"] = full;
    metrics.write(j);
    return std::make_pair(r, seconds_since(t0));
  };
  auto eval_line = [&](int step, const EvalResult& r, double secs) {
    const std::string bpb = r.bytes_per_token > 0 ? fmt::format("{:.4f}", r.bits_per_byte()) : "n/a";
    return fmt::format("eval step {} | val loss {:.4f} nats | {:.4f} bits/token | {} bits/byte | "
                       "ppl {:.2f} | {} tokens in {}",
                       step, r.loss, r.bits_per_token(), bpb, r.perplexity(),
                       human_count((double)r.tokens), format_duration(secs));
  };

  // ---- the training loop -------------------------------------------------------------------
  Progress progress(cfg.train.max_steps);
  std::vector<int32_t> inputs((size_t)M * T), targets((size_t)M * T);
  const auto run_start = Clock::now();
  double train_secs = 0;
  for (int step = 0; step < cfg.train.max_steps; step++) {
    if (cfg.run.eval_every > 0 && step % cfg.run.eval_every == 0) {
      auto [r, secs] = validate(step, false);
      progress.line(eval_line(step, r, secs));
    }
    const auto t0 = Clock::now();
    const uint64_t tp_bytes0 = ctx.tp->bytes_issued(), dp_bytes0 = ctx.dp->bytes_issued();
    model.zero_grad();
    float loss = 0;
    for (int k = 0; k < accum; k++) {
      train_loader.batch((uint64_t)step, G, first_seq + k * M, M, inputs.data(), targets.data());
      loss += model.forward(inputs.data(), targets.data(), M, T);
      model.backward(1.f / (float)accum);
    }
    loss /= accum;
    grad_sync.all_reduce_mean(model.grads(), model.num_params());
    if (dp > 1) {  // the step's loss is the mean over the whole global batch
      ctx.dp->all_reduce(&loss, 1);
      loss /= dp;
    }
    if (!std::isfinite(loss))
      CR_INPUT_ERROR("training diverged: loss is {} at step {} (lower train.lr = {}?)", loss,
                     step + 1, cfg.train.lr);
    const float norm = clip_grad_norm(model.layout(), model.grads(), cfg.train.grad_clip, &tp_comm);
    const float lr = lr_at(step, cfg.train.max_steps, cfg.train.warmup_steps, cfg.train.lr,
                           cfg.train.min_lr);
    opt.step(model.params(), model.grads(), lr);
    const double secs = seconds_since(t0);
    train_secs += secs;

    const int done = step + 1;
    if (done == 1 && grid.world() > 1)
      log::info("communication per rank per step: DP all-reduce {:.2f} MB (expected {}: {} local "
                "parameters x 4 B), TP collectives {:.2f} MB",
                (ctx.dp->bytes_issued() - dp_bytes0) / 1e6,
                dp > 1 ? fmt::format("{:.2f} MB", model.num_params() * 4 / 1e6) : "none at dp 1",
                model.num_params(), (ctx.tp->bytes_issued() - tp_bytes0) / 1e6);
    const double tok_per_s = (double)G * T / secs;
    const double sec_per_step = train_secs / done;
    metrics.write({{"type", "train"}, {"step", done}, {"loss", loss}, {"lr", lr},
                   {"grad_norm", norm}, {"tokens_per_s", tok_per_s}, {"ms_per_step", secs * 1e3}});
    if (done % cfg.run.log_every == 0 || done == cfg.train.max_steps || done == 1) {
      progress.line(fmt::format(
          "step {:>{}}/{} | loss {:.4f} | lr {:.2e} | norm {:.3f} | {} tok/s | {:.1f} ms | ETA {}",
          done, (int)std::to_string(cfg.train.max_steps).size(), cfg.train.max_steps, loss, lr,
          norm, human_count(tok_per_s), secs * 1e3,
          format_duration(sec_per_step * (cfg.train.max_steps - done))));
    }
    progress.update(done, sec_per_step);
  }

  // ---- final evaluation and export ---------------------------------------------------------
  auto [r, secs] = validate(cfg.train.max_steps, true);
  progress.line(eval_line(cfg.train.max_steps, r, secs));
  const std::vector<float> full = model.gather_full();  // collective over the TP group
  if (rank0) {
    GPT whole(mc);
    whole.load_full(full.data());
    export_hf_model(whole, cfg.run.dir);
  }
  log::info("trained {} steps in {}; model saved to {}/model.safetensors", cfg.train.max_steps,
            format_duration(seconds_since(run_start)), cfg.run.dir);
  return 0;
}

}  // namespace cr
