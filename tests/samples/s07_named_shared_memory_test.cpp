// Seed 07: the writer and reader commands of s07_named_shared_memory, and
// Python's multiprocessing.shared_memory and plain shm_open on either side.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>

#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

const std::string kSample = mpx::test::sample_path("s07_named_shared_memory");

std::string unique_name() {
  static std::atomic<int> n{0};
  return "mpx_s07_" + std::to_string(::getpid()) + "_" + std::to_string(n++);
}

bool exists(const std::string& name) { return mpx::test::dev_shm_names().count(name) > 0; }

struct Cleanup {
  std::string name;
  ~Cleanup() { ::shm_unlink(("/" + name).c_str()); }
};

// The writer, running with pipes on stdin and stdout; killed if still alive.
class Writer {
 public:
  explicit Writer(const std::string& name) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC)) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::execl(kSample.c_str(), kSample.c_str(), "write", name.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
  }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  ~Writer() {
    if (stdin_ >= 0) ::close(stdin_);
    ::close(stdout_);
    if (!reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Reads stdout until `text` appears or the timeout passes.
  bool wait_for(const std::string& text, std::chrono::milliseconds timeout = 20s) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (output_.find(text) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{stdout_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[256];
      ssize_t n = ::read(stdout_, buf, sizeof buf);
      if (n <= 0) return output_.find(text) != std::string::npos;
      output_.append(buf, static_cast<std::size_t>(n));
    }
    return true;
  }
  void close_stdin() {
    ::close(stdin_);
    stdin_ = -1;
  }
  void signal(int sig) const { ::kill(pid_, sig); }
  // Exit code, or -1000 on timeout.
  int join(std::chrono::milliseconds timeout = 20s) {
    auto end = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) != pid_) {
      if (std::chrono::steady_clock::now() > end) return -1000;
      ::usleep(5000);
    }
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1, stdout_ = -1;
  bool reaped_ = false;
  std::string output_;
};

}  // namespace

TEST(S07NamedSharedMemory, ReaderProgramPythonAndShmOpenSeeTheWritersByte) {
  auto name = unique_name();
  Cleanup cleanup{name};
  Writer writer(name);
  ASSERT_TRUE(writer.wait_for("ready: " + name)) << writer.output();
  ASSERT_TRUE(exists(name));

  auto reader = mpx::test::run_program({kSample, "read", name}, 30s);
  EXPECT_EQ(reader.exit_code, 0) << reader.err;
  EXPECT_EQ(reader.out, "buf[0] = 0xab\n");

  // Python 3.11's resource tracker would unlink an attach-only segment at
  // exit (bpo-38119): the script unregisters it.
  const char* script =
      "import sys\n"
      "from multiprocessing import shared_memory, resource_tracker\n"
      "s = shared_memory.SharedMemory(sys.argv[1])\n"
      "resource_tracker.unregister(s._name, 'shared_memory')\n"
      "print(hex(s.buf[0]))\n"
      "s.close()\n";
  auto py = mpx::test::run_program({"/usr/bin/python3", "-c", script, name}, 60s);
  EXPECT_EQ(py.exit_code, 0) << py.err;
  EXPECT_EQ(py.out, "0xab\n");

  int fd = ::shm_open(("/" + name).c_str(), O_RDONLY, 0);  // what a C program does
  ASSERT_GE(fd, 0);
  auto* p = static_cast<unsigned char*>(::mmap(nullptr, 256, PROT_READ, MAP_SHARED, fd, 0));
  ::close(fd);
  ASSERT_NE(p, MAP_FAILED);
  EXPECT_EQ(p[0], 0xab);
  ::munmap(p, 256);

  writer.close_stdin();  // told to stop: closes and unlinks
  EXPECT_EQ(writer.join(), 0);
  EXPECT_TRUE(writer.wait_for("unlinked: " + name));
  EXPECT_FALSE(exists(name));
}

TEST(S07NamedSharedMemory, WriterStopsOnSigtermAndUnlinks) {
  auto name = unique_name();
  Cleanup cleanup{name};
  Writer writer(name);
  ASSERT_TRUE(writer.wait_for("ready: " + name));
  writer.signal(SIGTERM);
  EXPECT_EQ(writer.join(), 0);
  EXPECT_FALSE(exists(name));
}

TEST(S07NamedSharedMemory, ReaderAttachesToASegmentPythonCreated) {
  auto name = unique_name();
  Cleanup cleanup{name};
  const char* script =
      "import sys\n"
      "from multiprocessing import shared_memory, resource_tracker\n"
      "s = shared_memory.SharedMemory(name=sys.argv[1], create=True, size=256)\n"
      "s.buf[0] = 0xab\n"
      "resource_tracker.unregister(s._name, 'shared_memory')  # outlive this script\n"
      "s.close()\n";
  auto py = mpx::test::run_program({"/usr/bin/python3", "-c", script, name}, 60s);
  ASSERT_EQ(py.exit_code, 0) << py.err;
  auto reader = mpx::test::run_program({kSample, "read", name}, 30s);
  EXPECT_EQ(reader.exit_code, 0) << reader.err;
  EXPECT_EQ(reader.out, "buf[0] = 0xab\n");
  EXPECT_TRUE(exists(name));  // the reader does not unlink what it did not create
}

TEST(S07NamedSharedMemory, ReadingAMissingSegmentFailsClearly) {
  auto reader = mpx::test::run_program({kSample, "read", unique_name()}, 30s);
  EXPECT_EQ(reader.exit_code, 1);
  EXPECT_NE(reader.err.find("no segment named"), std::string::npos) << reader.err;
  auto usage = mpx::test::run_program({kSample}, 30s);
  EXPECT_EQ(usage.exit_code, 2);
}
