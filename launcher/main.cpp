// chainrule: prepare token data, train, evaluate and sample decoder-only transformers.
// main() is the only place that catches errors: it prints one line and sets the exit status.
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "core/common/error.h"
#include "launcher/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"chainrule: train GPT-style decoder-only transformers"};
  app.require_subcommand(1);

  cr::PrepareOptions prep;
  auto* p = app.add_subcommand("prepare", "Tokenize text into train/val token shards");
  p->add_option("--input", prep.inputs,
                std::string("Text files or directories (default: ") + cr::kDefaultCorpus + ")");
  p->add_option("--tokenizer", prep.tokenizer, "byte or char")->capture_default_str();
  p->add_option("--out", prep.out, "Output data dir")->required();
  p->add_option("--val-fraction", prep.val_fraction, "Share of tokens for validation")
      ->capture_default_str();

  std::string config_path;
  std::vector<std::string> overrides;
  auto* t = app.add_subcommand("train", "Train a model from a YAML config");
  t->add_option("config", config_path, "YAML config, e.g. configs/default.yaml")->required();
  t->add_option("--set", overrides, "Override a key: --set train.lr=3e-4 (repeatable)");

  cr::EvalOptions ev;
  auto* e = app.add_subcommand("eval", "Validation loss, bits/token, bits/byte, perplexity");
  e->add_option("model", ev.model, "Run dir or model .safetensors")->required();
  e->add_option("--data", ev.data_dir, "Data dir (default: the run's data.dir)");
  e->add_option("--micro-batch", ev.micro_batch, "Sequences per forward pass")
      ->capture_default_str();
  e->add_flag("--json", ev.json, "Print one JSON object");

  cr::SampleOptions sa;
  auto* s = app.add_subcommand("sample", "Generate text with a trained model");
  s->add_option("model", sa.model, "Run dir or model .safetensors")->required();
  s->add_option("--prompt", sa.prompt, "Text to continue")->capture_default_str();
  s->add_option("--max-new-tokens", sa.max_new_tokens, "Tokens to generate")->capture_default_str();
  s->add_option("--temperature", sa.temperature, "0 = greedy")->capture_default_str();
  s->add_option("--top-k", sa.top_k, "Sample among the k likeliest (0 = all)")->capture_default_str();
  s->add_option("--seed", sa.seed, "Sampling seed")->capture_default_str();
  s->add_option("--data", sa.data_dir, "Data dir whose tokenizer to use");

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, like every other error; CLI11's own text spans two.
    fmt::print(stderr, "chainrule: error: {} (run with --help for usage)\n", e.what());
    return 2;
  }
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  cr::process_identity().host = host;

  try {
    if (*p) return cr::run_prepare(prep);
    if (*t) return cr::run_train(cr::load_config(config_path, overrides));
    if (*e) return cr::run_eval(ev);
    if (*s) return cr::run_sample(sa);
  } catch (const cr::InputError& err) {
    fmt::print(stderr, "chainrule: error: {}\n", err.message());
    return 2;
  } catch (const cr::Error& err) {
    const auto& id = cr::process_identity();
    fmt::print(stderr, "chainrule: internal error on rank {} ({}) at {}:{}: {}\n", id.rank,
               id.host, err.file(), err.line(), err.message());
    return 1;
  } catch (const std::exception& err) {
    fmt::print(stderr, "chainrule: error: {}\n", err.what());
    return 1;
  }
  return 0;
}
