// The run configuration: YAML (configs/*.yaml) plus --set KEY=VALUE overrides, parsed into typed
// structs. Every key is declared once in a schema table (config.cpp) with its type, range and
// meaning; anything else is an error naming the key, the value, what was expected, and where
// it came from (file:line or --set).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/model/config.h"

namespace cr {

struct TrainSettings {
  int global_batch = 8;  // sequences per optimizer step, across all data-parallel ranks
  int micro_batch = 8;   // sequences per forward/backward; accumulation = global / (micro * dp)
  int max_steps = 100;
  float lr = 1e-3f;
  float min_lr = 1e-4f;
  int warmup_steps = 10;
  float weight_decay = 0.1f;
  float grad_clip = 1.0f;  // 0 disables clipping
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  int64_t seed = 1337;
  std::string init_from;  // optional Hugging Face GPT-2 safetensors to start from
  bool recompute = false;   // recompute GELU/LayerNorm outputs in backward (less memory)
  std::string device;       // cpu | cuda; empty: cuda when this binary has it and a GPU is seen
  std::string dtype = "fp32";  // fp32 | bf16 (activations and GEMMs; master weights stay fp32)
  int stop_after_step = 0;  // stop (saving a checkpoint) after this step; the schedule still
                            // targets max_steps. 0: run to max_steps
};

struct DataSettings {
  std::string dir;
  // glob(3) patterns (relative to dir, or absolute; {a,b} allowed) that replace the shard name
  // rule (core/data/split_files.h: *_train_*.bin, *_val_*.bin) for their split. Empty: the rule.
  std::string train_files;
  std::string val_files;
  // Attention does not cross an end-of-text token inside a packed window: each document (EOT
  // first, as llm.c packs them) attends only to itself.
  bool document_mask = false;
};

struct RunSettings {
  std::string dir = "runs/default";
  int log_every = 10;
  int eval_every = 100;  // 0: evaluate only at the end
  int eval_batches = 8;  // micro-batches of validation per periodic evaluation
  // Tokens scored by the final evaluation: a fixed prefix of full windows of block_size tokens
  // (ceil(final_eval_tokens / block_size) of them). 0: the whole val split, ragged tails included.
  int64_t final_eval_tokens = 0;
  // Rank 0 also writes TensorBoard event files (core/io/tfevents.h) into dir: every scalar of
  // metrics.jsonl, per-layer norms every eval_every steps, a text sample at each evaluation.
  bool tensorboard = false;
  // One rank's (device's) peak dense TFLOP/s at train.dtype, the denominator of MFU (model
  // FLOP/s over world x peak) in metrics.jsonl; 0: MFU is not recorded (model_tflops still is).
  float peak_tflops = 0.f;
};

struct ParallelSettings {
  int tensor = 1;           // tensor-parallel degree; data-parallel degree = ranks / tensor
  float timeout_s = 300.f;  // a collective not done in this time ends the job, naming it
  float bucket_mb = 25.f;   // gradient all-reduce bucket size
  // Launch each gradient bucket's reduction as soon as backward has finished its parameters, on
  // a communication thread, so it overlaps the rest of backward (results are identical).
  bool overlap = true;
  // ZeRO stage: 0 = every DP rank holds all of AdamW's state; 1 = each holds 1/dp of it
  // (gradients reduce-scattered, AdamW on the shard, parameters all-gathered).
  int zero = 0;
  // How ranks find each other: "mpi" (mpirun, srun --mpi=pmix), or "file:DIR" (a directory on a
  // file system every rank sees; ranks from Slurm's or torchrun's environment; NCCL only).
  std::string bootstrap = "mpi";
  int flight_records = 256;  // collectives kept per rank by the flight recorder
};

struct CheckpointSettings {
  std::string dir;    // empty: no checkpoints; set: save there and resume from the latest
  int every = 0;      // save every this many steps (0: only at the end and on SIGTERM/SIGUSR1)
  int keep_last = 3;  // committed checkpoints kept (0: all)
};

struct Config {
  // model.vocab_size 0 means "take it from data.dir's tokenizer". model.tie_embeddings and
  // model.bias default to the family's choice: true for gpt2, false for llama.
  ModelConfig model;
  // model.prefix_lm: attention is bidirectional inside each prompt (the tokens a loss mask leaves
  // uncounted) and causal after it, the prefix-LM of T5 and UniLM. Kept beside ModelConfig until
  // the attention reads it.
  bool prefix_lm = false;
  TrainSettings train;
  DataSettings data;
  RunSettings run;
  ParallelSettings parallel;
  CheckpointSettings checkpoint;
  std::string source;  // the YAML file it came from
};

// Loads and validates; throws InputError with a one-line, located message.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Checks what depends on the number of ranks (world % tp, global batch over micro x dp, key/value
// heads over tp). Every
// rank runs it before any collective, so a bad layout fails everywhere at once, never hangs.
void validate_layout(const Config& cfg, int world);
// Facts about a valid config a user should hear (one line each, no prefix), e.g. a warmup longer
// than the run. Rank 0 logs them as warnings at the start of training.
std::vector<std::string> config_warnings(const Config& cfg);
// Fails (InputError, one line naming the key and path) unless run.dir and, when set,
// checkpoint.dir are directories this process can create files in: each is created when
// missing, then a probe file is created and removed in it. An existing file in the way or a
// read-only directory would otherwise let a run train to the end with every save failing.
void check_output_dirs(const Config& cfg);
// The resolved configuration as YAML (what run.dir/config.yaml records).
std::string config_to_yaml(const Config& cfg);

}  // namespace cr
