#include "launcher/config.h"

#include <yaml-cpp/yaml.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <variant>

#include "core/common/error.h"

namespace cr {

namespace fs = std::filesystem;

namespace {

// ----------------------------------------------------------------------------
// Schema: one row per key.

struct Field {
  const char* key;
  std::variant<int*, int64_t*, float*, std::string*, bool*, ModelFamily*> target;
  double min, max;  // inclusive range for numbers
  const char* expect;  // what a valid value looks like, for error messages
};

std::vector<Field> schema(Config& c) {
  constexpr double kBig = 1e15;
  return {
      {"model.n_layer", &c.model.n_layer, 1, 1024, "an integer in [1, 1024]"},
      {"model.n_head", &c.model.n_head, 1, 4096, "an integer in [1, 4096]"},
      {"model.n_embd", &c.model.n_embd, 1, 65536, "an integer in [1, 65536]"},
      {"model.block_size", &c.model.block_size, 1, 1 << 20, "an integer in [1, 1048576]"},
      {"model.vocab_size", &c.model.vocab_size, 0, 1 << 24,
       "an integer in [0, 16777216] (0: take it from data.dir's tokenizer)"},
      {"model.family", &c.model.family, 0, 0, "gpt2 or llama"},
      {"model.n_kv_head", &c.model.n_kv_head, 0, 4096,
       "an integer in [0, 4096] dividing model.n_head (0: model.n_head)"},
      {"model.ffn_hidden", &c.model.ffn_hidden, 0, 1 << 20,
       "an integer in [0, 1048576] (0: the family's default)"},
      {"model.rope_theta", &c.model.rope_theta, 1e-30, 1e12, "a number in (0, 1e12] (llama)"},
      {"model.norm_eps", &c.model.norm_eps, 1e-30, 1, "a number in (0, 1]"},
      {"model.tie_embeddings", &c.model.tie_embeddings, 0, 0,
       "true or false (LM head shares the token embedding)"},
      {"model.bias", &c.model.bias, 0, 0, "true or false (biases in the linear layers)"},
      {"model.prefix_lm", &c.prefix_lm, 0, 0,
       "true or false (bidirectional attention inside each prompt)"},
      {"train.global_batch", &c.train.global_batch, 1, 1 << 24, "a positive integer (sequences)"},
      {"train.micro_batch", &c.train.micro_batch, 1, 1 << 20, "a positive integer (sequences)"},
      {"train.max_steps", &c.train.max_steps, 0, 1e9, "an integer >= 0"},
      {"train.lr", &c.train.lr, 0, 10, "a number in [0, 10]"},
      {"train.min_lr", &c.train.min_lr, 0, 10, "a number in [0, 10]"},
      {"train.warmup_steps", &c.train.warmup_steps, 0, 1e9, "an integer >= 0"},
      {"train.weight_decay", &c.train.weight_decay, 0, 10, "a number in [0, 10]"},
      {"train.grad_clip", &c.train.grad_clip, 0, kBig, "a number >= 0 (0 disables clipping)"},
      {"train.beta1", &c.train.beta1, 0, 0.999999, "a number in [0, 1)"},
      {"train.beta2", &c.train.beta2, 0, 0.999999, "a number in [0, 1)"},
      {"train.eps", &c.train.eps, 1e-30, 1, "a number in (0, 1]"},
      {"train.seed", &c.train.seed, 0, 9.2e18, "an integer >= 0"},
      {"train.init_from", &c.train.init_from, 0, 0, "a path to GPT-2 safetensors, or empty"},
      {"train.recompute", &c.train.recompute, 0, 0,
       "true or false (recompute GELU and LayerNorm outputs in backward)"},
      {"train.device", &c.train.device, 0, 0,
       "cpu or cuda (empty: cuda when a GPU is present, else cpu)"},
      {"train.dtype", &c.train.dtype, 0, 0,
       "fp32 or bf16 (bf16: activations and GEMMs in bfloat16, master weights fp32)"},
      {"train.stop_after_step", &c.train.stop_after_step, 0, 1e9,
       "an integer >= 0 (0: run to train.max_steps)"},
      {"data.dir", &c.data.dir, 0, 0, "a directory made by `chainrule prepare`"},
      {"data.train_files", &c.data.train_files, 0, 0,
       "a glob of train shard files, relative to data.dir or absolute (empty: *_train_*.bin)"},
      {"data.val_files", &c.data.val_files, 0, 0,
       "a glob of val shard files, relative to data.dir or absolute (empty: *_val_*.bin)"},
      {"data.document_mask", &c.data.document_mask, 0, 0,
       "true or false (attention does not cross an end-of-text token)"},
      {"run.dir", &c.run.dir, 0, 0, "a directory for metrics and the final model"},
      {"run.log_every", &c.run.log_every, 1, 1e9, "a positive integer (steps)"},
      {"run.eval_every", &c.run.eval_every, 0, 1e9, "an integer >= 0 (steps; 0: only at the end)"},
      {"run.eval_batches", &c.run.eval_batches, 1, 1e9, "a positive integer (micro-batches)"},
      {"run.final_eval_tokens", &c.run.final_eval_tokens, 0, kBig,
       "an integer >= 0 (tokens; 0: the whole val split)"},
      {"run.tensorboard", &c.run.tensorboard, 0, 0,
       "true or false (TensorBoard event files in run.dir)"},
      {"run.peak_tflops", &c.run.peak_tflops, 0, 1e9,
       "a number >= 0 (one rank's peak TFLOP/s, for MFU; 0: no MFU)"},
      {"parallel.tensor", &c.parallel.tensor, 1, 4096, "an integer in [1, 4096] dividing the rank count"},
      {"parallel.timeout_s", &c.parallel.timeout_s, 0.001, 1e6, "seconds in (0, 1e6]"},
      {"parallel.bucket_mb", &c.parallel.bucket_mb, 0.001, 1e5, "megabytes in (0, 1e5]"},
      {"parallel.overlap", &c.parallel.overlap, 0, 0,
       "true or false (overlap the gradient reduction with backward)"},
      {"parallel.zero", &c.parallel.zero, 0, 1, "0 or 1 (1: shard AdamW's state over data-parallel ranks)"},
      {"parallel.bootstrap", &c.parallel.bootstrap, 0, 0, "mpi or file:DIR"},
      {"parallel.flight_records", &c.parallel.flight_records, 1, 1e6,
       "a positive integer (collectives the flight recorder keeps per rank)"},
      {"checkpoint.dir", &c.checkpoint.dir, 0, 0, "a directory for checkpoints, or empty (none)"},
      {"checkpoint.every", &c.checkpoint.every, 0, 1e9, "an integer >= 0 (steps; 0: only at the end)"},
      {"checkpoint.keep_last", &c.checkpoint.keep_last, 0, 1e6, "an integer >= 0 (0: keep all)"},
  };
}

// ----------------------------------------------------------------------------
// Parsing one value.

std::string scalar_text(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  return n.IsMap() ? "a mapping" : n.IsSequence() ? "a list" : "nothing";
}

template <typename Int>
Int parse_int(const YAML::Node& n, const Field& f, const std::string& where) {
  const std::string text = scalar_text(n);
  try {
    if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
    const double d = n.as<double>();  // accepts 1e3; exactness comes from the integer parse below
    if (d != std::floor(d)) throw YAML::BadConversion(n.Mark());
    if (d < f.min || d > f.max)
      CR_INPUT_ERROR("{}: {} = {} is out of range, expected {}", where, f.key, text, f.expect);
    int64_t exact;
    if (YAML::convert<int64_t>::decode(n, exact)) return (Int)exact;  // 2^53 < seeds are exact
    return (Int)d;
  } catch (const YAML::BadConversion&) {
    CR_INPUT_ERROR("{}: {} = '{}' has the wrong type, expected {}", where, f.key, text, f.expect);
  }
}

float parse_float(const YAML::Node& n, const Field& f, const std::string& where) {
  const std::string text = scalar_text(n);
  double d;
  try {
    if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
    d = n.as<double>();
  } catch (const YAML::BadConversion&) {
    CR_INPUT_ERROR("{}: {} = '{}' has the wrong type, expected {}", where, f.key, text, f.expect);
  }
  if (!std::isfinite(d) || d < f.min || d > f.max)
    CR_INPUT_ERROR("{}: {} = {} is out of range, expected {}", where, f.key, text, f.expect);
  return (float)d;
}

void assign(const Field& f, const YAML::Node& n, const std::string& where) {
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (!n.IsScalar() && !n.IsNull())
            CR_INPUT_ERROR("{}: {} is {}, expected {}", where, f.key, scalar_text(n), f.expect);
          *p = n.IsNull() ? "" : n.Scalar();
        } else if constexpr (std::is_same_v<T, bool>) {
          bool v = false;
          if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v))
            CR_INPUT_ERROR("{}: {} = '{}' has the wrong type, expected {}", where, f.key,
                           scalar_text(n), f.expect);
          *p = v;
        } else if constexpr (std::is_same_v<T, ModelFamily>) {
          const std::string name = n.IsScalar() ? n.Scalar() : "";
          if (name == "gpt2") {
            *p = ModelFamily::GPT2;
          } else if (name == "llama") {
            *p = ModelFamily::Llama;
          } else {
            CR_INPUT_ERROR("{}: {} = '{}' is not a model family, expected {}", where, f.key,
                           scalar_text(n), f.expect);
          }
        } else if constexpr (std::is_same_v<T, float>) {
          *p = parse_float(n, f, where);
        } else {
          *p = parse_int<T>(n, f, where);
        }
      },
      f.target);
}

