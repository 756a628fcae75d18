#include "core/model/hf_interchange.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include "core/common/error.h"
#include "core/common/log.h"
#include "core/io/safetensors.h"

namespace cr {

namespace fs = std::filesystem;

namespace {

// The tensor's shape in the Hugging Face file: the real vocabulary rows only, gpt2's fused
// [3, C, C] qkv weight as [3C, C] and its [3, C] bias as [3C] (hf_flatten), then transposed for
// Conv1D.
std::vector<int64_t> hf_shape(const ModelConfig& cfg, const ParamTensor& t) {
  std::vector<int64_t> s = t.global_shape;
  if (t.padded_dim == 0) s[0] = cfg.vocab_size;
  if (t.hf_flatten) {
    s[1] *= s[0];
    s.erase(s.begin());
  }
  if (t.hf_transpose) std::swap(s[0], s[1]);
  return s;
}

void transpose(const float* in, float* out, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) out[c * rows + r] = in[r * cols + c];
}

// A float config value written as the shortest decimal that reads back as the same float.
double as_decimal(float x) { return std::stod(fmt::format("{}", x)); }

// ---- config.json fields -----------------------------------------------------------------

class ConfigReader {
 public:
  ConfigReader(std::string path, const nlohmann::json& j) : path_(std::move(path)), j_(j) {}
  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  template <typename T>
  T get(const char* key) const {
    if (!has(key)) CR_INPUT_ERROR("{}: missing '{}'", path_, key);
    try {
      return j_.at(key).get<T>();
    } catch (const nlohmann::json::exception&) {
      CR_INPUT_ERROR("{}: '{}' = {} has the wrong type", path_, key, j_.at(key).dump());
    }
  }
  template <typename T>
  T get_or(const char* key, T fallback) const { return has(key) ? get<T>(key) : fallback; }
  // A field we can only compute with at one value (or absent/null).
  template <typename T>
  void require(const char* key, T ok, const char* why) const {
    if (has(key) && get<T>(key) != ok)
      CR_INPUT_ERROR("{}: {} = {} is not supported ({})", path_, key, j_.at(key).dump(), why);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const nlohmann::json& j_;
};

// GPT2Config fields (transformers 4.40) that do not change the math: the dropout probabilities
// (chainrule trains without dropout; warned), initializer_range, summary_* (sequence
// classification heads), use_cache, bos/eos ids, reorder_and_upcast_attn (fp16 numerics only).
ModelConfig read_gpt2(const ConfigReader& r) {
  ModelConfig c;
  c.family = ModelFamily::GPT2;
  c.n_layer = r.get<int>("n_layer");
  c.n_head = r.get<int>("n_head");
  c.n_embd = r.get<int>("n_embd");
  c.block_size = r.get<int>("n_positions");
  c.vocab_size = r.get<int>("vocab_size");
  c.ffn_hidden = r.get_or<int>("n_inner", 0);
  c.norm_eps = (float)r.get_or<double>("layer_norm_epsilon", 1e-5);
  c.tie_embeddings = r.get_or<bool>("tie_word_embeddings", true);
  const std::string act = r.get_or<std::string>("activation_function", "gelu_new");
  if (act != "gelu_new" && act != "gelu_pytorch_tanh" && act != "gelu_fast")
    CR_INPUT_ERROR("{}: activation_function = \"{}\" is not supported (GPT-2's tanh GELU: "
                   "\"gelu_new\", \"gelu_pytorch_tanh\" or \"gelu_fast\")",
                   r.path(), act);
  r.require("scale_attn_weights", true, "attention scores are always divided by sqrt(head size)");
  r.require("scale_attn_by_inverse_layer_idx", false, "no per-layer attention scaling");
  for (const char* p : {"resid_pdrop", "embd_pdrop", "attn_pdrop"})
    if (r.get_or<double>(p, 0.0) != 0.0)
      log::warn("{}: {} = {} is ignored: chainrule applies no dropout", r.path(), p,
                r.get<double>(p));
  return c;
}

// LlamaConfig fields (transformers 4.40) that do not change the math: initializer_range,
// use_cache, pad/bos/eos ids, pretraining_tp (a slicing of the same matmuls),
// attention_dropout (warned).
ModelConfig read_llama(const ConfigReader& r) {
  ModelConfig c;
  c.family = ModelFamily::Llama;
  c.n_layer = r.get<int>("num_hidden_layers");
  c.n_head = r.get<int>("num_attention_heads");
  c.n_embd = r.get<int>("hidden_size");
  c.block_size = r.get<int>("max_position_embeddings");
  c.vocab_size = r.get<int>("vocab_size");
  c.n_kv_head = r.get_or<int>("num_key_value_heads", c.n_head);
  c.ffn_hidden = r.get<int>("intermediate_size");
  c.norm_eps = (float)r.get_or<double>("rms_norm_eps", 1e-6);
  c.rope_theta = (float)r.get_or<double>("rope_theta", 10000.0);
  c.tie_embeddings = r.get_or<bool>("tie_word_embeddings", false);
  c.bias = r.get_or<bool>("attention_bias", false);
  const std::string act = r.get_or<std::string>("hidden_act", "silu");
  if (act != "silu" && act != "swish")
    CR_INPUT_ERROR("{}: hidden_act = \"{}\" is not supported (the Llama MLP is SwiGLU: \"silu\")",
                   r.path(), act);
  if (r.has("rope_scaling"))
    CR_INPUT_ERROR("{}: rope_scaling = {} is not supported (plain rotary positions only)",
                   r.path(), nlohmann::json(r.get<nlohmann::json>("rope_scaling")).dump());
  r.require("mlp_bias", false, "the Llama MLP has no biases");
  if (r.has("head_dim") && c.n_head > 0 && r.get<int>("head_dim") * c.n_head != c.n_embd)
    CR_INPUT_ERROR("{}: head_dim = {} is not supported (must be hidden_size / num_attention_heads "
                   "= {})",
                   r.path(), r.get<int>("head_dim"), c.n_embd / c.n_head);
  if (r.get_or<double>("attention_dropout", 0.0) != 0.0)
    log::warn("{}: attention_dropout is ignored: chainrule applies no dropout", r.path());
  return c;
}

void check_shape(const ModelConfig& c, const std::string& path) {
  if (c.n_layer <= 0 || c.n_head <= 0 || c.n_embd <= 0 || c.block_size <= 0 || c.vocab_size <= 0 ||
      c.n_embd % c.n_head != 0)
    CR_INPUT_ERROR("{}: inconsistent model config (the width {} must be a positive multiple of "
                   "the head count {}; all sizes positive)",
                   path, c.n_embd, c.n_head);
  if (c.kv_heads() <= 0 || c.n_head % c.kv_heads() != 0)
    CR_INPUT_ERROR("{}: num_key_value_heads = {} must divide num_attention_heads = {}", path,
                   c.kv_heads(), c.n_head);
  if (c.ffn_hidden < 0 || !(c.norm_eps > 0.f) || !(c.rope_theta > 0.f))
    CR_INPUT_ERROR("{}: the MLP width, norm epsilon and rope_theta must be positive", path);
}

}  // namespace

nlohmann::json hf_config_json(const ModelConfig& cfg) {
  if (!cfg.llama())
    return {{"model_type", "gpt2"},
            {"architectures", {"GPT2LMHeadModel"}},
            {"vocab_size", cfg.vocab_size},
            {"n_positions", cfg.block_size},
            {"n_ctx", cfg.block_size},
            {"n_embd", cfg.n_embd},
            {"n_layer", cfg.n_layer},
            {"n_head", cfg.n_head},
            {"n_inner", cfg.ffn_hidden_size() == 4 * cfg.n_embd ? nlohmann::json()
                                                                 : nlohmann::json(cfg.ffn_hidden_size())},
            {"activation_function", "gelu_new"},
            {"layer_norm_epsilon", as_decimal(cfg.norm_eps)},
            {"resid_pdrop", 0.0},
            {"embd_pdrop", 0.0},
            {"attn_pdrop", 0.0},
            {"scale_attn_weights", true},
            {"scale_attn_by_inverse_layer_idx", false},
            {"tie_word_embeddings", cfg.tie_embeddings},
            {"torch_dtype", "float32"}};
  return {{"model_type", "llama"},
          {"architectures", {"LlamaForCausalLM"}},
          {"vocab_size", cfg.vocab_size},
          {"hidden_size", cfg.n_embd},
          {"intermediate_size", cfg.ffn_hidden_size()},
          {"num_hidden_layers", cfg.n_layer},
          {"num_attention_heads", cfg.n_head},
          {"num_key_value_heads", cfg.kv_heads()},
          {"max_position_embeddings", cfg.block_size},
          {"hidden_act", "silu"},
          {"rms_norm_eps", as_decimal(cfg.norm_eps)},
          {"rope_theta", as_decimal(cfg.rope_theta)},
          {"rope_scaling", nullptr},
          {"attention_bias", cfg.bias},
          {"attention_dropout", 0.0},
          {"pretraining_tp", 1},
          {"initializer_range", 0.02},
          {"tie_word_embeddings", cfg.tie_embeddings},
          {"torch_dtype", "float32"}};
}

ModelConfig read_hf_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) CR_INPUT_ERROR("{}: cannot open model config", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    CR_INPUT_ERROR("{}: malformed config.json: {}", path, e.what());
  }
  if (!j.is_object()) CR_INPUT_ERROR("{}: config.json is not a JSON object", path);
  const ConfigReader r(path, j);
  if (r.has("pruned_heads") && !j.at("pruned_heads").empty())
    CR_INPUT_ERROR("{}: pruned_heads = {} is not supported (every layer has all its heads)", path,
                   j.at("pruned_heads").dump());
  const std::string type = r.get_or<std::string>("model_type", "gpt2");
  ModelConfig c;
  if (type == "gpt2")
    c = read_gpt2(r);
  else if (type == "llama")
    c = read_llama(r);
  else
    CR_INPUT_ERROR("{}: model_type = \"{}\" is not supported (gpt2 or llama)", path, type);
  check_shape(c, path);
  return c;
}

