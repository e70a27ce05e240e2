// Memory figures of this process and machine, read from /proc: what the
// memory tests measure a queue or ring by.
#pragma once

#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

namespace mpx::test {

// A "Key:   N kB" line of a /proc file, in bytes.
inline std::optional<std::int64_t> proc_kb(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(key.size() + 1));
    std::int64_t kb = 0;
    if (fields >> kb) return kb * 1024;
  }
  return std::nullopt;
}

// Shared memory resident in this process (RssShmem), in bytes: the touched
// pages of its shared mappings.
inline std::int64_t resident_shmem() {
  auto v = proc_kb("/proc/self/status", "RssShmem");
  if (!v) throw std::runtime_error("no RssShmem in /proc/self/status");
  return *v;
}

// The machine's committed address space (Committed_AS), in bytes.
inline std::int64_t committed() {
  auto v = proc_kb("/proc/meminfo", "Committed_AS");
  if (!v) throw std::runtime_error("no Committed_AS in /proc/meminfo");
  return *v;
}

}  // namespace mpx::test