std::string located(const std::string& file, const YAML::Mark& m) {
  return m.is_null() ? file : file + ":" + std::to_string(m.line + 1);
}

// Walks the YAML tree, assigning every leaf to its schema field.
void walk(const YAML::Node& node, const std::string& prefix, const std::string& file,
          const std::map<std::string, const Field*>& fields, std::map<std::string, std::string>& seen) {
  std::map<std::string, std::string> here;  // YAML allows duplicate keys silently; we do not
  for (auto it = node.begin(); it != node.end(); ++it) {
    const std::string key = prefix.empty() ? it->first.Scalar() : prefix + "." + it->first.Scalar();
    const std::string where = located(file, it->first.Mark());
    if (!here.emplace(key, where).second)
      CR_INPUT_ERROR("{}: duplicate key '{}' (first set at {})", where, key, here[key]);
    // A copy (a Node is a handle): it->second belongs to a temporary the iterator's operator->
    // returns, gone at the end of this statement (AddressSanitizer: stack-use-after-scope).
    const YAML::Node value = it->second;
    auto f = fields.find(key);
    if (f != fields.end()) {
      assign(*f->second, value, where);
      seen[key] = where;
      continue;
    }
    bool is_section = false;
    for (const auto& [k, unused] : fields) is_section |= k.rfind(key + ".", 0) == 0;
    if (is_section && value.IsMap()) {
      walk(value, key, file, fields, seen);
    } else if (is_section) {
      CR_INPUT_ERROR("{}: {} is {}, expected a mapping of keys", where, key, scalar_text(value));
    } else {
      CR_INPUT_ERROR("{}: unknown key '{}'", where, key);
    }
  }
}

