// chainrule: prepare token data, train, evaluate and sample decoder-only transformers.
// main() is the only place that catches errors: it prints one line and sets the exit status.
#include <unistd.h>

#include <cstdlib>

#include <CLI/CLI.hpp>

#include "core/common/error.h"
#include "core/common/log.h"
#include "launcher/commands.h"
#include "launcher/distributed.h"

// OpenMP threads that finish a parallel region sleep instead of spinning, unless the user chose
// otherwise. Spinning threads of one process starve the threads of another on shared cores
// (ctest -j, several ranks per node oversubscribed): oneDNN's GEMM then stalled for good in our
// tests (7 of 120 runs of two concurrent 2-thread trainings), never with passive waiting, which
// is also as fast or faster here (GPT-2 124M: 447 vs 398 tok/s). libgomp reads the variable
// when it loads, before main, hence the re-exec.
void default_to_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("CR_NO_REEXEC")) return;
  ::setenv("OMP_WAIT_POLICY", "passive", 1);
  ::setenv("CR_NO_REEXEC", "1", 1);
  ::execv("/proc/self/exe", argv);  // only returns on failure: carry on with the default policy
}

// `score`, `compress` and `decompress`: the chain rule made visible.
struct ChainRuleCommands {
  CLI::App *so = nullptr, *cz = nullptr, *dz = nullptr;
};
ChainRuleCommands add_chain_rule_commands(CLI::App& app, cr::ScoreOptions& sc, cr::CompressOptions& co) {
  ChainRuleCommands c;
  auto& so = c.so;
  auto& cz = c.cz;
  auto& dz = c.dz;
  so = app.add_subcommand("score", "Per-token surprisal of a text: heat map, JSON lines or HTML");
  so->add_option("model", sc.model, "Run dir or model .safetensors")->required();
  auto* so_in = so->add_option("--input", sc.input, "Text file to score (- for stdin)");
  auto* so_tok = so->add_option("--tokens", sc.tokens, "Or an llm.c token shard (.bin), scored as is");
  so_in->excludes(so_tok);
  so->add_option("--stride", sc.stride,
                 "Window step in tokens (default: half the context): every token is scored once, "
                 "with at least context - stride tokens before it");
  so->add_option("--micro-batch", sc.micro_batch, "Windows per forward pass")->capture_default_str();
  so->add_option("--top", sc.top, "Alternatives listed per token")->capture_default_str();
  so->add_flag("--json", sc.json, "JSON lines: one per token, then a summary");
  so->add_option("--html", sc.html, "Also write a standalone HTML heat map to this file");
  so->add_option("--color", sc.color, "Terminal colours: auto, always or never")->capture_default_str();
  so->add_option("--data", sc.data_dir, "Data dir whose tokenizer to use");

  cz = app.add_subcommand("compress", "Lossless compression by arithmetic coding with the model");
  dz = app.add_subcommand("decompress", "Undo `chainrule compress` (same model, binary and CPU type)");
  for (auto* sub : {cz, dz}) {
    sub->add_option("model", co.model, "Run dir or model .safetensors")->required();
    sub->add_option("in", co.in, "Input file (- for stdin)")->required();
    sub->add_option("out", co.out, "Output file (- for stdout)")->required();
    sub->add_flag("--force", co.force, "Overwrite OUT if it exists");
    sub->add_option("--data", co.data_dir, "Data dir whose tokenizer to use");
  }
  cz->add_option("--chunk-bytes", co.chunk_bytes, "Bytes per independently coded chunk")
      ->capture_default_str();
  cz->add_option("--batch", co.batch, "Chunks per forward pass (default: all, up to 64)");
  cz->add_option("--threads", co.threads,
                 "Threads to code with (default: OMP_NUM_THREADS or all cores); decompression uses "
                 "the same number, so pick what the decompressing machine has");

  return c;
}

