// Test helpers shared by every suite: run a program and capture what it
// prints, find zombies, list /dev/shm. Real processes, no mocks.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace mpx::test {

// The tests' build defines MPX_SAMPLES_DIR; a bench or sample that includes
// these helpers (netns.hpp, test_certificates.hpp) does not need it.
#ifdef MPX_SAMPLES_DIR
inline std::string sample_path(const std::string& name) { return std::string(MPX_SAMPLES_DIR) + "/" + name; }
#endif

struct RunResult {
  int exit_code = -1;        // exit status, or -signal
  bool timed_out = false;    // killed because it outlived the timeout
  std::string out;
  std::string err;
  std::chrono::duration<double> elapsed{};
};

// Runs argv[0] with args, stdin from /dev/null unless `input` is given,
// collects stdout and stderr, and SIGKILLs it after `timeout`.
inline RunResult run_program(const std::vector<std::string>& argv,
                             std::chrono::duration<double> timeout = std::chrono::seconds(60),
                             const std::optional<std::string>& input = std::nullopt) {
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) || ::pipe2(err_pipe, O_CLOEXEC) || ::pipe2(in_pipe, O_CLOEXEC)) {
    throw std::runtime_error("pipe failed");
  }
  auto start = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ::close(in_pipe[0]);
  if (input) {
    // Small inputs only: fits the pipe buffer.
    [[maybe_unused]] auto n = ::write(in_pipe[1], input->data(), input->size());
  }
  ::close(in_pipe[1]);
  RunResult r;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[4096];
  while (open_fds > 0) {
    auto left = timeout - (std::chrono::steady_clock::now() - start);
    int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(left).count());
    if (ms <= 0) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    if (::poll(fds, 2, ms) < 0) continue;
    for (auto& f : fds) {
      if (f.fd >= 0 && (f.revents & (POLLIN | POLLHUP))) {
        ssize_t n = ::read(f.fd, buf, sizeof buf);
        if (n <= 0) {
          ::close(f.fd);
          f.fd = -1;
          --open_fds;
        } else {
          (f.fd == out_pipe[0] ? r.out : r.err).append(buf, static_cast<size_t>(n));
        }
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.elapsed = std::chrono::steady_clock::now() - start;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  return r;
}

#ifdef MPX_SAMPLES_DIR
// Runs the sample program `name` (build/samples/<name>) with `args`.
inline RunResult run_sample(const std::string& name, const std::vector<std::string>& args,
                            std::chrono::duration<double> timeout) {
  std::vector<std::string> argv{sample_path(name)};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv, timeout);
}
#endif

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Children of `parent` in any state, read from /proc: pid -> state letter.
struct ProcEntry {
  pid_t pid;
  char state;
};
inline std::vector<ProcEntry> children_of(pid_t parent) {
  std::vector<ProcEntry> result;
  DIR* d = ::opendir("/proc");
  if (!d) return result;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::ifstream stat("/proc/" + std::string(e->d_name) + "/stat");
    std::string content;
    std::getline(stat, content);
    auto close_paren = content.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream rest(content.substr(close_paren + 2));
    char state = 0;
    long ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) result.push_back({static_cast<pid_t>(pid), state});
  }
  ::closedir(d);
  return result;
}

// Thread `tid` of process `pid` is asleep in a futex wait: state 'S' in
// /proc/<pid>/task/<tid>/stat and a futex function as its wait channel
// (futex_wait_queue_me, futex_wait_queue, futex_do_wait, ... by kernel
// version). Proves a waiter really blocked, without sleeping and hoping.
inline bool asleep_in_futex(pid_t pid, pid_t tid) {
  const std::string task = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid);
  std::ifstream stat(task + "/stat");
  std::string content;
  std::getline(stat, content);
  auto close_paren = content.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= content.size()) return false;
  if (content[close_paren + 2] != 'S') return false;
  std::ifstream wchan(task + "/wchan");
  std::string channel;
  std::getline(wchan, channel);
  return channel.find("futex") != std::string::npos;
}

inline bool pid_exists(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

// Names in /dev/shm (segment names without the leading '/').
inline std::set<std::string> dev_shm_names() {
  std::set<std::string> names;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') names.insert(e->d_name);
    ::closedir(d);
  }
  return names;
}

}  // namespace mpx::test