// ----------------------------------------------------------------------------
// Checks that involve more than one key.

// What the family decides when the config does not say: llama has no biases and an untied LM
// head (LlamaForCausalLM's defaults), gpt2 has both (GPT2LMHeadModel).
void apply_family_defaults(Config& c, const std::map<std::string, std::string>& seen) {
  const bool gpt2 = c.model.family == ModelFamily::GPT2;
  if (!seen.count("model.tie_embeddings")) c.model.tie_embeddings = gpt2;
  if (!seen.count("model.bias")) c.model.bias = gpt2;
}

// The family's own rules, each naming both values.
void validate_family(const Config& c, const std::function<std::string(const char*)>& at) {
  const ModelConfig& m = c.model;
  if (m.n_kv_head > m.n_head)
    CR_INPUT_ERROR("{}: model.n_kv_head = {} exceeds model.n_head = {}", at("model.n_kv_head"),
                   m.n_kv_head, m.n_head);
  if (m.n_kv_head > 0 && m.n_head % m.n_kv_head != 0)
    CR_INPUT_ERROR("{}: model.n_kv_head = {} does not divide model.n_head = {} (each key/value "
                   "head serves a whole group of query heads)",
                   at("model.n_kv_head"), m.n_kv_head, m.n_head);
  if (m.family == ModelFamily::GPT2) {
    if (m.n_kv_head != 0 && m.n_kv_head != m.n_head)
      CR_INPUT_ERROR("{}: model.n_kv_head = {} with model.family = gpt2, which has no grouped-query "
                     "attention: expected 0 or model.n_head = {}",
                     at("model.n_kv_head"), m.n_kv_head, m.n_head);
    if (!m.bias)
      CR_INPUT_ERROR("{}: model.bias = false with model.family = gpt2: Hugging Face GPT-2 has no "
                     "model without biases (expected true, or model.family = llama)",
                     at("model.bias"));
  } else if (m.head_size() % 2 != 0) {
    CR_INPUT_ERROR("{}: model.family = llama needs an even head size for rotary positions, but "
                   "model.n_embd / model.n_head = {} / {} = {}",
                   at("model.n_head"), m.n_embd, m.n_head, m.head_size());
  }
}

