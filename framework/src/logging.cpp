#include "mpx/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <unistd.h>

#include <mutex>
#include <new>
#include <string>

#include "mpx/process.hpp"

namespace mpx {

namespace {

thread_local const std::string* t_log_label = nullptr;

// %* in the pattern: "<process name> <pid>" of the process writing the line,
// and the thread's label if it has one.
class ProcessFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&, spdlog::memory_buf_t& dest) override {
    auto self = current_process();
    std::string text = self.name + " " + std::to_string(self.pid);
    if (t_log_label && !t_log_label->empty()) text += " " + *t_log_label;
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<ProcessFlag>(); }
};

std::unique_ptr<spdlog::formatter> make_formatter() {
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<ProcessFlag>('*').set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l/%*] %v");
  return formatter;
}

// Writes each line with one write(2) on fd 2: no stdio buffer (a child may
// _exit right after logging), no FILE lock (it may be inherited locked by a
// fork), and lines of several processes do not interleave mid-line.
class StderrSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // In a freshly forked, single-threaded child: the mutex may have been held
  // by a thread of the parent that does not exist here. std::mutex is a
  // plain pthread mutex; re-creating it in place is O(1), which matters
  // because every child pays it on its start path.
  void reinitialize_after_fork() { new (&mutex_) std::mutex(); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    const char* data = line.data();
    std::size_t left = line.size();
    while (left > 0) {
      ssize_t n = ::write(STDERR_FILENO, data, left);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        return;  // stderr is gone: nothing better to do with a log line
      }
      data += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  void flush_() override {}
};

std::shared_ptr<StderrSink>& stderr_sink() {
  static auto sink = [] {
    auto s = std::make_shared<StderrSink>();
    s->set_formatter(make_formatter());
    return s;
  }();
  return sink;
}

std::shared_ptr<spdlog::logger>& logger_instance() {
  // Not registered in spdlog's registry: its mutex could be inherited locked.
  static auto logger = [] {
    auto l = std::make_shared<spdlog::logger>("mpx", stderr_sink());
    l->set_level(spdlog::level::warn);
    return l;
  }();
  return logger;
}

}  // namespace

std::shared_ptr<spdlog::logger> get_logger() { return logger_instance(); }

void set_thread_log_label(const std::string* label) noexcept { t_log_label = label; }

std::shared_ptr<spdlog::logger> log_to_stderr(std::optional<spdlog::level::level_enum> level) {
  auto logger = logger_instance();
  if (level) logger->set_level(*level);
  return logger;
}

namespace detail {
void reset_logging_after_fork() { stderr_sink()->reinitialize_after_fork(); }
}  // namespace detail

}  // namespace mpx
