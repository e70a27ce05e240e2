// The log-analytics service: actors, messages and the supervisor tree (see pipeline.hpp).
#include "pipeline.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <stdexcept>
#include <thread>

#include "mpx/actors.hpp"
#include "mpx/event.hpp"
#include "mpx/queue.hpp"
#include "mpx/sharedctypes.hpp"

namespace ma = mpx::actors;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace demo {

namespace {

// ---- messages

struct Start {  // main -> reader
  std::string path;
  std::uint64_t batch_bytes = 0;
  std::uint32_t workers = 0;
  std::uint64_t pause_at = 0;  // chaos: once this many bytes are handed out, wait for the kill (0: never)
  template <class A>
  void serialize(A& ar) {
    ar(path, batch_bytes, workers, pause_at);
  }
};
struct Batch {  // reader -> parser: a range of whole lines of the file
  std::uint64_t id = 0;
  std::string path;
  std::uint64_t offset = 0, length = 0;
  template <class A>
  void serialize(A& ar) {
    ar(id, path, offset, length);
  }
};
struct Partial {  // parser -> aggregator
  std::uint64_t batch = 0;
  std::uint64_t bytes = 0;
  Stats stats;
  template <class A>
  void serialize(A& ar) {
    ar(batch, bytes, stats);
  }
};
struct EndOfInput {  // reader -> aggregator
  std::uint64_t batches = 0;
  template <class A>
  void serialize(A& ar) {
    ar(batches);
  }
};
struct InputFailed {  // reader -> aggregator: the result fails with this
  std::string what;
  template <class A>
  void serialize(A& ar) {
    ar(what);
  }
};
struct Ping {  // main -> parser (request): answered with the host's pid
  template <class A>
  void serialize(A&) {}
};
struct GetResult {  // main -> aggregator (request): answered once every batch is merged
  template <class A>
  void serialize(A&) {}
};
struct Result {
  Stats stats;
  std::uint64_t batches = 0, duplicates = 0;
  template <class A>
  void serialize(A& ar) {
    ar(stats, batches, duplicates);
  }
};
struct ChildExit {  // a nested supervisor's exit report, to main through an mpx::Queue
  std::string child;
  std::int32_t pid = 0;
  std::optional<int> code;
  std::string how;
  std::uint32_t restarts = 0;
  template <class A>
  void serialize(A& ar) {
    ar(child, pid, code, how, restarts);
  }
};

// ---- the shared board: made by run_pipeline before the tree is forked

enum Slot : std::size_t {
  kBytesRead,
  kBatchesSent,
  kBytesMerged,
  kLinesMerged,
  kBatchesMerged,
  kDuplicates,
  kRedelivered,
  kWorkerBase = 8,  // per worker: pid, batch in hand + 1
};
constexpr std::size_t kPerWorker = 2;

std::optional<mpx::RawArray<std::uint64_t>> g_board;
std::optional<mpx::Queue<ChildExit>> g_exits;
// Chaos, deterministic: the reader says it is midway and waits until main has killed the worker.
struct Midway {
  mpx::Event reached, resume;
};
std::optional<Midway> g_midway;

std::atomic_ref<std::uint64_t> slot(std::size_t i) { return std::atomic_ref<std::uint64_t>((*g_board)[i]); }
std::size_t worker_slot(std::size_t worker, std::size_t field) { return kWorkerBase + worker * kPerWorker + field; }

std::string worker_name(std::size_t k) { return "worker-" + std::to_string(k + 1); }
const ma::ActorRef& aggregator_ref() {
  static const ma::ActorRef ref("aggregator", "aggregator", 0, 0);  // by name: valid across restarts
  return ref;
}

// ---- actors

// An open file, closed with its owner.
class File {
 public:
  File() = default;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() { close(); }
  // Opens `path` unless it is already open; throws std::runtime_error.
  void open(const std::string& path) {
    if (fd_ >= 0 && path == path_) return;
    close();
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    path_ = path;
  }
  // Reads exactly `length` bytes at `offset` into out (fewer at the end of the file).
  void read_at(std::uint64_t offset, std::size_t length, std::string& out) const {
    out.resize(length);
    std::size_t done = 0;
    while (done < length) {
      const ssize_t n = ::pread(fd_, out.data() + done, length - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw std::runtime_error("reading " + path_ + ": " + std::strerror(errno));
      if (n == 0) break;
      done += static_cast<std::size_t>(n);
    }
    out.resize(done);
  }

 private:
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
  std::string path_;
};

// Walks the file and cuts it into numbered batches of whole lines, at least
// batch_bytes each (the last one excepted): it reads only around each cut,
// to find the end of the line there. Each batch goes to a worker whose
// mailbox has room, round robin; when every mailbox is full the reader waits
// on the next one (backpressure: it never runs more than the mailboxes'
// bounds ahead of the parsers). Ids and ranges depend only on the file, so a
// Start delivered again after a crash of this host sends the same batches,
// which the aggregator drops.
ma::Behavior reader(ma::Context&) {
  return {[](const Start& start) {
    try {
      std::vector<ma::ActorRef> workers;
      for (std::size_t k = 0; k < start.workers; ++k) workers.emplace_back(worker_name(k), "parser", 0, 0);
      std::size_t next = 0;
      auto deliver = [&](const Batch& batch) {
        for (std::size_t i = 0; i < workers.size(); ++i) {
          try {
            workers[(next + i) % workers.size()].send_nowait(batch);
            next = (next + i + 1) % workers.size();
            return;
          } catch (const ma::MailboxFull&) {
          }
        }
        workers[next].send(batch);  // every mailbox is full: wait for room
        next = (next + 1) % workers.size();
      };
      File file;
      file.open(start.path);
      struct stat st {};
      if (::stat(start.path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
        throw std::runtime_error(start.path + " is not a regular file");
      const auto size = static_cast<std::uint64_t>(st.st_size);
      Batch batch{0, start.path, 0, 0};
      std::string window;
      while (batch.offset < size) {
        // The batch ends after the first '\n' at or beyond offset + batch_bytes - 1.
        std::uint64_t end = batch.offset + start.batch_bytes;
        if (end >= size) {
          end = size;
        } else {
          for (std::uint64_t probe = end - 1;; probe += window.size()) {
            file.read_at(probe, 64 << 10, window);
            const std::size_t nl = window.find('\n');
            if (nl != std::string::npos) {
              end = probe + nl + 1;
              break;
            }
            if (window.empty()) {  // the file ends in this line
              end = size;
              break;
            }
          }
        }
        batch.length = end - batch.offset;
        deliver(batch);
        batch.offset = end;
        ++batch.id;
        slot(kBytesRead).store(batch.offset, std::memory_order_relaxed);
        slot(kBatchesSent).store(batch.id, std::memory_order_relaxed);
        if (start.pause_at > 0 && batch.offset >= start.pause_at && !g_midway->reached.is_set()) {
          g_midway->reached.set();
          (void)g_midway->resume.wait(10s);  // main kills a worker meanwhile; go on regardless after 10 s
        }
      }
      aggregator_ref().send(EndOfInput{batch.id});
    } catch (const std::exception& e) {
      aggregator_ref().send(InputFailed{e.what()});
    }
  }};
}
MPX_REGISTER_ACTOR(reader);

// Reads a batch's lines from the file, counts them and sends the partial
// result to the aggregator. The file stays open and the buffer is reused
// from batch to batch.
class Parser : public ma::Actor {
 public:
  Parser(ma::Context& self, std::uint32_t index) : Actor(self), index_(index) {
    slot(worker_slot(index, 0)).store(static_cast<std::uint64_t>(::getpid()), std::memory_order_relaxed);
  }
  ma::Behavior behavior() override {
    return {[](const Ping&) { return static_cast<std::int32_t>(::getpid()); },
            [this](const Batch& batch) {
      if (self().redelivered()) slot(kRedelivered).fetch_add(1, std::memory_order_relaxed);
      slot(worker_slot(index_, 1)).store(batch.id + 1, std::memory_order_relaxed);
      file_.open(batch.path);
      file_.read_at(batch.offset, batch.length, text_);
      Partial partial{batch.id, batch.length, {}};
      partial.stats.add_text(text_);
      aggregator_ref().send(partial);
      slot(worker_slot(index_, 1)).store(0, std::memory_order_relaxed);
    }};
  }

 private:
  std::uint32_t index_;
  File file_;
  std::string text_;
};
MPX_REGISTER_ACTOR_CLASS(Parser, std::uint32_t);

// Merges partial results, each batch once, and answers GetResult once
// every batch of the input is in.
class Aggregator : public ma::Actor {
 public:
  Aggregator(ma::Context& self, bool double_count) : Actor(self), double_count_(double_count) {}
  ma::Behavior behavior() override {
    return {
        [this](const Partial& p) {
          if (p.batch >= seen_.size()) seen_.resize(p.batch + 1, false);
          if (seen_[p.batch]) {  // redelivered after a crash, and already merged
            ++duplicates_;
            slot(kDuplicates).fetch_add(1, std::memory_order_relaxed);
            return;
          }
          seen_[p.batch] = true;
          total_.merge(p.stats);
          if (double_count_ && p.batch == 0) total_.merge(p.stats);  // the injected fault
          ++merged_;
          slot(kBytesMerged).fetch_add(p.bytes, std::memory_order_relaxed);
          slot(kLinesMerged).fetch_add(p.stats.lines, std::memory_order_relaxed);
          slot(kBatchesMerged).fetch_add(1, std::memory_order_relaxed);
          answer();
        },
        [this](const EndOfInput& end) {
          expected_ = end.batches;
          answer();
        },
        [this](const InputFailed& failed) {
          failure_ = failed.what;
          answer();
        },
        [this](const GetResult&) {
          auto promise = self().make_response_promise<Result>();
          waiting_.push_back(promise);
          answer();
          return promise;  // deferred: answer() delivers it
        },
    };
  }

 private:
  void answer() {
    if (failure_) {
      for (auto& w : waiting_) w.deliver_error("InputFailed", *failure_);
      waiting_.clear();
    } else if (expected_ && merged_ == *expected_) {
      const Result result{total_, merged_, duplicates_};
      for (auto& w : waiting_) w.deliver(result);
      waiting_.clear();
    }
  }
  bool double_count_;
  Stats total_;
  std::vector<bool> seen_;
  std::uint64_t merged_ = 0, duplicates_ = 0;
  std::optional<std::uint64_t> expected_;
  std::optional<std::string> failure_;
  std::vector<ma::ResponsePromise<Result>> waiting_;
};
MPX_REGISTER_ACTOR_CLASS(Aggregator, bool);

// ---- the tree

ma::HostOptions host_options(std::size_t capacity, std::size_t in_flight, std::size_t bytes) {
  return ma::HostOptions()
      .with_start_method(mpx::StartMethod::fork)
      .with_threads(1)
      .with_mailbox(ma::MailboxOptions().with_capacity(capacity).with_in_flight(in_flight).with_bytes(bytes));
}

const char* strategy_name(ma::Strategy s) {
  switch (s) {
    case ma::Strategy::one_for_one:
      return "one_for_one";
    case ma::Strategy::one_for_all:
      return "one_for_all";
    case ma::Strategy::rest_for_one:
      return "rest_for_one";
    case ma::Strategy::simple_one_for_one:
      return "simple_one_for_one";
  }
  return "?";
}

template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace

PipelineResult run_pipeline(const PipelineOptions& options, const std::function<void(const Progress&)>& progress) {
  const std::size_t W = options.workers;
  g_board.emplace(static_cast<std::int64_t>(kWorkerBase + W * kPerWorker));
  g_exits.emplace();
  g_midway.emplace();
  const auto nested_exit = [](const ma::ExitReport& r) {
    g_exits->put(ChildExit{r.child, r.pid, r.exit_code, r.how, r.restarts});
  };

  std::vector<ma::ChildSpec> workers;
  for (std::size_t k = 0; k < W; ++k)
    workers.push_back(ma::ChildSpec::host(worker_name(k), host_options(4, 2, 1 << 20),
                                          {ma::ActorSpec::make("Parser", "parser", static_cast<std::uint32_t>(k))}));
  // A partial result is at most a few bytes per line of its batch; the log
  // holds a message of half its size, and its pages are touched as it is
  // used (its size bounds the aggregator's memory).
  const auto aggregator_options =
      host_options(16, 4, std::max<std::size_t>(std::size_t{16} << 20, 4 * options.batch_bytes));
  const auto root_strategy = ma::Strategy::rest_for_one;
  const auto pool_strategy = ma::Strategy::one_for_one;
  ma::Supervisor root(
      "log-analytics", ma::SupervisorOptions().with_strategy(root_strategy).with_intensity(3, 10s),
      {ma::ChildSpec::host("aggregator", aggregator_options, {ma::ActorSpec::make("Aggregator", "aggregator", options.double_count)}),
       ma::ChildSpec::supervisor(
           "workers", ma::SupervisorOptions().with_strategy(pool_strategy).with_intensity(5, 10s).with_on_exit(nested_exit),
           std::move(workers)),
       ma::ChildSpec::host("ingest", host_options(16, 4, 1 << 20), {ma::ActorSpec::make("reader", "reader")})});

  // The workers' hosts start in the nested supervisor's process: their
  // mailboxes exist once their parsers have said their pid. A reply to a
  // ping then says more: the host has answered the nested supervisor's
  // spawn before it (one host handles its mailbox in order), so a kill from
  // now on is a restart for that supervisor, not a failed start.
  for (std::size_t k = 0; k < W; ++k) {
    if (!wait_until([&] { return slot(worker_slot(k, 0)).load() != 0; }, 30s))
      throw mpx::TimeoutError(worker_name(k) + " did not start within 30 s");
    (void)ma::ActorRef(worker_name(k), "parser", 0, 0).request<std::int32_t>(Ping{}).get(30s);
  }

  PipelineResult out;
  std::vector<ChildExit> nested_exits;
  auto drain = [&] {
    for (;;) {
      try {
        nested_exits.push_back(g_exits->get_nowait());
      } catch (const mpx::Empty&) {
        return;
      }
    }
  };
  auto restarts_so_far = [&] {
    unsigned n = 0;
    for (const auto& e : nested_exits) n += e.code != 0;
    for (const auto& c : root.which_children()) n += c.restarts;
    return n;
  };

  const auto t0 = Clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  const std::uint64_t pause_at = options.chaos ? std::max<std::uint64_t>(1, options.input_bytes / 2) : 0;
  root.host("ingest").actor("reader").send(
      Start{options.input, options.batch_bytes, static_cast<std::uint32_t>(W), pause_at});
  auto response = root.host("aggregator").actor("aggregator").request<Result>(GetResult{});

  const std::size_t victim = W >= 2 ? 1 : 0;
  const auto report = [&](bool last) {
    progress(Progress{slot(kBytesMerged).load(), slot(kLinesMerged).load(), seconds(), restarts_so_far(), last});
  };
  auto next_report = t0;
  Clock::time_point killed_at{};
  while (!response.wait(1ms)) {
    drain();
    if (options.chaos && !out.chaos.done && g_midway->reached.is_set()) {
      // Midway through the input: SIGKILL a worker host, as an OOM killer or a crash would.
      const std::uint64_t read = slot(kBytesRead).load();
      ChaosReport& c = out.chaos;
      c.victim = worker_name(victim);
      c.killed_pid = static_cast<pid_t>(slot(worker_slot(victim, 0)).load());
      c.in_hand = static_cast<std::int64_t>(slot(worker_slot(victim, 1)).load()) - 1;
      c.at_percent = 100.0 * static_cast<double>(read) / static_cast<double>(options.input_bytes);
      killed_at = Clock::now();
      if (c.killed_pid <= 0) throw mpx::actors::ActorError(c.victim + " has no pid on the board");
      ::kill(c.killed_pid, SIGKILL);
      c.done = true;
      g_midway->resume.set();
    }
    if (out.chaos.done && out.chaos.new_pid == 0) {
      const auto pid = static_cast<pid_t>(slot(worker_slot(victim, 0)).load());
      if (pid != out.chaos.killed_pid) {
        out.chaos.new_pid = pid;
        out.chaos.restart_ms = std::chrono::duration<double, std::milli>(Clock::now() - killed_at).count();
      }
    }
    if (Clock::now() >= next_report) {
      report(false);
      next_report = Clock::now() + 100ms;
    }
    if (seconds() > static_cast<double>(options.timeout.count()))
      throw mpx::TimeoutError("no result after " + std::to_string(options.timeout.count()) + " s");
  }
  Result result = response.get();  // throws what failed it (RemoteError: the input)
  out.seconds = seconds();
  report(true);
  out.stats = std::move(result.stats);
  out.batches = result.batches;
  out.duplicates = result.duplicates;
  out.redelivered = slot(kRedelivered).load();
  if (out.chaos.done && out.chaos.new_pid == 0) {  // the result came first: the restart is still visible
    if (wait_until([&] { return static_cast<pid_t>(slot(worker_slot(victim, 0)).load()) != out.chaos.killed_pid; },
                   10s)) {
      out.chaos.new_pid = static_cast<pid_t>(slot(worker_slot(victim, 0)).load());
      out.chaos.restart_ms = std::chrono::duration<double, std::milli>(Clock::now() - killed_at).count();
    }
  }

  // The orderly stop, in reverse order; then every child's exits.
  out.root_name = root.name();
  out.root_pid = ::getpid();
  root.stop();
  drain();
  const auto root_reports = root.reports();
  auto exits_of = [](const auto& reports, const std::string& id, TreeChild& child) {
    for (const auto& r : reports) {
      if (r.child != id) continue;
      if constexpr (std::is_same_v<std::decay_t<decltype(r)>, ChildExit>) {
        child.exits.push_back(Exit{static_cast<pid_t>(r.pid), r.code, r.how});
      } else {
        child.exits.push_back(Exit{r.pid, r.exit_code, r.how});
      }
      child.restarts = std::max(child.restarts, static_cast<unsigned>(r.restarts));
    }
  };
  for (const std::string id : {"aggregator", "workers", "ingest"}) {
    TreeChild child{id, id == "workers" ? "supervisor" : "host", 1, id == "ingest", "", 0, {}};
    if (id == "workers") child.note = strategy_name(pool_strategy);
    exits_of(root_reports, id, child);
    out.tree.push_back(child);
    if (id == "workers") {
      for (std::size_t k = 0; k < W; ++k) {
        TreeChild w{worker_name(k), "host", 2, k + 1 == W, "", 0, {}};
        exits_of(nested_exits, w.id, w);
        out.tree.push_back(w);
      }
    }
  }
  out.root_name += std::string(" (") + strategy_name(root_strategy) + ")";
  g_midway.reset();
  g_exits.reset();
  g_board.reset();
  return out;
}

}  // namespace demo
