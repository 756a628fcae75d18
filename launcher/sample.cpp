// `chainrule sample` and `chainrule eval`: use a trained model.
#include <cmath>
#include <cstdio>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/common/error.h"
#include "core/common/log.h"
#include "core/data/loader.h"
#include "core/model/generate.h"
#include "launcher/commands.h"
#include "launcher/evaluate.h"

namespace cr {

namespace fs = std::filesystem;

namespace {

// The masks of the run's training applied to the data evaluated; a mask the data cannot give
// (no end-of-text token, no loss mask) is left out with a warning.
AttentionMaskSpec eval_mask_spec(const RunDataConfig& run, const std::optional<DatasetInfo>& info,
                                 const TokenSplit& val, const std::string& data_dir) {
  AttentionMaskSpec spec;
  if (run.document_mask) {
    if (info && info->tokenizer && info->tokenizer->eot_id() >= 0)
      spec.document_mask = true, spec.eot = info->tokenizer->eot_id();
    else
      log::warn("the model trained with data.document_mask, but {} has no end-of-text token: "
                "evaluating without it", data_dir);
  }
  if (run.prefix_lm) {
    if (val.has_loss_mask())
      spec.prefix_lm = true;
    else
      log::warn("the model trained with model.prefix_lm, but {} has no loss mask to find prompts "
                "in: evaluating causally", data_dir);
  }
  return spec;
}

// The tokens generation starts from. No prompt: the end-of-text token, which starts every
// document in the training data (llm.c packing), so the model begins a fresh document. A
// legacy tokenizer (no EOT) starts from a newline as before, or from token 0 when its
// vocabulary has no newline: never an error about a character the user did not type. A prompt
// longer than the context keeps its last block_size tokens, as nanoGPT crops its context.
std::vector<int32_t> start_tokens(const Tokenizer& tok, const std::string& prompt, int block_size) {
  if (prompt.empty()) {
    if (tok.eot_id() >= 0) return {tok.eot_id()};
    try {
      std::vector<int32_t> newline = tok.encode("\n");
      if (!newline.empty()) return newline;
    } catch (const InputError&) {  // a char vocabulary without '\n'
    }
    log::warn("no --prompt, and this tokenizer has no end-of-text token and no newline: starting "
              "from token 0 ('{}')", tok.decode_one(0));
    return {0};
  }
  std::vector<int32_t> ids = tok.encode(prompt);
  if (ids.empty()) CR_INPUT_ERROR("--prompt '{}' encodes to no tokens", prompt);
  if ((int)ids.size() > block_size) {
    log::warn("--prompt has {} tokens and the model's context is {}: keeping its last {} tokens",
              ids.size(), block_size, block_size);
    ids.erase(ids.begin(), ids.end() - block_size);
  }
  return ids;
}

}  // namespace

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

int run_eval(const EvalOptions& opt) {
  if (opt.micro_batch < 1) CR_INPUT_ERROR("--micro-batch {}: expected a positive integer", opt.micro_batch);
  LoadedModel lm = load_trained_model(opt.model);
  const std::string data_dir = opt.data_dir.empty() ? lm.data_dir : opt.data_dir;
  if (data_dir.empty())
    CR_INPUT_ERROR("{}: no data dir recorded with this model; pass --data DIR", opt.model);
  // The run's own shard globs apply to the run's data dir; --data DIR is read by the name rule.
  const RunDataConfig run = run_data_config(opt.model);
  TokenSplit val(data_dir, "val", opt.data_dir.empty() ? run.files : SplitPatterns{});
  val.check_vocab(lm.model->config().vocab_size);
  const auto info = read_dataset_info(data_dir);
  // With a loss mask: the completions' bytes per completion token.
  const double bpt = info ? info->val_bytes_per_token(val.has_loss_mask()) : 0.0;
  const EvalResult r = evaluate_split(*lm.model, val, lm.model->config().block_size,
                                      opt.micro_batch, 0, bpt, {},
                                      eval_mask_spec(run, info, val, data_dir));
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
    fmt::print("tokens        {}{}\n", r.tokens,
               val.has_loss_mask() ? " (counted by the loss mask)" : "");
  }
  return 0;
}

int run_sample(const SampleOptions& opt) {
  if (opt.max_new_tokens < 0) CR_INPUT_ERROR("--max-new-tokens {}: expected >= 0", opt.max_new_tokens);
  if (!(opt.temperature >= 0) || !std::isfinite(opt.temperature))
    CR_INPUT_ERROR("--temperature {}: expected a finite number >= 0", opt.temperature);
  if (opt.top_k < 0) CR_INPUT_ERROR("--top-k {}: expected >= 0 (0: no limit)", opt.top_k);
  LoadedModel lm = load_trained_model(opt.model);
  const Tokenizer tok = find_tokenizer(lm, opt.data_dir);
  const ModelConfig& mc = lm.model->config();
  if (tok.vocab_size() > mc.vocab_size)
    CR_INPUT_ERROR("tokenizer vocabulary {} exceeds the model's {}", tok.vocab_size(), mc.vocab_size);
  const std::vector<int32_t> prompt = start_tokens(tok, opt.prompt, mc.block_size);

  Generator gen(*lm.model);
  Rng rng(opt.seed);
  std::vector<int32_t> context = prompt;
  // The whole prompt in one pass: bidirectional for a prefix-LM, else causal (the same logits as
  // feeding it token by token).
  const float* logits = gen.prefill(prompt.data(), (int)prompt.size(), opt.prefix_lm);
  fmt::print("{}", opt.prompt);  // all of it, as typed (an omitted prompt prints nothing)
  for (int i = 0; i < opt.max_new_tokens; i++) {
    // Sample only among the tokenizer's ids: a model can be larger than its tokenizer.
    const int32_t next = sample_token(logits, tok.vocab_size(), opt.temperature, opt.top_k, rng);
    fmt::print("{}", tok.decode_one(next));
    std::fflush(stdout);
    context.push_back(next);
    if (i + 1 == opt.max_new_tokens) break;
    if (gen.position() == mc.block_size) {
      // Context full (a prompt of block_size tokens fills it at once): slide the window,
      // re-reading the last half of the context into a fresh cache (the model has no positions
      // past block_size; nanoGPT re-reads the last block_size tokens for every new token). The
      // re-read is causal, also for --prefix-lm: the prompt has scrolled out of it.
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
