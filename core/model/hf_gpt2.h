// Weights interchange with the Hugging Face GPT-2 format: safetensors with HF tensor names
// (wte.weight, h.N.attn.c_attn.weight, ...) in Conv1D [in, out] layout, and a GPT-2 config.json.
// Our own layout keeps matmul weights as [out, in]; the transposes happen only here.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/model/gpt.h"

namespace cr {

nlohmann::json hf_config_json(const ModelConfig& cfg);
// Reads n_layer/n_head/n_embd/n_positions/vocab_size from a GPT-2 config.json.
ModelConfig read_hf_config(const std::string& path);

// Writes a flat buffer laid out by ParamLayout(cfg) (parameters or gradients) under HF names.
void save_hf_safetensors(const ModelConfig& cfg, const float* flat, const std::string& path);
// Loads HF GPT-2 weights into a flat buffer laid out by ParamLayout(cfg); shapes must match.
// Accepts an optional "transformer." prefix and ignores HF's attention-mask buffers and the
// (tied) lm_head.weight.
void load_hf_safetensors(const ModelConfig& cfg, float* flat, const std::string& path);

// Writes DIR/model.safetensors and DIR/config.json.
void export_hf_model(const GPT& model, const std::string& dir);

}  // namespace cr