void validate(const Config& c, const std::map<std::string, std::string>& seen) {
  auto at = [&](const char* key) {
    auto it = seen.find(key);
    return it != seen.end() ? it->second : c.source;
  };
  if (c.model.n_layer == 0 || c.model.n_head == 0 || c.model.n_embd == 0 || c.model.block_size == 0)
    CR_INPUT_ERROR("{}: model.n_layer, model.n_head, model.n_embd and model.block_size are required",
                   c.source);
  if (c.model.n_embd % c.model.n_head != 0)
    CR_INPUT_ERROR("{}: model.n_head = {} does not divide model.n_embd = {}", at("model.n_head"),
                   c.model.n_head, c.model.n_embd);
  validate_family(c, at);
  if (!c.train.device.empty() && c.train.device != "cpu" && c.train.device != "cuda")
    CR_INPUT_ERROR("{}: train.device = '{}' is not a device, expected cpu or cuda (or empty: "
                   "cuda when a GPU is present)", at("train.device"), c.train.device);
  if (c.parallel.bootstrap != "mpi" &&
      (c.parallel.bootstrap.rfind("file:", 0) != 0 || c.parallel.bootstrap.size() == 5))
    CR_INPUT_ERROR("{}: parallel.bootstrap = '{}' is not a bootstrap, expected mpi or file:DIR (a "
                   "directory every rank can see)", at("parallel.bootstrap"), c.parallel.bootstrap);
  if (c.train.dtype != "fp32" && c.train.dtype != "bf16")
    CR_INPUT_ERROR("{}: train.dtype = '{}' is not a training dtype, expected fp32 or bf16",
                   at("train.dtype"), c.train.dtype);
  if (c.train.global_batch % c.train.micro_batch != 0)
    CR_INPUT_ERROR("{}: train.global_batch = {} is not a multiple of train.micro_batch = {}",
                   at("train.global_batch"), c.train.global_batch, c.train.micro_batch);
  if (c.model.n_head % c.parallel.tensor != 0)
    CR_INPUT_ERROR("{}: parallel.tensor = {} does not divide model.n_head = {}",
                   at("parallel.tensor"), c.parallel.tensor, c.model.n_head);
  if (c.train.min_lr > c.train.lr)
    CR_INPUT_ERROR("{}: train.min_lr = {} exceeds train.lr = {}", at("train.min_lr"),
                   c.train.min_lr, c.train.lr);
  if (c.data.dir.empty())
    CR_INPUT_ERROR("{}: data.dir is required (a directory made by `chainrule prepare`)", at("data.dir"));
  if (c.run.dir.empty()) CR_INPUT_ERROR("{}: run.dir must not be empty", at("run.dir"));
}

}  // namespace

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  Config c;
  c.source = path;
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    CR_INPUT_ERROR("{}: cannot open config file", path);
  } catch (const YAML::ParserException& e) {
    CR_INPUT_ERROR("{}: malformed YAML: {}", located(path, e.mark), e.msg);
  }
  if (!root.IsNull() && !root.IsMap())
    CR_INPUT_ERROR("{}: the config must be a mapping of sections (model, train, data, run, parallel, checkpoint)",
                   path);

  auto fields_vec = schema(c);
  std::map<std::string, const Field*> fields;
  for (const auto& f : fields_vec) fields[f.key] = &f;
  std::map<std::string, std::string> seen;
  if (root.IsMap()) walk(root, "", path, fields, seen);

  for (const auto& o : overrides) {
    const auto eq = o.find('=');
    if (eq == std::string::npos || eq == 0)
      CR_INPUT_ERROR("--set {}: expected KEY=VALUE with a dotted key, e.g. train.lr=3e-4", o);
    const std::string key = o.substr(0, eq), value = o.substr(eq + 1);
    auto f = fields.find(key);
    if (f == fields.end()) CR_INPUT_ERROR("--set {}: unknown key '{}'", o, key);
    // A text key takes an unquoted value as typed: globs such as *.bin, {a,b}.bin or [ab]*.bin
    // would otherwise read as a YAML alias, mapping or list. A quoted value is YAML's.
    const bool is_text = std::holds_alternative<std::string*>(f->second->target);
    const bool quoted = !value.empty() && (value[0] == '"' || value[0] == '\'');
    YAML::Node n;
    try {
      n = is_text && !value.empty() && !quoted ? YAML::Node(value) : YAML::Load(value);
    } catch (const YAML::ParserException& e) {
      CR_INPUT_ERROR("--set {}: malformed value: {}", o, e.msg);
    }
    assign(*f->second, n, "--set " + o);
    seen[key] = "--set " + o;
  }
  apply_family_defaults(c, seen);
  validate(c, seen);
  return c;
}

