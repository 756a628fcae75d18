// `chainrule diagnose RUN_DIR`: after a job hung, which rank the others were waiting on and the
// collective it never started, computed from the flight records the ranks wrote to
// RUN_DIR/flight (parallel/comm/flight_recorder.h), with a per-rank table. `chainrule launch`
// uses report_unprinted_diagnosis when the job's rank 0 could not print the diagnosis itself.
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "core/common/error.h"
#include "core/common/log.h"
#include "launcher/commands.h"
#include "parallel/comm/flight_recorder.h"

namespace cr {

namespace fs = std::filesystem;

namespace {

int world_size_of(const std::vector<RankDump>& dumps) {
  int w = 0;
  for (const auto& d : dumps) w = std::max(w, d.world_size);
  return w;
}

double mtime_ms(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return -1;
  return (double)st.st_mtim.tv_sec * 1e3 + (double)st.st_mtim.tv_nsec / 1e6;
}

}  // namespace

int run_diagnose(const DiagnoseOptions& opt) {
  std::error_code ec;
  if (!fs::is_directory(opt.run_dir, ec))
    CR_INPUT_ERROR("{}: not a run directory (expected the job's run.dir)", opt.run_dir);
  const std::string dir = (fs::path(opt.run_dir) / "flight").string();
  const std::vector<RankDump> dumps = read_flight_dir(dir);
  if (dumps.empty())
    CR_INPUT_ERROR("{}: no flight records (rank-*.json): no rank of the job timed out or stalled",
                   dir);
  const int world = world_size_of(dumps);
  fmt::print("{}\n\n{}", diagnose(dumps, world).line, rank_table(dumps, world));
  return 0;
}

void report_unprinted_diagnosis(const std::string& run_dir, double job_start_ms) {
  const fs::path dir = fs::path(run_dir) / "flight";
  // Rank 0 wrote diagnosis.txt right after printing the line: nothing to add. (1 s of slack:
  // file times and the wall clock may round differently.)
  std::error_code ec;
  if (!fs::is_directory(dir, ec) || mtime_ms(dir / "diagnosis.txt") >= job_start_ms - 1000) return;
  try {
    const std::vector<RankDump> dumps = read_flight_dir(dir.string(), job_start_ms - 1000);
    if (dumps.empty()) return;  // the job failed for another reason
    fmt::print(stderr, "{}\n", diagnose(dumps, world_size_of(dumps)).line);
    std::fflush(stderr);
  } catch (const std::exception& e) {
    log::warn("cannot diagnose the job from its flight records: {}", e.what());
  }
}

}  // namespace cr
