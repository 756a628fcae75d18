// The chainrule subcommands, one function each; main.cpp only parses the command line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launcher/config.h"

namespace cr {

struct PrepareOptions {
  std::vector<std::string> inputs;  // files or directories; empty: the embedded default corpus
  std::string tokenizer = "char";   // byte | char | hf:PATH | sp:PATH | sentencepiece
  std::string out;
  double val_fraction = 0.1;
  std::string name = "data";        // shard prefix: data_train_000000.bin
  int64_t shard_tokens = 100'000'000;  // llm.c's shard size
  std::string format = "text";      // text | pairs (.jsonl prompt/completion + loss masks)
  std::string text_field = "text";  // .jsonl, --format text
  std::string prompt_field = "prompt", completion_field = "completion";  // --format pairs
  int vocab_size = 0;               // --tokenizer sentencepiece
  int threads = 0;                  // 0: all cores (OMP_NUM_THREADS)
  int64_t piece_bytes = 1 << 20;    // a large document is encoded in pieces of about this size
};
int run_prepare(const PrepareOptions& opt);

struct ParallelContext;
int run_train(const Config& cfg, ParallelContext& ctx);

struct LaunchOptions {
  int nproc = 2;
  std::string config;
  std::vector<std::string> overrides;
  int threads = 0;  // per rank; 0: cores / nproc
  int max_restarts = 0;  // restart a failed job up to this many times (needs checkpoint.dir)
};
int run_launch(const LaunchOptions& opt);

struct EvalOptions {
  std::string model;     // run dir or .safetensors file
  std::string data_dir;  // empty: the run's data.dir
  int micro_batch = 8;
  bool json = false;
};
int run_eval(const EvalOptions& opt);

struct SampleOptions {
  std::string model;
  std::string data_dir;
  std::string prompt;  // empty: start from the end-of-text token (sample.cpp start_tokens)
  int max_new_tokens = 200;
  float temperature = 0.8f;
  int top_k = 40;
  uint64_t seed = 42;
  // Read the prompt bidirectionally (all its tokens at once), as a model trained with
  // model.prefix_lm saw its prompts; then generate causally with the KV cache.
  bool prefix_lm = false;
};
int run_sample(const SampleOptions& opt);

struct CkptOptions {
  std::string dir;  // a checkpoint (step_N/) or a checkpoint.dir
  std::string out;  // export: output directory
};
int run_ckpt_inspect(const CkptOptions& opt);
int run_ckpt_verify(const CkptOptions& opt);  // 0: sound, 1: damaged
int run_ckpt_export(const CkptOptions& opt);

struct DiagnoseOptions {
  std::string run_dir;  // a job's run.dir: reads run_dir/flight/rank-*.json
};
// Prints the desync diagnosis and a per-rank table (0), or throws InputError naming the path.
int run_diagnose(const DiagnoseOptions& opt);
// After a failed job: prints the diagnosis from the flight records its ranks wrote since
// `job_start_ms` (wall clock), unless rank 0 already did (diagnosis.txt). Never throws.
void report_unprinted_diagnosis(const std::string& run_dir, double job_start_ms);

// Where the embedded default corpus lives (Debian's fortunes package).
constexpr const char* kDefaultCorpus = "/usr/share/games/fortunes";

}  // namespace cr
