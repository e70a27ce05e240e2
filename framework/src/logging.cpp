#include "mpx/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <string>
#include <vector>

#include "mpx/process.hpp"

namespace mpx {

namespace {

// %* in the pattern: "<process name> <pid>" of the process writing the line.
class ProcessFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&, spdlog::memory_buf_t& dest) override {
    auto self = current_process();
    std::string text = self.name + " " + std::to_string(self.pid);
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<ProcessFlag>(); }
};

std::unique_ptr<spdlog::formatter> make_formatter() {
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<ProcessFlag>('*').set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l/%*] %v");
  return formatter;
}

spdlog::sink_ptr make_stderr_sink() {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  sink->set_formatter(make_formatter());
  return sink;
}

std::shared_ptr<spdlog::logger>& logger_instance() {
  // Not registered in spdlog's registry: its mutex could be inherited locked.
  static auto logger = [] {
    auto l = std::make_shared<spdlog::logger>("mpx", make_stderr_sink());
    l->set_level(spdlog::level::warn);
    l->flush_on(spdlog::level::trace);  // a child may _exit right after logging
    return l;
  }();
  return logger;
}

}  // namespace

std::shared_ptr<spdlog::logger> get_logger() { return logger_instance(); }

std::shared_ptr<spdlog::logger> log_to_stderr(std::optional<spdlog::level::level_enum> level) {
  auto logger = logger_instance();
  if (level) logger->set_level(*level);
  return logger;
}

namespace detail {
void reset_logging_after_fork() {
  auto& sinks = logger_instance()->sinks();
  // The old sinks' mutexes may be held by a thread that does not exist in
  // this child: keep them alive forever instead of destroying a locked mutex.
  static auto* graveyard = new std::vector<spdlog::sink_ptr>();
  graveyard->insert(graveyard->end(), sinks.begin(), sinks.end());
  sinks.clear();
  sinks.push_back(make_stderr_sink());
}
}  // namespace detail

}  // namespace mpx
