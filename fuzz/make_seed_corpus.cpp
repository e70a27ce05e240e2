// Writes the seed corpus for decode_fuzz: valid encodings of each fuzzed type,
// as whole messages (selector without kWrapPayload) and as bare payloads
// (selector with it). Built by scripts/fuzz.sh with the same compiler as the
// fuzzer, so that the type tags match. Usage: make_seed_corpus <dir>
#include "fuzz_types.hpp"

#include <cstdio>
#include <fstream>
#include <string>

namespace {

int g_count = 0;

void write_seed(const std::string& dir, std::uint8_t selector, std::span<const std::byte> bytes) {
  const std::string path = dir + "/seed_" + std::to_string(g_count++);
  std::ofstream out(path, std::ios::binary);
  out.put(static_cast<char>(selector));
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

template <class T>
void seed(const std::string& dir, unsigned index, const T& value) {
  const mpx::Bytes message = mpx::encode(value);
  write_seed(dir, static_cast<std::uint8_t>(index), message);
  write_seed(dir, static_cast<std::uint8_t>(index | fuzz::kWrapPayload),
             std::span(message).subspan(mpx::envelope_header_size));
}

fuzz::Record sample_record() {
  fuzz::Record r;
  r.id = 42;
  r.name = "record";
  r.ids = {1, -2, 3};
  r.table["a"] = {1, std::nullopt, 3};
  r.table["b"] = {};
  r.keys = {5, 6};
  r.flags = {true, false, true};
  r.lines = {"x", "yy"};
  r.leaves = {fuzz::Leaf{"leaf", 1.5, true}, fuzz::Leaf{"", std::nullopt, false}};
  r.triple = {7, 2.5, "t"};
  r.names = {{1, "one"}, {2, "two"}};
  r.blob = {std::byte{0}, std::byte{0xFF}};
  r.choice = fuzz::Leaf{"choice", 0.25, false};
  r.owned = std::make_unique<fuzz::Leaf>(fuzz::Leaf{"owned", std::nullopt, true});
  r.shared_a = std::make_shared<std::string>("shared");
  r.shared_b = r.shared_a;
  r.small = {1, 2, 3};
  return r;
}

fuzz::Tree sample_tree(int depth) {
  fuzz::Tree t;
  t.value = depth;
  if (depth > 0) {
    t.children.push_back(sample_tree(depth - 1));
    t.next = std::make_unique<fuzz::Tree>(sample_tree(depth - 1));
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus-dir>\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  seed(dir, 0, std::int64_t{123456789});
  seed(dir, 0, std::int64_t{-1});
  seed(dir, 1, std::string());
  seed(dir, 1, std::string("hello, fuzzer"));
  seed(dir, 2, std::vector<double>{});
  seed(dir, 2, std::vector<double>{1.0, -2.5, 1e300});
  seed(dir, 3, fuzz::Record{});
  seed(dir, 3, sample_record());
  seed(dir, 4, fuzz::Variant{});
  seed(dir, 4, fuzz::Variant{std::int64_t{9}});
  seed(dir, 4, fuzz::Variant{std::string("variant")});
  seed(dir, 4, fuzz::Variant{std::vector<int>{1, 2}});
  seed(dir, 4, fuzz::Variant{fuzz::Leaf{"leaf", 2.0, true}});
  seed(dir, 4, fuzz::Variant{std::array<std::int32_t, 2>{5, 6}});
  seed(dir, 5, fuzz::StringMap{{1, "a"}, {-7, "bb"}});
  seed(dir, 6, sample_tree(0));
  seed(dir, 6, sample_tree(4));
  seed(dir, 7, fuzz::Point{1, 2.0, 3.0, 4});
  seed(dir, 8, fuzz::Nested{{"a", "b"}, {}, {"c"}});
  seed(dir, 9, fuzz::OptionalList{});
  seed(dir, 9, fuzz::OptionalList{std::list<std::pair<std::string, std::int16_t>>{{"p", 1}, {"q", -1}}});
  std::printf("%d seeds in %s\n", g_count, dir.c_str());
  return 0;
}
