#include "launcher/evaluate.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "core/common/error.h"
#include "core/model/hf_interchange.h"

namespace cr {

namespace fs = std::filesystem;

double EvalResult::bits_per_token() const { return loss / std::log(2.0); }
double EvalResult::bits_per_byte() const {
  return bytes_per_token > 0 ? bits_per_token() / bytes_per_token : std::nan("");
}
double EvalResult::perplexity() const { return std::exp(loss); }

nlohmann::json EvalResult::to_json(const char* prefix) const {
  const std::string p = prefix;
  nlohmann::json j;
  j[p + "loss"] = loss;
  j[p + "bits_per_token"] = bits_per_token();
  j[p + "bits_per_byte"] = bytes_per_token > 0 ? nlohmann::json(bits_per_byte()) : nlohmann::json();
  j["perplexity"] = perplexity();
  j["tokens"] = tokens;
  return j;
}

EvalResult evaluate_split(GPT& model, const TokenSplit& split, int T, int micro_batch,
                          size_t max_windows, double bytes_per_token,
                          const std::function<bool()>& stop, const AttentionMaskSpec& spec) {
  struct Window {
    size_t shard;
    size_t start;
    int len;
  };
  std::vector<Window> full, tails;
  for (size_t i = 0; i < split.shards().size(); i++) {
    const TokenShard& s = split.shards()[i];
    for (size_t pos = 0; pos + 1 < s.size(); pos += T) {
      const int len = (int)std::min<size_t>(T, s.size() - 1 - pos);
      (len == T ? full : tails).push_back({i, pos, len});
    }
  }
  if (full.empty() && tails.empty())
    CR_INPUT_ERROR("the {} split has {} tokens: nothing to evaluate (need at least 2)",
                   split.split(), split.tokens());
  if (max_windows > 0) {  // a fixed prefix of full windows
    if (full.size() > max_windows) full.resize(max_windows);
    if (!full.empty()) tails.clear();
  }
  double nats = 0;
  uint64_t count = 0;
  // With a loss mask only the counted targets are scored (their mean is the conditional
  // entropy of the completions given the prompts).
  const bool ranged = spec.document_mask || spec.prefix_lm;
  std::vector<int32_t> in((size_t)micro_batch * T), tgt((size_t)micro_batch * T),
      range(ranged ? 2 * (size_t)micro_batch * T : 0);
  WindowScratch scratch;
  auto run = [&](const Window* w, int nb, int len) {
    for (int b = 0; b < nb; b++)
      read_window(split, w[b].shard, w[b].start, len, spec, in.data() + (size_t)b * len,
                  tgt.data() + (size_t)b * len,
                  ranged ? range.data() + 2 * (size_t)b * len : nullptr, scratch);
    const float mean = model.forward(in.data(), tgt.data(), nb, len, ranged ? range.data() : nullptr);
    const auto n = (uint64_t)std::count_if(tgt.begin(), tgt.begin() + (size_t)nb * len,
                                           [](int32_t t) { return t >= 0; });
    nats += (double)mean * (double)n;
    count += n;
  };
  auto stopped = [&] { return stop && stop(); };
  EvalResult r;
  r.bytes_per_token = bytes_per_token;
  for (size_t i = 0; i < full.size() && !r.stopped; i += micro_batch) {
    r.stopped = stopped();
    if (!r.stopped) run(&full[i], (int)std::min<size_t>(micro_batch, full.size() - i), T);
  }
  for (size_t i = 0; i < tails.size() && !r.stopped; i++) {
    r.stopped = stopped();
    if (!r.stopped) run(&tails[i], 1, tails[i].len);
  }
  r.tokens = count;
  r.loss = count > 0 ? nats / count : std::nan("");
  return r;
}

RunDataConfig run_data_config(const std::string& model) {
  fs::path dir = fs::is_directory(model) ? fs::path(model) : fs::path(model).parent_path();
  if (dir.empty()) dir = ".";
  const fs::path yaml = dir / "config.yaml";
  if (!fs::exists(yaml)) return {};
  RunDataConfig c;
  try {
    const YAML::Node root = YAML::LoadFile(yaml.string());
    const YAML::Node data = root["data"], m = root["model"];
    if (data && data["train_files"]) c.files.train = data["train_files"].as<std::string>();
    if (data && data["val_files"]) c.files.val = data["val_files"].as<std::string>();
    if (data && data["document_mask"]) c.document_mask = data["document_mask"].as<bool>();
    if (m && m["prefix_lm"]) c.prefix_lm = m["prefix_lm"].as<bool>();
  } catch (const YAML::Exception& e) {
    CR_INPUT_ERROR("{}: malformed run config: {}", yaml.string(), e.what());
  }
  return c;
}

LoadedModel load_trained_model(const std::string& path) {
  LoadedModel out;
  fs::path weights, dir;
  if (fs::is_directory(path)) {
    dir = path;
    weights = dir / "model.safetensors";
    if (!fs::exists(weights))
      CR_INPUT_ERROR("{}: no model.safetensors (is the training run finished?)", path);
  } else if (fs::is_regular_file(path)) {
    weights = path;
    dir = weights.parent_path().empty() ? fs::path(".") : weights.parent_path();
  } else {
    CR_INPUT_ERROR("{}: no such run directory or safetensors file", path);
  }
  const fs::path cfg = dir / "config.json";
  if (!fs::exists(cfg))
    CR_INPUT_ERROR("{}: no config.json beside the weights (a Hugging Face GPT-2 or Llama model config)", cfg.string());
  const ModelConfig mc = read_hf_config(cfg.string());
  out.model = std::make_unique<GPT>(mc);
  load_hf_safetensors(mc, out.model->params(), weights.string());
  if (fs::exists(dir / "config.yaml")) {
    try {
      const YAML::Node run = YAML::LoadFile((dir / "config.yaml").string());
      if (run["data"] && run["data"]["dir"]) out.data_dir = run["data"]["dir"].as<std::string>();
    } catch (const YAML::Exception& e) {
      CR_INPUT_ERROR("{}: malformed run config: {}", (dir / "config.yaml").string(), e.what());
    }
  }
  if (fs::exists(dir / kRunTokenizerFile)) out.tokenizer_path = (dir / kRunTokenizerFile).string();
  return out;
}

}  // namespace cr
