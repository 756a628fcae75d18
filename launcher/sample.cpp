// `chainrule sample` and `chainrule eval`: use a trained model.
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/common/error.h"
#include "core/common/log.h"
#include "core/data/loader.h"
#include "core/model/generate.h"
#include "launcher/commands.h"
#include "launcher/evaluate.h"

namespace cr {

namespace {

Tokenizer find_tokenizer(const LoadedModel& lm, const std::string& data_dir_flag) {
  if (!data_dir_flag.empty()) {
    auto info = read_dataset_info(data_dir_flag);
    if (!info || !info->tokenizer)
      CR_INPUT_ERROR("--data {}: no {} with a tokenizer", data_dir_flag, kDatasetInfoFile);
    return *info->tokenizer;
  }
  if (!lm.tokenizer_path.empty()) return Tokenizer::load(lm.tokenizer_path);
  if (!lm.data_dir.empty()) {
    auto info = read_dataset_info(lm.data_dir);
    if (info && info->tokenizer) return *info->tokenizer;
  }
  CR_INPUT_ERROR("no tokenizer found beside the model; pass --data DIR (a prepared data dir)");
}

}  // namespace

int run_eval(const EvalOptions& opt) {
  if (opt.micro_batch < 1) CR_INPUT_ERROR("--micro-batch {}: expected a positive integer", opt.micro_batch);
  LoadedModel lm = load_trained_model(opt.model);
  const std::string data_dir = opt.data_dir.empty() ? lm.data_dir : opt.data_dir;
  if (data_dir.empty())
    CR_INPUT_ERROR("{}: no data dir recorded with this model; pass --data DIR", opt.model);
  TokenSplit val(data_dir, "val");
  val.check_vocab(lm.model->config().vocab_size);
  const auto info = read_dataset_info(data_dir);
  const double bpt = info && info->val_bytes > 0 ? (double)info->val_bytes / info->val_tokens : 0.0;
  const EvalResult r = evaluate_split(*lm.model, val, lm.model->config().block_size,
                                      opt.micro_batch, 0, bpt);
  if (opt.json) {
    fmt::print("{}\n", r.to_json().dump());
  } else {
    fmt::print("val loss      {:.4f} nats/token\n", r.loss);
    fmt::print("bits/token    {:.4f}\n", r.bits_per_token());
    if (bpt > 0)
      fmt::print("bits/byte     {:.4f}\n", r.bits_per_byte());
    else
      fmt::print("bits/byte     n/a ({} records no byte counts)\n", data_dir);
    fmt::print("perplexity    {:.3f}\n", r.perplexity());
    fmt::print("tokens        {}\n", r.tokens);
  }
  return 0;
}

int run_sample(const SampleOptions& opt) {
  if (opt.max_new_tokens < 0) CR_INPUT_ERROR("--max-new-tokens {}: expected >= 0", opt.max_new_tokens);
  if (!(opt.temperature >= 0) || !std::isfinite(opt.temperature))
    CR_INPUT_ERROR("--temperature {}: expected a finite number >= 0", opt.temperature);
  if (opt.top_k < 0) CR_INPUT_ERROR("--top-k {}: expected >= 0 (0: no limit)", opt.top_k);
  if (opt.prompt.empty()) CR_INPUT_ERROR("--prompt: expected at least one character");
  LoadedModel lm = load_trained_model(opt.model);
  const Tokenizer tok = find_tokenizer(lm, opt.data_dir);
  const ModelConfig& mc = lm.model->config();
  if (tok.vocab_size() > mc.vocab_size)
    CR_INPUT_ERROR("tokenizer vocabulary {} exceeds the model's {}", tok.vocab_size(), mc.vocab_size);
  const std::vector<int32_t> prompt = tok.encode(opt.prompt);
  if ((int)prompt.size() >= mc.block_size)
    CR_INPUT_ERROR("--prompt has {} tokens; the model's context is {}", prompt.size(), mc.block_size);

  Generator gen(*lm.model);
  Rng rng(opt.seed);
  std::vector<int32_t> context = prompt;
  const float* logits = nullptr;
  for (int32_t t : prompt) logits = gen.step(t);
  fmt::print("{}", opt.prompt);
  for (int i = 0; i < opt.max_new_tokens; i++) {
    // Sample only among the tokenizer's ids: a model can be larger than its tokenizer.
    const int32_t next = sample_token(logits, tok.vocab_size(), opt.temperature, opt.top_k, rng);
    fmt::print("{}", tok.decode_one(next));
    std::fflush(stdout);
    context.push_back(next);
    if (i + 1 == opt.max_new_tokens) break;
    if (gen.position() == mc.block_size) {
      // Context full: slide the window, re-reading the last half of the context into a fresh
      // cache (the model has no positions past block_size).
      gen.reset();
      const size_t keep = (size_t)mc.block_size / 2;
      for (size_t k = context.size() - keep; k + 1 < context.size(); k++) gen.step(context[k]);
    }
    logits = gen.step(next);
  }
  fmt::print("\n");
  return 0;
}

}  // namespace cr
