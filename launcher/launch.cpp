// `chainrule launch`: single-node dev mode. Validates the config, then runs N ranks of
// `chainrule train` on this machine through mpirun and returns the job's exit status.
// Threads: ranks x threads <= cores, so BLAS and OpenMP never oversubscribe.
// Signals: the first SIGTERM or SIGUSR1 becomes a SIGUSR1 to mpirun, which forwards it to every
// rank: they save a checkpoint at the next step boundary and exit 0 (mpirun itself turns a
// SIGTERM into a kill within a second). A second SIGTERM, or SIGINT, is forwarded as is.
// --max-restarts K: a job that fails (not one stopped on request) is started again, up to K
// times; with checkpoint.dir set, each restart resumes from the latest committed checkpoint.
// A failed job whose ranks left flight records (run.dir/flight) but no diagnosis gets it printed
// here (see flight_recorder.h).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "core/common/error.h"
#include "core/common/log.h"
#include "launcher/commands.h"
#include "parallel/comm/flight_recorder.h"

extern char** environ;

namespace cr {

namespace {

volatile sig_atomic_t g_child = 0;
volatile sig_atomic_t g_stop_requests = 0;

void forward_signal(int sig) {
  const int n = g_stop_requests;
  g_stop_requests = n + 1;
  if (sig != SIGINT && n == 0) sig = SIGUSR1;  // the first request: save and stop
  if (g_child > 0) ::kill(g_child, sig);
}

// Runs argv to completion; returns its exit status (128 + signal when killed).
int run_child(std::vector<std::string> args) {
  const pid_t pid = ::fork();
  if (pid < 0) CR_THROW("fork failed: {}", std::strerror(errno));
  if (pid == 0) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "chainrule: error: cannot run mpirun: %s (apt-get install openmpi-bin)\n",
                 std::strerror(errno));
    ::_exit(127);
  }
  g_child = pid;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child = 0;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace

int run_launch(const LaunchOptions& opt) {
  if (opt.nproc < 1) CR_INPUT_ERROR("--nproc {}: expected a positive number of ranks", opt.nproc);
  const Config cfg = load_config(opt.config, opt.overrides);
  validate_layout(cfg, opt.nproc);  // fail here, before any rank starts
  if (opt.max_restarts < 0)
    CR_INPUT_ERROR("--max-restarts {}: expected a number >= 0", opt.max_restarts);
  if (opt.max_restarts > 0 && cfg.checkpoint.dir.empty())
    CR_INPUT_ERROR("--max-restarts {}: {} has no checkpoint.dir, so a restart would start again "
                   "from step 0; set checkpoint.dir (and checkpoint.every)",
                   opt.max_restarts, opt.config);

  const int cores = (int)std::max(1u, std::thread::hardware_concurrency());
  const int threads = opt.threads > 0 ? opt.threads : std::max(1, cores / opt.nproc);
  char exe[4096] = {};
  const ssize_t len = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (len <= 0) CR_THROW("cannot find this executable: {}", std::strerror(errno));

  std::vector<std::string> args = {"mpirun", "-np", std::to_string(opt.nproc), "--bind-to", "none"};
  if (opt.nproc > cores) args.push_back("--oversubscribe");
  if (::geteuid() == 0) args.push_back("--allow-run-as-root");
  const std::string t = std::to_string(threads);
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  for (const std::string& v : {"OMP_NUM_THREADS=" + t, "OPENBLAS_NUM_THREADS=" + t,
                               std::string("OMP_WAIT_POLICY=") + (wait ? wait : "passive")}) {
    args.push_back("-x");
    args.push_back(v);
  }
  ::setenv("CR_RESTART_COUNT", "0", 1);  // which attempt this is; the ranks can tell
  for (char** e = environ; *e; e++)  // our own knobs (and test hooks) reach every rank
    if (std::strncmp(*e, "CR_", 3) == 0) {
      args.push_back("-x");
      args.push_back(std::string(*e).substr(0, std::string(*e).find('=')));
    }
  args.insert(args.end(), {exe, "train", opt.config});
  for (const auto& o : opt.overrides) args.insert(args.end(), {"--set", o});
  log::info("launching {} ranks x {} threads: {}", opt.nproc, threads, [&] {
    std::string s;
    for (const auto& a : args) s += (s.empty() ? "" : " ") + a;
    return s;
  }());

  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGUSR1, &sa, nullptr);
  for (int attempt = 0;; attempt++) {
    ::setenv("CR_RESTART_COUNT", std::to_string(attempt).c_str(), 1);  // mpirun's -x reads it now
    const double started_ms = wall_ms();
    const int rc = run_child(args);
    // A hung job whose rank 0 could not print the diagnosis (it was the one stuck, or died).
    if (rc != 0 && g_stop_requests == 0) report_unprinted_diagnosis(cfg.run.dir, started_ms);
    if (rc == 0 || g_stop_requests > 0 || attempt >= opt.max_restarts) {
      if (rc != 0 && opt.max_restarts > 0 && g_stop_requests == 0)
        log::error("the job failed (exit status {}) after {} restarts; giving up", rc, attempt);
      return rc;
    }
    log::warn("the job failed (exit status {}); restart {} of {}, from the latest checkpoint in {}",
              rc, attempt + 1, opt.max_restarts, cfg.checkpoint.dir);
  }
}

}  // namespace cr