std::string config_to_yaml(const Config& cfg) {
  Config copy = cfg;
  YAML::Node root;
  for (const auto& f : schema(copy)) {
    const std::string key = f.key;
    const auto dot = key.find('.');
    YAML::Node section = root[key.substr(0, dot)];
    std::visit(
        [&](auto* p) {
          if constexpr (std::is_same_v<decltype(p), float*>)  // shortest decimal: 0.003, not 0.00300000003
            section[key.substr(dot + 1)] = YAML::Load(fmt::format("{}", *p));
          else if constexpr (std::is_same_v<decltype(p), ModelFamily*>)
            section[key.substr(dot + 1)] = family_name(*p);
          else
            section[key.substr(dot + 1)] = *p;
        },
        f.target);
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

}  // namespace cr

namespace cr {

std::vector<std::string> config_warnings(const Config& c) {
  std::vector<std::string> out;
  // lr_at() ramps lr * (step + 1) / warmup_steps over steps 0 .. max_steps - 1, so with a warmup
  // longer than the run the highest learning rate used is lr * max_steps / warmup_steps.
  const TrainSettings& t = c.train;
  if (t.max_steps > 0 && t.warmup_steps > t.max_steps)
    out.push_back(fmt::format(
        "train.warmup_steps = {} exceeds train.max_steps = {}: the learning rate never reaches "
        "its peak train.lr = {:g} (it stops at {:g}, {}/{} of it)",
        t.warmup_steps, t.max_steps, t.lr, t.lr * (double)t.max_steps / t.warmup_steps,
        t.max_steps, t.warmup_steps));
  return out;
}

namespace {

// Creates DIR when missing, then proves a file can be created in it: permission bits alone do
// not say (root ignores them; a read-only mount or a full quota does not show in them).
void check_writable_dir(const Config& c, const char* key, const std::string& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    CR_INPUT_ERROR("{}: {} '{}' exists and is not a directory", c.source, key, dir);
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir, ec))
    CR_INPUT_ERROR("{}: {} '{}': cannot create the directory: {}", c.source, key, dir,
                   ec ? ec.message() : "a file is in the way");
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);  // ranks of several hosts may share dir and pid
  const fs::path probe =
      fs::path(dir) / fmt::format(".chainrule-write-probe.{}.{}", host, (long)::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    CR_INPUT_ERROR("{}: {} '{}' is not writable: cannot create a file in it: {}", c.source, key,
                   dir, std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

}  // namespace

void check_output_dirs(const Config& c) {
  check_writable_dir(c, "run.dir", c.run.dir);
  if (!c.checkpoint.dir.empty()) check_writable_dir(c, "checkpoint.dir", c.checkpoint.dir);
}

void validate_layout(const Config& c, int world) {
  const int tp = c.parallel.tensor;
  if (world % tp != 0)
    CR_INPUT_ERROR("{}: parallel.tensor = {} does not divide the number of ranks {}", c.source, tp,
                   world);
  const int dp = world / tp;
  if (c.train.global_batch % (c.train.micro_batch * dp) != 0)
    CR_INPUT_ERROR("{}: train.global_batch = {} is not a multiple of train.micro_batch x data-parallel "
                   "ranks = {} x {} (ranks {} / parallel.tensor {})",
                   c.source, c.train.global_batch, c.train.micro_batch, dp, world, tp);
  // Tensor parallelism splits the key/value heads as well as the query heads.
  if (c.model.kv_heads() % tp != 0)
    CR_INPUT_ERROR("{}: parallel.tensor = {} does not divide model.n_kv_head = {}", c.source, tp,
                   c.model.kv_heads());
  // ... and the MLP's hidden units (fc / gate, up column-parallel).
  if (c.model.ffn_hidden_size() % tp != 0)
    CR_INPUT_ERROR("{}: parallel.tensor = {} does not divide the MLP width model.ffn_hidden = {}{}",
                   c.source, tp, c.model.ffn_hidden_size(),
                   c.model.ffn_hidden > 0 ? "" : " (the family's default)");
}

}  // namespace cr
