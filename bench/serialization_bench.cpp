// serialization_bench: mpx::encode/decode against Python's pickle and against
// the machine's limits, measured in one run, printed side by side.
//
//   serialization_bench [--quick] [--no-python] [--json FILE]
//
// Scenarios (ns per encode + decode round trip, one thread):
//   ser_int64            std::int64_t, encode_into a reused buffer + decode (raw path)
//   ser_int64_alloc      the same with encode() allocating a fresh vector each time
//   ser_pod32            32-byte POD struct without serialize (raw path)
//   ser_string_1k        1 KiB std::string (cereal path)
//   ser_struct_small     struct with serialize: int64, double, 8-char string, 4 ints
//   ser_vector_double_1k vector<double> of 1024 (8 KiB payload)
//   ser_bytes_1m         1 MiB std::vector<std::byte>, reported as GB/s too
// References:
//   memcpy_*             memcpy of the same message bytes twice (the bare floor)
//   cereal_sstream_*     cereal::BinaryArchive through std::stringstream, no envelope
//                        (the naive way; what the custom archive avoids)
//   crc32c_* / crc32c_table_*  the checksum alone, SSE4.2 and table
//   pickle_*             Python 3 pickle.dumps + pickle.loads, protocol 5
//                        (bench/python/serialization_bench.py)
#include <cereal/archives/binary.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "mpx/serialization.hpp"

using mpx::bench::Clock;

namespace {

template <class T>
inline void keep(T&& value) {
  asm volatile("" : : "g"(&value) : "memory");
}

// Median over `rounds` of the mean ns per call of fn over `iterations` calls.
template <class F>
double ns_per_op(std::size_t iterations, F&& fn, int rounds = 5) {
  for (std::size_t i = 0; i < iterations / 10 + 1; ++i) fn();  // warm up
  std::vector<double> results;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < iterations; ++i) fn();
    const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    results.push_back(ns / static_cast<double>(iterations));
  }
  std::sort(results.begin(), results.end());
  return results[results.size() / 2];
}

struct Pod32 {
  std::int64_t id;
  double x, y;
  std::uint32_t a, b;
};
static_assert(sizeof(Pod32) == 32 && mpx::raw_encoding_v<Pod32>);

struct Small {
  std::int64_t id = 0;
  double value = 0;
  std::string tag;
  std::vector<int> ints;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, value, tag, ints);
  }
};

template <class T>
double mpx_round_trip(std::size_t n, const T& value) {
  mpx::Bytes buf;
  buf.reserve(mpx::encode(value).size());
  return ns_per_op(n, [&] {
    mpx::encode_into(buf, value);
    T back = mpx::decode<T>(buf);
    keep(back);
  });
}

double memcpy_round_trip(std::size_t n, std::size_t bytes) {
  std::vector<char> a(bytes, 'a'), b(bytes), c(bytes);
  return ns_per_op(n, [&] {
    std::memcpy(b.data(), a.data(), bytes);
    keep(b);
    std::memcpy(c.data(), b.data(), bytes);
    keep(c);
  });
}

template <class T>
double cereal_sstream_round_trip(std::size_t n, const T& value) {
  return ns_per_op(n, [&] {
    std::stringstream ss;
    {
      cereal::BinaryOutputArchive out(ss);
      out(value);
    }
    T back{};
    {
      cereal::BinaryInputArchive in(ss);
      in(back);
    }
    keep(back);
  });
}

struct Row {
  std::string scenario;
  double mpx_ns;
  std::string reference;
  double reference_ns;
};

}  // namespace

