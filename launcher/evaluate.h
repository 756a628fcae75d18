// Evaluation in the units of the mission: the validation cross-entropy in nats per token, bits
// per token (nats / ln 2), bits per byte (bits per token / bytes per token) and perplexity.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/data/loader.h"
#include "core/model/gpt.h"

namespace cr {

struct EvalResult {
  double loss = 0;             // mean nats per token
  uint64_t tokens = 0;         // tokens scored
  double bytes_per_token = 0;  // 0 when the data dir does not record bytes
  bool stopped = false;        // `stop` said so before every window was scored: loss is partial
  double bits_per_token() const;
  double bits_per_byte() const;  // NaN when bytes are unknown
  double perplexity() const;
  nlohmann::json to_json(const char* prefix = "val_") const;
};

// Scores every token of the split in windows of T (a shorter last window per shard), in order,
// micro_batch windows at a time. max_windows > 0 scores only the first max_windows full windows
// (periodic evaluation, run.final_eval_tokens); the ragged tails then only when there is no full
// window at all.
// stop, when given, is asked before each micro-batch; true abandons the evaluation (the result
// has stopped = true). Under several ranks the model's forward holds collectives, so stop must
// return the same answer on every rank: the train loop makes it a collective itself.
// With the split's loss mask, the loss is the mean over counted targets only (tokens counts them)
// and bytes_per_token should be the counted bytes per counted token. spec: the attention masks
// the model trained with (document mask, prefix-LM).
EvalResult evaluate_split(GPT& model, const TokenSplit& split, int T, int micro_batch,
                          size_t max_windows, double bytes_per_token,
                          const std::function<bool()>& stop = {},
                          const AttentionMaskSpec& spec = {});

// A trained model and what came with it, from a run dir (model.safetensors, config.json,
// config.yaml, tokenizer) or from a bare .safetensors file with config.json beside it.
struct LoadedModel {
  std::unique_ptr<GPT> model;
  std::string data_dir;        // the run's data.dir, if known
  std::string tokenizer_path;  // run dir's tokenizer, if present
};
LoadedModel load_trained_model(const std::string& path);

// What the run that made MODEL (its config.yaml beside it) says about its data:
// data.train_files / data.val_files (so eval on the run's data dir reads the val split training
// read) and the attention masks the model trained with. All defaults for a model without a run
// config; an InputError naming the file for a malformed one.
struct RunDataConfig {
  SplitPatterns files;
  bool document_mask = false, prefix_lm = false;
};
RunDataConfig run_data_config(const std::string& model);

// The tokenizer to use with a loaded model: --data DIR's when given, else the run dir's
// tokenizer.chainrule.json, else the run's data dir's dataset.json; an InputError when none.
Tokenizer find_tokenizer(const LoadedModel& lm, const std::string& data_dir_flag);

constexpr const char* kRunTokenizerFile = "tokenizer.chainrule.json";

}  // namespace cr
