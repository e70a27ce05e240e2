// shared_memory_bench: a child writes 256 MiB into an mpx::SharedMemory, the
// parent then reads all of it; against memcpy of the same size in the same
// run, and Python's multiprocessing.shared_memory (bench/python/
// shared_memory_bench.py, run by this program).
// Usage: shared_memory_bench [--mib N] [--pin none|cross|same] [--json FILE]
//
//   shm_child_writes_parent_reads  end to end: the child fills the segment,
//                                  signals, the parent reads every byte.
//                                  The segment is created and mapped (page
//                                  tables populated) before the clock starts,
//                                  as for a long-lived segment.
//                                  ratio mpx/memcpy, target >= 0.7.
//   shm_child_writes_parent_streams the same 256 MiB, but the parent reads
//                                  each 1 MiB chunk as soon as the child has
//                                  published it (progress counter in shared
//                                  memory): writing and reading overlap, as a
//                                  streaming consumer would do it.
//                                  ratio mpx/memcpy, target >= 0.7.
//   shm_..._cold                   the sequential case on a fresh segment whose pages
//                                  are first touched by the child (page
//                                  allocation included). For information.
//   memcpy                         one memcpy of N MiB between pre-touched
//                                  private buffers (the bare limit).
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "mpx/event.hpp"
#include "mpx/shared_memory.hpp"
#include "mpx/sharedctypes.hpp"
#include "shm_sync_bench_support.hpp"

using namespace mpx::bench;

namespace {

// Reads every byte, 64 per iteration in four 16-byte vectors (SSE2 at
// least), so that the reader is limited by memory, not by the loop.
std::uint64_t read_all(const std::byte* p, std::size_t n) {
  using V = std::uint64_t __attribute__((vector_size(16)));
  const auto* v = reinterpret_cast<const V*>(p);
  V a{}, b{}, c{}, d{};
  for (std::size_t i = 0; i + 4 <= n / sizeof(V); i += 4) {
    a ^= v[i];
    b ^= v[i + 1];
    c ^= v[i + 2];
    d ^= v[i + 3];
  }
  V x = a ^ b ^ c ^ d;
  return x[0] ^ x[1];
}

void populate(std::span<std::byte> bytes) {
#ifdef MADV_POPULATE_WRITE
  if (::madvise(bytes.data(), bytes.size(), MADV_POPULATE_WRITE) == 0) return;
#endif
  for (std::size_t i = 0; i < bytes.size(); i += 4096) bytes[i] = std::byte{0};
}

struct Phases {
  double write_s, read_s;
};

Phases child_writes_parent_reads(std::size_t size, bool warm) {
  auto shm = mpx::SharedMemory::create(static_cast<std::int64_t>(size));
  mpx::Event ready, go, done;
  if (warm) populate(shm.buf());
  pid_t child = spawn([&] {
    if (warm) populate(shm.buf());
    ready.set();
    go.wait();
    std::memset(shm.buf().data(), 0x5a, size);
    done.set();
  });
  ready.wait();
  auto t0 = Clock::now();
  go.set();
  done.wait();
  auto t1 = Clock::now();
  volatile std::uint64_t sink = read_all(shm.buf().data(), size);
  auto t2 = Clock::now();
  (void)sink;
  join(child);
  shm.unlink();
  return {seconds(t1 - t0), seconds(t2 - t1)};
}

// Streaming: the parent reads each 1 MiB chunk as soon as the child has
// written it (a shared progress counter), so writing and reading overlap.
double child_writes_parent_streams(std::size_t size) {
  constexpr std::size_t kChunk = 1 << 20;
  auto shm = mpx::SharedMemory::create(static_cast<std::int64_t>(size));
  mpx::RawValue<std::uint64_t> progress(0);
  mpx::Event ready, go;
  populate(shm.buf());
  pid_t child = spawn([&] {
    populate(shm.buf());
    ready.set();
    go.wait();
    std::atomic_ref<std::uint64_t> written(progress.get_obj());
    for (std::size_t at = 0; at < size; at += kChunk) {
      std::size_t n = std::min(kChunk, size - at);
      std::memset(shm.buf().data() + at, 0x5a, n);
      written.store(at + n, std::memory_order_release);
    }
  });
  ready.wait();
  auto t0 = Clock::now();
  go.set();
  std::atomic_ref<std::uint64_t> written(progress.get_obj());
  std::uint64_t sink = 0;
  for (std::size_t at = 0; at < size;) {
    std::size_t upto = written.load(std::memory_order_acquire);
    if (upto == at) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      continue;
    }
    sink ^= read_all(shm.buf().data() + at, upto - at);
    at = upto;
  }
  double dt = seconds(Clock::now() - t0);
  volatile std::uint64_t keep = sink;
  (void)keep;
  join(child);
  shm.unlink();
  return static_cast<double>(size) / dt / 1e9;
}

