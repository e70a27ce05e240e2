// demo/pipeline.hpp: the log-analytics service as actors under a supervisor
// tree, run once over one file.
//
//   log-analytics          Supervisor, rest_for_one, in the calling process
//   ├─ aggregator          host: "aggregator" merges partial results, drops
//   │                      a batch it has already merged (redelivery)
//   ├─ workers             nested Supervisor, one_for_one, its own process
//   │  ├─ worker-1         host: "parser" parses and counts a batch, sends
//   │  └─ worker-N         the partial result to the aggregator
//   └─ ingest              host: "reader" walks the file and cuts it into
//                          numbered batches of whole lines; each goes to a
//                          worker whose mailbox has room as (id, offset,
//                          length), and the worker reads those bytes from
//                          the file (the page cache): the text is copied
//                          once, not through the mailboxes. Mailboxes are
//                          bounded: when all are full the reader waits, so
//                          memory stays flat whatever the input size.
//
// rest_for_one: the workers and the reader depend on the aggregator, the
// reader on the workers. Chaos: once the reader has handed out half of the
// input it says so (an mpx::Event) and waits while run_pipeline SIGKILLs one
// worker host (worker-2, or worker-1 alone), so the kill always lands
// midway, with the second half still to come; its supervisor restarts it on
// the same mailbox, the batch it had in hand (if any) is delivered again,
// and the aggregator's dedup by batch id keeps the counts exact. Progress and pids travel through a small shared-memory board
// made before the tree is forked (plain counters, no locks).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "log_format.hpp"

namespace demo {

struct PipelineOptions {
  std::string input;
  std::uint64_t input_bytes = 0;
  std::size_t workers = 2;
  std::size_t batch_bytes = 1 << 20;
  bool chaos = true;
  bool double_count = false;  // a fault for the tests: the aggregator merges batch 0 twice
  std::chrono::seconds timeout{300};
};

// What the pipeline reports while it runs (called on the calling thread).
struct Progress {
  std::uint64_t bytes_merged = 0, lines_merged = 0;
  double seconds = 0;
  unsigned restarts = 0;
  bool last = false;  // the final call
};

struct Exit {
  pid_t pid = 0;
  std::optional<int> code;  // -N: signal N
  std::string how;
};
struct TreeChild {
  std::string id;
  std::string kind;  // "host", "supervisor"
  int depth = 0;
  bool last = false;  // the last child of its parent (for drawing)
  std::string note;   // e.g. the strategy of a supervisor
  unsigned restarts = 0;
  std::vector<Exit> exits;  // every incarnation's exit, in order
};

struct ChaosReport {
  bool done = false;
  std::string victim;
  pid_t killed_pid = 0, new_pid = 0;
  double at_percent = 0;          // of the input read when it was killed
  std::int64_t in_hand = -1;      // the batch it was parsing, or -1
  double restart_ms = 0;          // SIGKILL -> the new parser runs
};

struct PipelineResult {
  Stats stats;
  std::uint64_t batches = 0;
  std::uint64_t duplicates = 0;   // partial results dropped by the aggregator
  std::uint64_t redelivered = 0;  // batches handled again after a crash
  double seconds = 0;             // Start sent -> merged result back
  ChaosReport chaos;
  std::string root_name;
  pid_t root_pid = 0;
  std::vector<TreeChild> tree;
};

// Runs the service over options.input (throws std::runtime_error, or the mpx
// error that stopped it). The tree is stopped before it returns.
PipelineResult run_pipeline(const PipelineOptions& options, const std::function<void(const Progress&)>& progress);

}  // namespace demo