int main(int argc, char** argv) {
  const mpx::bench::Options opt = mpx::bench::parse_options(argc, argv);
  const bool quick = opt.quick;
  const std::size_t n = quick ? 200'000 : 2'000'000;
  // Its stderr is dropped, as before; it takes no --repeat.
  const std::map<std::string, double> py =
      opt.python ? mpx::bench::run_python("serialization_bench.py", quick ? "--quick 2>/dev/null" : "2>/dev/null")
                 : std::map<std::string, double>{};
  auto py_ns = [&](const std::string& k) { return py.count(k) ? py.at(k) : 0.0; };

  const std::string kib(1024, 'k');
  const Pod32 pod{1, 2.0, 3.0, 4, 5};
  Small small;
  small.id = 42;
  small.value = 3.5;
  small.tag = "abcdefgh";
  small.ints = {1, 2, 3, 4};
  const std::vector<double> doubles(1024, 1.5);
  const mpx::Bytes mib(1 << 20, std::byte{7});

  std::vector<Row> rows;
  const double int64 = mpx_round_trip(n, std::int64_t{123456789});
  rows.push_back({"ser_int64", int64, "memcpy_32b", memcpy_round_trip(n, 32)});
  rows.push_back({"ser_int64", int64, "cereal_sstream_int64", cereal_sstream_round_trip(n / 4, std::int64_t{1})});
  rows.push_back({"ser_int64", int64, "pickle_int", py_ns("pickle_int")});
  rows.push_back({"ser_int64_alloc",
                  ns_per_op(n, [&] {
                    mpx::Bytes b = mpx::encode(std::int64_t{123456789});
                    auto v = mpx::decode<std::int64_t>(b);
                    keep(v);
                  }),
                  "ser_int64", int64});
  const double pod32 = mpx_round_trip(n, pod);
  rows.push_back({"ser_pod32", pod32, "memcpy_56b", memcpy_round_trip(n, 56)});
  rows.push_back({"ser_pod32", pod32, "pickle_tuple4", py_ns("pickle_tuple4")});
  const double s1k = mpx_round_trip(n / 2, kib);
  rows.push_back({"ser_string_1k", s1k, "memcpy_1056b", memcpy_round_trip(n, 1056)});
  rows.push_back({"ser_string_1k", s1k, "cereal_sstream_1k", cereal_sstream_round_trip(n / 4, kib)});
  rows.push_back({"ser_string_1k", s1k, "crc32c_1056b",
                  ns_per_op(n, [&] { keep(mpx::detail::crc32c(kib.data(), 1024)); })});
  rows.push_back({"ser_string_1k", s1k, "pickle_str_1k", py_ns("pickle_str_1k")});
  const double small_ns = mpx_round_trip(n / 2, small);
  rows.push_back({"ser_struct_small", small_ns, "cereal_sstream_small", cereal_sstream_round_trip(n / 4, small)});
  rows.push_back({"ser_struct_small", small_ns, "pickle_object_small", py_ns("pickle_object_small")});
  const double vd = mpx_round_trip(n / 20, doubles);
  rows.push_back({"ser_vector_double_1k", vd, "memcpy_8k", memcpy_round_trip(n / 20, 8 * 1024 + 32)});
  rows.push_back({"ser_vector_double_1k", vd, "pickle_list_float_1k", py_ns("pickle_list_float_1k")});
  const double m1 = mpx_round_trip(quick ? 200 : 2000, mib);
  rows.push_back({"ser_bytes_1m", m1, "memcpy_1m", memcpy_round_trip(quick ? 200 : 2000, (1 << 20) + 32)});
  rows.push_back({"ser_bytes_1m", m1, "crc32c_1m",
                  ns_per_op(quick ? 200 : 2000, [&] { keep(mpx::detail::crc32c(mib.data(), mib.size())); })});
  rows.push_back({"ser_bytes_1m", m1, "crc32c_table_1m",
                  ns_per_op(quick ? 50 : 500, [&] { keep(mpx::detail::crc32c_portable(mib.data(), mib.size())); })});
  rows.push_back({"ser_bytes_1m", m1, "pickle_bytes_1m", py_ns("pickle_bytes_1m")});

  std::printf("serialization_bench: encode + decode round trip, ns per op (median of 5), crc32c %s\n",
              mpx::detail::crc32c_is_hardware() ? "SSE4.2" : "table");
  std::printf("%-22s %12s   %-22s %12s %9s\n", "scenario", "mpx ns/op", "reference", "ref ns/op", "ref/mpx");
  for (const Row& r : rows) {
    if (r.reference_ns <= 0) {
      std::printf("%-22s %12.1f   %-22s %12s %9s\n", r.scenario.c_str(), r.mpx_ns, r.reference.c_str(), "n/a", "");
      continue;
    }
    std::printf("%-22s %12.1f   %-22s %12.1f %8.2fx\n", r.scenario.c_str(), r.mpx_ns, r.reference.c_str(),
                r.reference_ns, r.reference_ns / r.mpx_ns);
  }
  std::printf("ser_bytes_1m: %.2f GB/s (encode + decode each pass the MiB once: copy + checksum)\n",
              (1 << 20) / m1);

  // One record per scenario, its references as peers (rows come grouped by scenario).
  std::vector<mpx::bench::Record> records;
  for (const Row& r : rows) {
    if (records.empty() || records.back().name != r.scenario)
      records.push_back({r.scenario, "ns/op", r.mpx_ns, {}, false, "encode + decode round trip"});
    records.back().peers.emplace_back(r.reference, r.reference_ns);
  }
  return mpx::bench::write_json(opt.json_path, "serialization_bench", records) ? 0 : 1;
}
