// Replays a fuzz corpus without libFuzzer and counts, per type and mode, how
// many inputs decode and which DecodeError kinds the others raise: a check
// that the corpus reaches every check, not only the first one.
// Built by scripts/fuzz.sh; usage: corpus_stats <dir>...
#include "fuzz_types.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

namespace {

std::map<std::string, std::map<std::string, int>> g_counts;  // "type/mode" -> outcome -> inputs

struct Count {
  std::span<const std::byte> input;
  bool wrap;
  template <class T>
  void operator()() const {
    mpx::Bytes storage;
    const std::span<const std::byte> message = fuzz::message_for<T>(input, wrap, storage);
    std::string outcome = "decoded";
    try {
      (void)mpx::decode<T>(message);
    } catch (const mpx::DecodeError& e) {
      outcome = std::string(mpx::to_string(e.kind()));
    }
    ++g_counts[std::string(mpx::type_name<T>()).substr(0, 40) + (wrap ? " [payload]" : " [message]")][outcome];
  }
};

}  // namespace

int main(int argc, char** argv) {
  int files = 0;
  for (int i = 1; i < argc; ++i) {
    for (const auto& entry : std::filesystem::directory_iterator(argv[i])) {
      std::ifstream in(entry.path(), std::ios::binary);
      const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (data.empty()) continue;
      ++files;
      const auto selector = static_cast<std::uint8_t>(data[0]);
      fuzz::with_type(selector & 0x7F, Count{std::span(reinterpret_cast<const std::byte*>(data.data()) + 1,
                                                       data.size() - 1),
                                             (selector & fuzz::kWrapPayload) != 0});
    }
  }
  std::printf("%d inputs\n", files);
  std::map<std::string, int> totals;
  for (const auto& [key, outcomes] : g_counts) {
    std::printf("%-52s", key.c_str());
    for (const auto& [outcome, n] : outcomes) {
      std::printf(" %s=%d", outcome.c_str(), n);
      totals[outcome] += n;
    }
    std::printf("\n");
  }
  std::printf("%-52s", "all");
  for (const auto& [outcome, n] : totals) std::printf(" %s=%d", outcome.c_str(), n);
  std::printf("\n");
  return 0;
}
