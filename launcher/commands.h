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

// `chainrule score`: per-token surprisal (bits), rank and likeliest alternatives (score.cpp).
struct ScoreOptions {
  std::string model;      // run dir or .safetensors
  std::string data_dir;   // tokenizer source when the model has none beside it
  std::string input;      // a text file ("-": stdin); scored after an end-of-text token
  std::string tokens;     // or an llm.c token shard (.bin), scored as is
  int stride = 0;         // window step in tokens; 0: block_size / 2
  int micro_batch = 8;    // windows per forward pass
  int top = 5;            // alternatives listed per token
  bool json = false;      // JSON lines on stdout instead of the terminal heat map
  std::string html;       // also write a standalone HTML heat map here
  std::string color = "auto";  // terminal colours: auto | always | never
};
int run_score(const ScoreOptions& opt);

// `chainrule compress` / `decompress`: arithmetic coding with the model's next-token
// distribution (compress.cpp; the container format is documented there).
struct CompressOptions {
  std::string model;
  std::string data_dir;
  std::string in, out;
  int64_t chunk_bytes = 1 << 16;  // independent chunks, coded in parallel as one batch
  int batch = 0;                  // chunks per forward pass; 0: all of them, up to 64
  bool force = false;             // overwrite OUT
  int threads = 0;                // compress: OpenMP threads (0: as now); decompression uses the same
};
int run_compress(const CompressOptions& opt);
int run_decompress(const CompressOptions& opt);

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
