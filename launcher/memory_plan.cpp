// The memory plan (memory_plan.h): one computation for the start-up log and the pre-flight check.
#include "launcher/memory_plan.h"

#include "core/common/log.h"

#include <string>

namespace cr {

DType train_dtype(const Config& cfg) { return cfg.train.dtype == "bf16" ? DType::BF16 : DType::F32; }

static bool zero_sharded(const Config& cfg, int dp) { return cfg.parallel.zero == 1 && dp > 1; }

MemoryPlan memory_plan(const Config& cfg, const ModelConfig& mc, int tp, int dp) {
  const double n = (double)ParamLayout(mc, 0, tp).total();
  const DType dtype = train_dtype(cfg);
  MemoryPlan p;
  p.params = n * 4, p.grads = n * 4, p.optim = n * 8 / (zero_sharded(cfg, dp) ? dp : 1);
  p.compute_copy = dtype == DType::BF16 ? n * 2 : 0.0;
  p.acts = GPT::activation_plan(mc, cfg.train.micro_batch, mc.block_size, tp, cfg.train.recompute,
                                dtype);
  return p;
}

void log_memory_plan(const Config& cfg, const ModelConfig& mc, int tp, int dp) {
  const MemoryPlan p = memory_plan(cfg, mc, tp, dp);
  const ActivationPlan& a = p.acts;
  const std::string zero =
      zero_sharded(cfg, dp) ? fmt::format(" (ZeRO-1: 1/{} of {:.1f} MB)", dp, p.optim * dp / 1e6) : "";
  log::info("memory per rank: parameters {:.1f} MB + gradients {:.1f} MB + AdamW {:.1f} MB{}{}; "
            "activations ({}) {:.1f} MB = {} layers x {:.1f} MB + classifier chunk {:.1f} MB + "
            "other {:.1f} MB (micro-batch {} x {}, recompute {})",
            p.params / 1e6, p.grads / 1e6, p.optim / 1e6, zero,
            p.compute_copy > 0 ? fmt::format(" + bf16 weights {:.1f} MB", p.compute_copy / 1e6) : "",
            cfg.train.dtype, a.bytes() / 1e6, mc.n_layer, a.per_layer / 1e6, a.classifier / 1e6,
            a.other / 1e6, cfg.train.micro_batch, mc.block_size,
            cfg.train.recompute ? "on: MLP activation and norm outputs rebuilt in backward" : "off");
}

// Before anything is allocated on the device, so a run that cannot fit stops with one line
// instead of an out-of-memory error in the middle of step 1.
void check_memory_plan(const Config& cfg, const ModelConfig& mc, int tp, Backend::MemoryInfo mem,
                       int dp) {
  if (mem.total_bytes == 0) return;  // host memory: not known, not checked
  const MemoryPlan p = memory_plan(cfg, mc, tp, dp);
  if (p.total() <= (double)mem.free_bytes) return;
  CR_INPUT_ERROR("{}: memory plan needs {:.2f} GB per rank (weights, gradients and AdamW {:.2f} GB, "
                 "activations {:.2f} GB, workspace {:.2f} GB) but the GPU has {:.2f} GB free of "
                 "{:.2f} GB; lower train.micro_batch = {}{}{}{}, or raise parallel.tensor = {}",
                 cfg.source, p.total() / 1e9,
                 (p.params + p.grads + p.optim + p.compute_copy) / 1e9, p.acts.bytes() / 1e9,
                 p.workspace / 1e9, mem.free_bytes / 1e9, mem.total_bytes / 1e9,
                 cfg.train.micro_batch, cfg.train.recompute ? "" : ", set train.recompute: true",
                 cfg.train.dtype == "bf16" ? "" : ", use train.dtype: bf16",
                 dp > 1 && cfg.parallel.zero == 0 ? ", set parallel.zero: 1" : "", cfg.parallel.tensor);
}

}  // namespace cr