int main(int argc, char** argv) {
  default_to_passive_omp_wait(argv);
  CLI::App app{"chainrule: train GPT-style decoder-only transformers"};
  app.require_subcommand(1);

  cr::PrepareOptions prep;
  auto* p = app.add_subcommand("prepare", "Tokenize text into train/val token shards");
  p->add_option("--input", prep.inputs,
                std::string("Text files or directories (default: ") + cr::kDefaultCorpus + ")");
  p->add_option("--tokenizer", prep.tokenizer,
                "byte, char, hf:PATH/tokenizer.json, sp:PATH.model, or sentencepiece (trained "
                "on the corpus, with --vocab-size)")
      ->capture_default_str();
  p->add_option("--vocab-size", prep.vocab_size, "Vocabulary of --tokenizer sentencepiece");
  p->add_option("--out", prep.out, "Output data dir")->required();
  p->add_option("--val-fraction", prep.val_fraction, "Share of tokens for validation")
      ->capture_default_str();
  p->add_option("--name", prep.name, "Shard name prefix: NAME_train_000000.bin")
      ->capture_default_str();
  p->add_option("--shard-tokens", prep.shard_tokens, "Tokens per shard")->capture_default_str();
  p->add_option("--format", prep.format,
                "text (documents) or pairs (.jsonl prompt/completion, with loss masks)")
      ->capture_default_str();
  p->add_option("--text-field", prep.text_field, ".jsonl field holding a document")
      ->capture_default_str();
  p->add_option("--prompt-field", prep.prompt_field, "--format pairs: the prompt's field")
      ->capture_default_str();
  p->add_option("--completion-field", prep.completion_field,
                "--format pairs: the completion's field")
      ->capture_default_str();
  p->add_option("--threads", prep.threads, "Tokenizer threads (default: all cores)");
  p->add_option("--piece-bytes", prep.piece_bytes,
                "Large documents are encoded in pieces of about this many bytes, cut where the "
                "tokens cannot change")
      ->capture_default_str();

  std::string config_path;
  std::vector<std::string> overrides;
  auto* t = app.add_subcommand("train", "Train a model from a YAML config");
  t->add_option("config", config_path, "YAML config, e.g. configs/default.yaml")->required();
  t->add_option("--set", overrides, "Override a key: --set train.lr=3e-4 (repeatable)");

  cr::LaunchOptions la;
  auto* l = app.add_subcommand("launch", "Train with N ranks on this machine (through mpirun)");
  l->add_option("--nproc", la.nproc, "Number of ranks")->required();
  l->add_option("--threads", la.threads, "Threads per rank (default: cores / nproc)");
  l->add_option("config", la.config, "YAML config")->required();
  l->add_option("--set", la.overrides, "Override a key (repeatable)");
  l->add_option("--max-restarts", la.max_restarts,
                "Restart a failed job from its latest checkpoint up to K times")
      ->capture_default_str();

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
  s->add_option("--prompt", sa.prompt, "Text to continue (default: the end-of-text token)");
  s->add_flag("--prefix-lm", sa.prefix_lm,
              "Encode the prompt bidirectionally (a model trained with model.prefix_lm)");
  s->add_option("--max-new-tokens", sa.max_new_tokens, "Tokens to generate")->capture_default_str();
  s->add_option("--temperature", sa.temperature, "0 = greedy")->capture_default_str();
  s->add_option("--top-k", sa.top_k, "Sample among the k likeliest (0 = all)")->capture_default_str();
  s->add_option("--seed", sa.seed, "Sampling seed")->capture_default_str();
  s->add_option("--data", sa.data_dir, "Data dir whose tokenizer to use");

  cr::ScoreOptions sc;
  cr::CompressOptions co;
  const auto [so, cz, dz] = add_chain_rule_commands(app, sc, co);

  cr::CkptOptions ck;
  auto* c = app.add_subcommand("ckpt", "Inspect, verify or export checkpoints");
  c->require_subcommand(1);
  auto* ci = c->add_subcommand("inspect", "Step, layout, tensors and sizes of a checkpoint");
  auto* cv = c->add_subcommand("verify", "Full checksum pass; exit 0 when sound, 1 when damaged");
  auto* cx = c->add_subcommand("export", "Write the gathered model as safetensors + config.json");
  for (auto* sub : {ci, cv, cx})
    sub->add_option("dir", ck.dir, "A checkpoint (step_N) or a checkpoint.dir (its newest)")
        ->required();
  cx->add_option("--out", ck.out, "Output directory")->required();

  cr::DiagnoseOptions dg;
  auto* dgc = app.add_subcommand(
      "diagnose", "After a hang: which rank the others waited on, from RUN_DIR/flight");
  dgc->add_option("run_dir", dg.run_dir, "The job's run.dir")->required();

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

  cr::ParallelContext ctx;
  // A failure on one rank of a distributed job must end every rank: report, then abort the job.
  auto fail = [&](int code) {
    if (ctx.mpi) cr::abort_processes(code);
    return code;
  };
  try {
    if (*p) return cr::run_prepare(prep);
    if (*l) return cr::run_launch(la);
    if (*t) {
      const cr::Config cfg = cr::load_config(config_path, overrides);
      cr::init_processes(ctx, cfg);  // parallel.bootstrap: MPI, or file:DIR without it
      const int rc = cr::run_train(cfg, ctx);
      cr::release_groups(ctx);  // communicators go before MPI does, children before parents
      cr::finalize_processes();
      return rc;
    }
    if (*e) return cr::run_eval(ev);
    if (*s) return cr::run_sample(sa);
    if (*so) {
      if (sc.input.empty() == sc.tokens.empty())
        CR_INPUT_ERROR("score: give one of --input FILE or --tokens SHARD.bin");
      return cr::run_score(sc);
    }
    if (*cz) return cr::run_compress(co);
    if (*dz) return cr::run_decompress(co);
    if (*ci) return cr::run_ckpt_inspect(ck);
    if (*cv) return cr::run_ckpt_verify(ck);
    if (*cx) return cr::run_ckpt_export(ck);
    if (*dgc) return cr::run_diagnose(dg);
  } catch (const cr::InputError& err) {
    fmt::print(stderr, "{}chainrule: error: {}\n", cr::log::rank_prefix(), err.message());
    return fail(2);
  } catch (const cr::Error& err) {
    const auto& id = cr::process_identity();
    fmt::print(stderr, "chainrule: internal error on rank {} ({}) at {}:{}: {}\n", id.rank,
               id.host, err.file(), err.line(), err.message());
    return fail(1);
  } catch (const std::exception& err) {
    fmt::print(stderr, "{}chainrule: error: {}\n", cr::log::rank_prefix(), err.what());
    return fail(1);
  }
  return 0;
}