void save_hf_safetensors(const ModelConfig& cfg, const float* flat, const std::string& path) {
  const ParamLayout layout(cfg);
  SafetensorsWriter w;
  std::vector<float> tmp;
  for (const auto& t : layout.tensors()) {
    const float* src = flat + t.offset;
    const std::vector<int64_t> shape = hf_shape(cfg, t);
    if (t.hf_transpose) {
      tmp.resize(t.numel);
      transpose(src, tmp.data(), shape[1], shape[0]);
      src = tmp.data();
    }
    // An untied GPT-2 needs transformers' full GPT2LMHeadModel names ("transformer." + the trunk,
    // beside lm_head.weight); a tied one is written as the trunk alone, like OpenAI's release.
    const bool prefixed = !cfg.llama() && !cfg.tie_embeddings && !t.lm_head;
    w.add(prefixed ? "transformer." + t.hf_name : t.hf_name, src, shape);
  }
  w.set_metadata("format", "pt");
  w.write(path);
}

void load_hf_safetensors(const ModelConfig& cfg, float* flat, const std::string& path,
                         bool crop_positions) {
  const ParamLayout layout(cfg);
  SafetensorsReader r(path);
  const ParamTensor& wte = layout.embedding();
  const std::string prefix = !cfg.llama() && !r.has(wte.hf_name) && r.has("transformer." + wte.hf_name)
                                 ? "transformer."
                                 : "";
  std::set<std::string> used;
  for (const auto& t : layout.tensors()) {
    const std::string name = t.lm_head ? t.hf_name : prefix + t.hf_name;
    if (!r.has(name)) CR_INPUT_ERROR("{}: missing tensor '{}'", path, name);
    std::vector<int64_t> want = hf_shape(cfg, t);
    const auto& info = r.info(name);
    auto data = r.read_f32(name);
    const bool positions = crop_positions && t.positions;
    if (positions && info.shape.size() == 2 && info.shape[1] == want[1] && info.shape[0] > want[0]) {
      log::info("{}: cropping the position table '{}' from {} to {} positions (model.block_size)",
                path, name, info.shape[0], want[0]);
      data.resize((size_t)want[0] * want[1]);
    } else if (info.shape != want) {
      CR_INPUT_ERROR("{}: tensor '{}' has shape {}, expected {} for this model config", path, name,
                     nlohmann::json(info.shape).dump(), nlohmann::json(want).dump());
    }
    float* dst = flat + t.offset;
    if (t.hf_transpose)
      transpose(data.data(), dst, want[0], want[1]);
    else
      std::memcpy(dst, data.data(), data.size() * sizeof(float));
    if (t.padded_dim == 0)  // padding rows: zero, so their (masked) logits are inert
      std::memset(dst + data.size(), 0, (t.numel - data.size()) * sizeof(float));
    used.insert(name);
  }
  if (wte.tied && r.has("lm_head.weight")) {  // a tied model's head must be the embedding
    if (r.read_f32("lm_head.weight") != r.read_f32(prefix + wte.hf_name))
      CR_INPUT_ERROR("{}: lm_head.weight differs from the token embedding, but the config ties "
                     "them (tie_word_embeddings: true)",
                     path);
    used.insert("lm_head.weight");
  }
  for (const auto& n : r.names()) {
    const bool ignorable = n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias") ||
                           n.ends_with("rotary_emb.inv_freq");
    if (!used.count(n) && !ignorable)
      CR_INPUT_ERROR("{}: unexpected tensor '{}' (not part of this {} model)", path, n,
                     family_name(cfg.family));
  }
}

