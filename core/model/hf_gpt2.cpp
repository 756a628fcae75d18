#include "core/model/hf_gpt2.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/common/error.h"
#include "core/io/safetensors.h"

namespace cr {

namespace {

// Our tensor name -> (HF name, whether the matrix is stored transposed there).
struct HfName {
  std::string name;
  bool transpose;
};

HfName to_hf(const std::string& ours) {
  static const std::pair<const char*, const char*> kRenames[] = {
      {"attn.qkv.", "attn.c_attn."}, {"attn.proj.", "attn.c_proj."},
      {"mlp.fc.", "mlp.c_fc."},      {"mlp.proj.", "mlp.c_proj."}};
  std::string n = ours;
  bool renamed = false;
  for (const auto& [from, to] : kRenames) {
    const auto pos = n.find(from);
    if (pos != std::string::npos) {
      n.replace(pos, std::strlen(from), to);
      renamed = true;
    }
  }
  if (n == "wte" || n == "wpe") n += ".weight";
  const bool is_weight = n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0;
  return {n, renamed && is_weight};
}

// Our shape as a matrix/vector in the HF sense: the fused qkv weight [3, C, C] is [3C, C] there,
// its bias [3, C] is [3C].
std::vector<int64_t> flat_shape(const ParamTensor& t) {
  std::vector<int64_t> s = t.shape;
  if (s.size() == 3) return {s[0] * s[1], s[2]};
  if (s.size() == 2 && t.name.ends_with(".bias")) return {s[0] * s[1]};
  return s;
}

void transpose(const float* in, float* out, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) out[c * rows + r] = in[r * cols + c];
}

}  // namespace

nlohmann::json hf_config_json(const ModelConfig& cfg) {
  return {{"model_type", "gpt2"},
          {"architectures", {"GPT2LMHeadModel"}},
          {"vocab_size", cfg.vocab_size},
          {"n_positions", cfg.block_size},
          {"n_ctx", cfg.block_size},
          {"n_embd", cfg.n_embd},
          {"n_layer", cfg.n_layer},
          {"n_head", cfg.n_head},
          {"n_inner", nullptr},
          {"activation_function", "gelu_new"},
          {"layer_norm_epsilon", 1e-5},  // ModelConfig::ln_eps(), written as the decimal
          {"resid_pdrop", 0.0},
          {"embd_pdrop", 0.0},
          {"attn_pdrop", 0.0},
          {"tie_word_embeddings", true},
          {"torch_dtype", "float32"}};
}

ModelConfig read_hf_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) CR_INPUT_ERROR("{}: cannot open model config", path);
  try {
    const auto j = nlohmann::json::parse(in);
    ModelConfig cfg;
    cfg.n_layer = j.at("n_layer").get<int>();
    cfg.n_head = j.at("n_head").get<int>();
    cfg.n_embd = j.at("n_embd").get<int>();
    cfg.block_size = j.at("n_positions").get<int>();
    cfg.vocab_size = j.at("vocab_size").get<int>();
    if (cfg.n_layer <= 0 || cfg.n_head <= 0 || cfg.n_embd <= 0 || cfg.block_size <= 0 ||
        cfg.vocab_size <= 0 || cfg.n_embd % cfg.n_head != 0)
      CR_INPUT_ERROR("{}: inconsistent GPT-2 config (n_embd {} must be a positive multiple of "
                     "n_head {}; all sizes positive)",
                     path, cfg.n_embd, cfg.n_head);
    return cfg;
  } catch (const nlohmann::json::exception& e) {
    CR_INPUT_ERROR("{}: malformed GPT-2 config.json: {}", path, e.what());
  }
}

void save_hf_safetensors(const ModelConfig& cfg, const float* flat, const std::string& path) {
  ParamLayout layout(cfg);
  SafetensorsWriter w;
  std::vector<float> tmp;
  for (const auto& t : layout.tensors()) {
    const HfName hf = to_hf(t.name);
    const float* src = flat + t.offset;
    std::vector<int64_t> shape = flat_shape(t);
    if (t.name == "wte") shape[0] = cfg.vocab_size;  // drop the padding rows
    if (hf.transpose) {
      tmp.resize(t.numel);
      transpose(src, tmp.data(), shape[0], shape[1]);
      std::swap(shape[0], shape[1]);
      src = tmp.data();
    }
    w.add(hf.name, src, shape);
  }
  w.set_metadata("format", "pt");
  w.write(path);
}

void load_hf_safetensors(const ModelConfig& cfg, float* flat, const std::string& path) {
  ParamLayout layout(cfg);
  SafetensorsReader r(path);
  std::string prefix = r.has("wte.weight") ? "" : "transformer.";
  std::set<std::string> used;
  for (const auto& t : layout.tensors()) {
    const HfName hf = to_hf(t.name);
    const std::string name = prefix + hf.name;
    if (!r.has(name)) CR_INPUT_ERROR("{}: missing tensor '{}'", path, name);
    std::vector<int64_t> want = flat_shape(t);
    if (t.name == "wte") want[0] = cfg.vocab_size;
    if (hf.transpose) std::swap(want[0], want[1]);
    const auto& info = r.info(name);
    if (info.shape != want)
      CR_INPUT_ERROR("{}: tensor '{}' has shape {}, expected {} for this model config", path, name,
                     nlohmann::json(info.shape).dump(), nlohmann::json(want).dump());
    const auto data = r.read_f32(name);
    float* dst = flat + t.offset;
    if (hf.transpose)
      transpose(data.data(), dst, want[0], want[1]);
    else
      std::memcpy(dst, data.data(), data.size() * sizeof(float));
    if (t.name == "wte")  // padding rows: zero, so their (masked) logits are inert
      std::memset(dst + data.size(), 0, (t.numel - data.size()) * sizeof(float));
    used.insert(name);
  }
  for (const auto& n : r.names()) {
    const bool ignorable = n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias") ||
                           n == "lm_head.weight";
    if (!used.count(n) && !ignorable)
      CR_INPUT_ERROR("{}: unexpected tensor '{}' (not part of a GPT-2 model)", path, n);
  }
}

void export_hf_model(const GPT& model, const std::string& dir) {
  std::filesystem::create_directories(dir);
  save_hf_safetensors(model.config(), model.params(), dir + "/model.safetensors");
  const std::string cfg_path = dir + "/config.json";
  std::ofstream(cfg_path + ".tmp") << hf_config_json(model.config()).dump(2) << "\n";
  std::filesystem::rename(cfg_path + ".tmp", cfg_path);
}

}  // namespace cr
