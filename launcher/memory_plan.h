// The memory plan of a training rank: what parameters, gradients, AdamW, the bf16 weight copy,
// one micro-batch's activations and library workspaces take on its device, logged at start and,
// on a GPU, checked against free device memory before anything is allocated.
#pragma once

#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/gpt.h"
#include "launcher/config.h"

namespace cr {

// train.dtype as a compute dtype (f32 or bf16).
DType train_dtype(const Config& cfg);

// Bytes per rank.
struct MemoryPlan {
  // Headroom for cuBLASLt's and cuDNN's workspaces and the caching allocator's rounding.
  static constexpr double kWorkspace = 256.0 * (1 << 20);
  double params = 0, grads = 0, optim = 0;  // f32 masters, f32 gradients, AdamW m and v
  double compute_copy = 0;                  // the bf16 weight copy (train.dtype bf16)
  double workspace = kWorkspace;
  ActivationPlan acts;
  double total() const { return params + grads + optim + compute_copy + acts.bytes() + workspace; }
};
// dp: the data-parallel degree (parallel.zero 1 keeps 1/dp of AdamW's state per rank).
MemoryPlan memory_plan(const Config& cfg, const ModelConfig& mc, int tp, int dp = 1);
void log_memory_plan(const Config& cfg, const ModelConfig& mc, int tp, int dp = 1);
// Throws InputError, one line: needed, free and total, and what to lower, when the plan exceeds
// mem.free_bytes. mem {0, 0} (host memory) is not checked.
void check_memory_plan(const Config& cfg, const ModelConfig& mc, int tp, Backend::MemoryInfo mem,
                       int dp = 1);

}  // namespace cr
