// Weights interchange with Hugging Face transformers, both families: safetensors under the
// model's Hugging Face tensor names plus a config.json, as GPT2LMHeadModel (gpt2: Conv1D
// weights stored [in, out]) and LlamaForCausalLM (llama: nn.Linear [out, in], like ours).
// The names and layout conversions come from the parameter table (ParamTensor::hf_name,
// hf_transpose), so export and import are one generic loop.
//
// Config fidelity: every config.json field transformers reads that changes the math is either
// honoured or rejected with one line naming the file, the key and the value (read_hf_config).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/data/tokenizer.h"
#include "core/model/gpt.h"

namespace cr {

// config.json for cfg: a GPT2Config or a LlamaConfig.
nlohmann::json hf_config_json(const ModelConfig& cfg);
// Reads a GPT-2 or Llama config.json (by model_type). Throws InputError naming the key for a
// field whose value we cannot compute with (e.g. activation_function "relu", rope_scaling).
ModelConfig read_hf_config(const std::string& path);

// Writes a flat buffer laid out by ParamLayout(cfg) (parameters or gradients) under HF names.
void save_hf_safetensors(const ModelConfig& cfg, const float* flat, const std::string& path);
// Loads HF weights into a flat buffer laid out by ParamLayout(cfg); shapes must match, except
// that with crop_positions a position table (gpt2's wpe) longer than cfg.block_size is cropped
// to it (logged).
// Accepts GPT-2's optional "transformer." prefix and ignores HF's attention-mask buffers; a
// tied model's file may carry lm_head.weight only if it equals the embedding.
void load_hf_safetensors(const ModelConfig& cfg, float* flat, const std::string& path,
                         bool crop_positions = false);
// train.init_from: the whole (tp 1) parameters of cfg from a safetensors file. When a
// config.json sits beside it, each of its math-changing fields must agree with cfg (one line
// naming the key otherwise); a longer context is cropped to cfg.block_size, as nanoGPT does.
std::vector<float> load_hf_init(const ModelConfig& cfg, const std::string& path);

// Writes DIR/model.safetensors and DIR/config.json (a whole, tp 1 model), and DIR/tokenizer.json
// when the tokenizer is a Hugging Face one (hf:): its original tokenizer.json text, so
// AutoTokenizer loads the export. With `tokenizer` null, a run dir's own tokenizer
// (DIR/tokenizer.chainrule.json, written at the start of training) is used where present. Other
// tokenizers (byte, char, sp) have no tokenizer.json form and write none.
void export_hf_model(const GPT& model, const std::string& dir,
                     const Tokenizer* tokenizer = nullptr);

}  // namespace cr
