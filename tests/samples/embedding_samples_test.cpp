// Sample 38 (embedded_asio_service), run as a program: an Asio service that
// waits on an mpx queue of results and on its workers' sentinels, handles
// its own SIGTERM/SIGINT and shuts its workers down cleanly.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "test_support.hpp"

using mpx::test::lines_of;
using mpx::test::sample_path;
using namespace std::chrono_literals;

namespace {

// The sample running with its stdout on a pipe; killed and reaped on
// destruction if still there.
class Running {
 public:
  explicit Running(const std::string& path) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::execl(path.c_str(), path.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    out_ = fds[0];
  }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;
  ~Running() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  const std::string& out() const { return text_; }

  // Reads until `done(text)` or end of output; false on timeout.
  template <class Done>
  bool read_until(Done done, std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    while (!done(text_)) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      const ssize_t n = ::read(out_, buf, sizeof buf);
      if (n <= 0) return done(text_);  // end of output
      text_.append(buf, static_cast<std::size_t>(n));
    }
    return true;
  }
  // Exit code (or -signal), or nullopt if it is still running after `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd < 0) return std::nullopt;
    pollfd p{pidfd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(timeout.count()));
    ::close(pidfd);
    int status = 0;
    if (ready != 1 || ::waitpid(pid_, &status, 0) != pid_) return std::nullopt;
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string text_;
};

int count_results(const std::string& text) {
  int n = 0;
  for (const auto& line : lines_of(text)) n += line.rfind("result: ", 0) == 0;
  return n;
}

void stops_cleanly_on(int signo, const char* name) {
  Running service(sample_path("s38_embedded_asio_service"));
  // Serving, and results flowing through the queue's descriptor.
  ASSERT_TRUE(service.read_until([](const std::string& t) { return count_results(t) >= 5; }, 30s)) << service.out();
  ASSERT_EQ(::kill(service.pid(), signo), 0);
  ASSERT_TRUE(service.read_until([](const std::string& t) { return t.find("clean shutdown") != std::string::npos; }, 30s))
      << service.out();
  const auto code = service.wait(30s);
  ASSERT_TRUE(code.has_value()) << "still running after the shutdown line";
  EXPECT_EQ(*code, 0) << service.out();

  const auto lines = lines_of(service.out());
  std::vector<pid_t> workers;
  int results = 0;
  std::smatch m;
  const std::regex result_re("result: ([0-9]+)\\*([0-9]+) = ([0-9]+)");
  const std::regex pid_re("worker ([0-9]+) pid ([0-9]+)");
  for (const auto& line : lines) {
    if (std::regex_match(line, m, pid_re)) workers.push_back(static_cast<pid_t>(std::stol(m[2])));
    if (std::regex_match(line, m, result_re)) {
      ++results;
      const long long j = std::stoll(m[1]);
      EXPECT_EQ(std::stoll(m[3]), j * j) << line;
    }
  }
  ASSERT_EQ(workers.size(), 2u) << service.out();
  auto has = [&](const std::string& l) { return std::find(lines.begin(), lines.end(), l) != lines.end(); };
  EXPECT_TRUE(has("serving with 2 workers")) << service.out();
  EXPECT_TRUE(has(std::string(name) + ": stopping 2 workers")) << service.out();
  EXPECT_TRUE(has("worker 0 exited with 0")) << service.out();
  EXPECT_TRUE(has("worker 1 exited with 0")) << service.out();
  EXPECT_EQ(lines.back(), "clean shutdown: " + std::to_string(results) + " results, all correct") << service.out();
  // The service joined its workers: none is left running (nor a zombie).
  for (pid_t w : workers) EXPECT_NE(::kill(w, 0), 0) << "worker " << w << " outlived the service";
}

}  // namespace

TEST(EmbeddingSamples, S38AsioServiceShutsItsWorkersDownCleanlyOnSigterm) { stops_cleanly_on(SIGTERM, "SIGTERM"); }

TEST(EmbeddingSamples, S38AsioServiceShutsItsWorkersDownCleanlyOnSigint) { stops_cleanly_on(SIGINT, "SIGINT"); }
