// `chainrule launch`: single-node dev mode. Validates the config, then runs N ranks of
// `chainrule train` on this machine through mpirun, forwarding SIGINT/SIGTERM, and returns the
// job's exit status. Threads: ranks x threads <= cores, so BLAS and OpenMP never oversubscribe.
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

extern char** environ;

namespace cr {

namespace {
volatile sig_atomic_t g_child = 0;
void forward_signal(int sig) {
  if (g_child > 0) ::kill(g_child, sig);
}
}  // namespace

int run_launch(const LaunchOptions& opt) {
  if (opt.nproc < 1) CR_INPUT_ERROR("--nproc {}: expected a positive number of ranks", opt.nproc);
  const Config cfg = load_config(opt.config, opt.overrides);
  validate_layout(cfg, opt.nproc);  // fail here, before any rank starts

  const int cores = (int)std::max(1u, std::thread::hardware_concurrency());
  const int threads = opt.threads > 0 ? opt.threads : std::max(1, cores / opt.nproc);
  char exe[4096] = {};
  const ssize_t len = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (len <= 0) CR_THROW("cannot find this executable: {}", std::strerror(errno));

  std::vector<std::string> args = {"mpirun", "-np", std::to_string(opt.nproc), "--bind-to", "none"};
  if (opt.nproc > cores) args.push_back("--oversubscribe");
  if (::geteuid() == 0) args.push_back("--allow-run-as-root");
  const std::string t = std::to_string(threads);
  for (const std::string& v : {"OMP_NUM_THREADS=" + t, "OPENBLAS_NUM_THREADS=" + t}) {
    args.push_back("-x");
    args.push_back(v);
  }
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
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace cr