std::vector<float> load_hf_init(const ModelConfig& cfg, const std::string& path) {
  const fs::path cfg_path = fs::path(path).parent_path() / "config.json";
  if (fs::exists(cfg_path)) {
    const ModelConfig hf = read_hf_config(cfg_path.string());
    auto differ = [&](const char* key, const std::string& ours, const std::string& theirs) {
      if (ours != theirs)
        CR_INPUT_ERROR("{}: model.{} = {} but {} says {}; set model.{} to match", path, key, ours,
                       cfg_path.string(), theirs, key);
    };
    differ("family", family_name(cfg.family), family_name(hf.family));
    differ("n_layer", std::to_string(cfg.n_layer), std::to_string(hf.n_layer));
    differ("n_head", std::to_string(cfg.n_head), std::to_string(hf.n_head));
    differ("n_embd", std::to_string(cfg.n_embd), std::to_string(hf.n_embd));
    differ("vocab_size", std::to_string(cfg.vocab_size), std::to_string(hf.vocab_size));
    differ("n_kv_head", std::to_string(cfg.kv_heads()), std::to_string(hf.kv_heads()));
    differ("ffn_hidden", std::to_string(cfg.ffn_hidden_size()), std::to_string(hf.ffn_hidden_size()));
    differ("norm_eps", fmt::format("{}", cfg.norm_eps), fmt::format("{}", hf.norm_eps));
    differ("tie_embeddings", cfg.tie_embeddings ? "true" : "false", hf.tie_embeddings ? "true" : "false");
    differ("bias", cfg.bias ? "true" : "false", hf.bias ? "true" : "false");
    if (cfg.llama())
      differ("rope_theta", fmt::format("{}", cfg.rope_theta), fmt::format("{}", hf.rope_theta));
    if (hf.block_size < cfg.block_size && !cfg.llama())
      CR_INPUT_ERROR("{}: model.block_size = {} exceeds the {} positions of {}", path,
                     cfg.block_size, hf.block_size, cfg_path.string());
  }
  std::vector<float> full(ParamLayout(cfg).total());
  load_hf_safetensors(cfg, full.data(), path, /*crop_positions=*/true);
  return full;
}

void export_hf_model(const GPT& model, const std::string& dir, const Tokenizer* tokenizer) {
  fs::create_directories(dir);
  save_hf_safetensors(model.config(), model.params(), dir + "/model.safetensors");
  const std::string cfg_path = dir + "/config.json";
  std::ofstream(cfg_path + ".tmp") << hf_config_json(model.config()).dump(2) << "\n";
  fs::rename(cfg_path + ".tmp", cfg_path);

  std::optional<Tokenizer> run_tokenizer;
  const fs::path run_file = fs::path(dir) / "tokenizer.chainrule.json";  // kRunTokenizerFile
  if (!tokenizer && fs::exists(run_file))
    tokenizer = &run_tokenizer.emplace(Tokenizer::load(run_file.string()));
  if (tokenizer && tokenizer->kind() == Tokenizer::Kind::HF) {
    const std::string path = dir + "/tokenizer.json";
    {
      std::ofstream out(path + ".tmp", std::ios::binary);
      out << tokenizer->hf_tokenizer_json();
      if (!out.flush()) CR_INPUT_ERROR("{}: cannot write", path + ".tmp");
    }
    fs::rename(path + ".tmp", path);
  }
}

}  // namespace cr