double memcpy_gbps(std::size_t size) {
  std::unique_ptr<std::byte[]> a(new std::byte[size]), b(new std::byte[size]);
  std::memset(a.get(), 1, size);
  std::memset(b.get(), 2, size);
  auto t0 = Clock::now();
  std::memcpy(b.get(), a.get(), size);
  double dt = seconds(Clock::now() - t0);
  volatile auto sink = b[size / 2];
  (void)sink;
  return static_cast<double>(size) / dt / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t mib = 256;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--mib") == 0) mib = static_cast<std::size_t>(std::atol(argv[i + 1]));
  std::string pin = setup_pinning(argc, argv);
  const std::size_t size = mib << 20;
  constexpr int kRuns = 3;

  std::printf("shared_memory_bench: %zu MiB; running the Python side (bench/python/shared_memory_bench.py)...\n",
              mib);
  std::fflush(stdout);
  auto py = run_python("shared_memory_bench.py", "--mib " + std::to_string(mib));

  double memcpy_bw = median_of(kRuns, [&] { return memcpy_gbps(size); });
  std::vector<double> e2e, wr, rd;
  for (int i = 0; i < kRuns; ++i) {
    auto p = child_writes_parent_reads(size, true);
    e2e.push_back(static_cast<double>(size) / (p.write_s + p.read_s) / 1e9);
    wr.push_back(static_cast<double>(size) / p.write_s / 1e9);
    rd.push_back(static_cast<double>(size) / p.read_s / 1e9);
  }
  double streamed = median_of(kRuns, [&] { return child_writes_parent_streams(size); });
  double cold = median_of(kRuns, [&] {
    auto p = child_writes_parent_reads(size, false);
    return static_cast<double>(size) / (p.write_s + p.read_s) / 1e9;
  });

  std::vector<Row> rows;
  auto add = [&](const std::string& scenario, double mpx, const std::string& py_key, const std::string& target) {
    Row r;
    r.scenario = scenario;
    r.unit = "GB/s";
    r.mpx = mpx;
    r.python = lookup(py, py_key);
    r.bare = memcpy_bw;
    r.ratio_label = "mpx/memcpy";
    r.ratio = mpx / memcpy_bw;
    r.target = target;
    rows.push_back(r);
  };
  add("shm_child_writes_parent_reads", median(e2e), "shm_child_writes_parent_reads", ">= 0.7");
  add("shm_child_writes_parent_streams", streamed, "", ">= 0.7");
  add("shm_child_write_phase", median(wr), "shm_child_write_phase", "(info)");
  add("shm_parent_read_phase", median(rd), "shm_parent_read_phase", "(info)");
  add("shm_child_writes_parent_reads_cold", cold, "", "(info)");
  std::printf("placement: %s\n", pin == "none" ? "left to the scheduler" : pin.c_str());
  print_table(rows);
  std::printf("\nbare = one memcpy of %zu MiB between pre-touched private buffers. Python: the child does "
              "buf[:] = payload, the parent bytes(buf) (a copy), on a fresh segment.\n",
              mib);
  return write_json(parse_options(argc, argv).json_path, "shared_memory_bench", records_of(rows)) ? 0 : 1;
}
