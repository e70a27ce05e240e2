// mpx/pool.hpp: a pool of worker processes, as multiprocessing.Pool, that
// never hangs: a worker that dies is replaced and its task fails (or is
// retried), a task that runs too long is stopped, terminate() always returns.
//
//     int square(int x) { return x * x; }
//
//     mpx::Pool pool(4);                                   // 4 workers, started now
//     std::vector<int> squares = pool.map(square, std::vector{1, 2, 3});
//     int nine = pool.apply(square, 3);
//     auto r = pool.apply_async(square, 7);                 // AsyncResult<int>
//     for (int v : pool.imap_unordered(square, std::views::iota(0, 1000))) ...
//     pool.close();
//     pool.join();
//
// Targets: plain functions, captureless lambdas and function objects without
// members (default-constructed in the worker). A target cannot capture: the
// workers are separate processes that started when the pool did, so they see
// this process' memory as it was then, not as it is at the call; everything
// a task needs travels in its arguments, which (like its result) go through
// mpx::encode, so any serializable user type works. That rule is the same
// under `fork` and `forkserver` (a pool works in a multi-threaded host under
// forkserver); targets must be code of the program image or of libraries
// loaded before the pool (or the fork server) started. The `spawn` start
// method is refused (PoolError at construction): tasks travel as addresses
// of code, which a new image of the program does not share.
//
// Threads: every member may be called from any thread. Callbacks and
// progress reports run on the pool's own thread, one at a time, before the
// result they belong to is ready; a slow callback delays the pool's other
// results (as in Python).
//
// Faults (see docs/pool.md for the table against Python's pools):
//   - a task that throws fails with mpx::RemoteError (type and message); the
//     other tasks and the pool are unaffected. map() raises the error of the
//     first failing position, after all its tasks finished.
//   - a worker that dies during a task is replaced at once; the task fails
//     with WorkerLost (pid, exit code or -signal), or runs again on another
//     worker if `retries` allow (for idempotent work). Tasks queued behind it
//     in the same worker are handed to others without counting as a retry.
//   - a task longer than its `timeout` (a chunk is one task) gets its worker
//     SIGTERM, then SIGKILL after `kill_grace`; the worker is replaced and
//     the task fails with TaskTimeout.
//   - terminate() kills every worker (SIGTERM, SIGKILL after kill_grace),
//     fails every unfinished task with PoolError, and returns once all
//     workers are reaped. Destroying a pool terminates it, as leaving
//     Python's `with Pool() as p:` block does.
//   - a worker initializer that throws breaks the pool: every unfinished and
//     later task fails with PoolError naming the initializer's error (Python
//     would start workers forever).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/async_result.hpp"
#include "mpx/detail/pool_progress.hpp"
#include "mpx/detail/pool_sinks.hpp"
#include "mpx/detail/pool_task.hpp"
#include "mpx/imap_iterator.hpp"
#include "mpx/pool_error.hpp"
#include "mpx/process.hpp"
#include "mpx/progress.hpp"

namespace mpx {

// How a pool runs. Chain the setters: PoolOptions().with_processes(4).with_retries(2).
struct PoolOptions {
  std::optional<int> processes;                            // empty: cpu_count(); < 1 throws PoolError
  std::optional<int> maxtasksperchild;                     // empty: no limit; < 1 throws PoolError
  std::optional<StartMethod> start_method;                 // empty: get_start_method()
  std::optional<std::chrono::milliseconds> task_timeout;   // empty: tasks may run forever
  int retries = 0;                                         // runs again of a task whose worker died
  std::chrono::milliseconds kill_grace{200};               // SIGTERM -> SIGKILL
  // Each worker's resource limits, nice value, CPUs and timer slack
  // (mpx/process.hpp). A worker its limit kills (CPU seconds: -SIGXCPU)
  // fails its task with WorkerLost carrying that exit code, and is
  // replaced. An empty timer_slack gives the workers 1 us (not Linux's
  // 50 us): a task's short sleeps and timed waits end nearer their time.
  // Limits Process::start refuses (a nice value outside [-20, 19], a timer
  // slack outside [1 ns, 1 s], ...) make the constructor throw PoolError.
  ProcessLimits worker_limits;

  PoolOptions& with_processes(int value) { processes = value; return *this; }
  PoolOptions& with_maxtasksperchild(int value) { maxtasksperchild = value; return *this; }
  PoolOptions& with_start_method(StartMethod value) { start_method = value; return *this; }
  PoolOptions& with_task_timeout(std::chrono::milliseconds value) { task_timeout = value; return *this; }
  PoolOptions& with_retries(int value) { retries = value; return *this; }
  PoolOptions& with_kill_grace(std::chrono::milliseconds value) { kill_grace = value; return *this; }
  PoolOptions& with_worker_limits(ProcessLimits value) { worker_limits = std::move(value); return *this; }
};

// Per call: overrides the pool's timeout and retries for these tasks.
struct TaskOptions {
  std::optional<std::chrono::milliseconds> timeout;
  std::optional<int> retries;
};

// map, imap, imap_unordered, starmap and their _async forms.
struct MapOptions {
  std::size_t chunksize = 0;  // 0: as Python: map len/(4*processes) rounded up, imap 1
  std::optional<std::chrono::milliseconds> timeout;  // per chunk; empty: the pool's
  std::optional<int> retries;                        // empty: the pool's
  bool progress = false;                             // one line on stderr (see mpx/progress.hpp)
  std::function<void(const Progress&)> on_progress;  // at most every 100 ms, and once at the end
  std::size_t max_in_flight = 0;  // imap: chunks submitted or unread at once; 0: 4 * processes
};

// What the pool has done so far.
struct PoolStats {
  std::size_t tasks_done = 0;      // tasks (chunks) finished, successfully or not
  std::size_t workers_started = 0;
  std::size_t workers_lost = 0;    // died during a task, or killed for a timeout
  std::size_t tasks_retried = 0;
  std::size_t tasks_timed_out = 0;
};

namespace detail::pool {
class PoolCore;
struct Initializer {
  TaskInvoker invoker = nullptr;
  std::uintptr_t target = 0;
  Bytes arguments;
};
std::shared_ptr<PoolCore> start_pool(const PoolOptions& options, Initializer initializer);
// Queues tasks (in order); throws PoolError once closed, terminated or broken.
void submit(PoolCore& core, std::vector<TaskSpec> tasks);
int pool_processes(const PoolCore& core);
void close_pool(PoolCore& core);
void terminate_pool(PoolCore& core);
bool join_pool(PoolCore& core, std::optional<std::chrono::nanoseconds> timeout);
std::vector<pid_t> worker_pids(const PoolCore& core);
PoolStats pool_stats(const PoolCore& core);

template <class F>
constexpr void check_target() {
  static_assert(Target<F>,
                "a Pool target must be a plain function, a captureless lambda or a function object without "
                "members: a worker process cannot see what a closure captured (see mpx/pool.hpp)");
}

// Python's default chunksize for map: len / (4 * processes), rounded up.
inline std::size_t default_chunksize(std::size_t items, int processes) {
  if (items == 0) return 1;
  const std::size_t parts = 4 * static_cast<std::size_t>(processes);
  return (items + parts - 1) / parts;
}
}  // namespace detail::pool

class Pool {
 public:
  Pool() : Pool(PoolOptions{}) {}
  explicit Pool(int processes) : Pool(PoolOptions().with_processes(processes)) {}
  explicit Pool(const PoolOptions& options) : core_(detail::pool::start_pool(options, {})) {}
  // `initializer(initargs...)` runs once in each worker before its first task.
  template <class I, class... A>
  Pool(const PoolOptions& options, I initializer, A&&... initargs)
      : core_(detail::pool::start_pool(options, make_initializer(initializer, std::forward<A>(initargs)...))) {}

  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&&) noexcept = default;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  // terminate(), then reaps every worker.
  ~Pool();

  // ---- one call
  template <class F, class... A>
  auto apply(F fn, A&&... args) {
    return apply_async(fn, std::forward<A>(args)...).get();
  }
  template <class F, class... A>
  auto apply_async(F fn, A&&... args) {
    using R = detail::pool::apply_result_t<F, std::decay_t<A>...>;
    return apply_async(fn, std::tuple<std::decay_t<A>...>(std::forward<A>(args)...), Callbacks<R>{});
  }
  // Python's apply_async(func, args, callback=, error_callback=), plus a timeout and retries.
  template <class F, class... A>
  auto apply_async(F fn, std::tuple<A...> args,
                   Callbacks<detail::pool::apply_result_t<F, A...>> callbacks, TaskOptions options = {}) {
    detail::pool::check_target<F>();
    using R = detail::pool::apply_result_t<F, A...>;
    auto state = std::make_shared<detail::pool::ResultState<R>>();
    detail::pool::TaskSpec task;
    task.invoker = &detail::pool::invoke_apply<F, A...>;
    task.target = detail::pool::target_address(fn);
    task.arguments = std::make_shared<const Bytes>(encode(args));
    task.sink = std::make_shared<detail::pool::ApplySink<R>>(state, std::move(callbacks));
    task.timeout = options.timeout;
    task.retries = options.retries;
    std::vector<detail::pool::TaskSpec> tasks;
    tasks.push_back(std::move(task));
    detail::pool::submit(*core_, std::move(tasks));
    return AsyncResult<R>(std::move(state));
  }

  // ---- map: f(item) for every item; the results in input order
  template <class F, std::ranges::input_range Items>
  auto map(F fn, Items&& items, std::size_t chunksize = 0) {
    MapOptions options;
    options.chunksize = chunksize;
    return map_async(fn, std::forward<Items>(items), std::move(options)).get();
  }
  template <class F, std::ranges::input_range Items>
  auto map(F fn, Items&& items, MapOptions options) {
    return map_async(fn, std::forward<Items>(items), std::move(options)).get();
  }
  template <class F, std::ranges::input_range Items>
  auto map_async(F fn, Items&& items, MapOptions options = {},
                 Callbacks<std::vector<typename detail::pool::ChunkCall<F, std::ranges::range_value_t<Items>,
                                                                        false>::Result>>
                     callbacks = {}) {
    return submit_map<false>(fn, std::forward<Items>(items), std::move(options), std::move(callbacks));
  }
  // ---- starmap: f(std::get<0>(item), std::get<1>(item), ...)
  template <class F, std::ranges::input_range Items>
  auto starmap(F fn, Items&& items, std::size_t chunksize = 0) {
    MapOptions options;
    options.chunksize = chunksize;
    return starmap_async(fn, std::forward<Items>(items), std::move(options)).get();
  }
  template <class F, std::ranges::input_range Items>
  auto starmap(F fn, Items&& items, MapOptions options) {
    return starmap_async(fn, std::forward<Items>(items), std::move(options)).get();
  }
  template <class F, std::ranges::input_range Items>
  auto starmap_async(F fn, Items&& items, MapOptions options = {},
                     Callbacks<std::vector<typename detail::pool::ChunkCall<F, std::ranges::range_value_t<Items>,
                                                                            true>::Result>>
                         callbacks = {}) {
    return submit_map<true>(fn, std::forward<Items>(items), std::move(options), std::move(callbacks));
  }

  // ---- imap: lazy, bounded; see mpx/imap_iterator.hpp
  template <class F, std::ranges::input_range Items>
  auto imap(F fn, Items&& items, std::size_t chunksize = 1) {
    MapOptions options;
    options.chunksize = chunksize;
    return submit_stream<true>(fn, std::forward<Items>(items), std::move(options));
  }
  template <class F, std::ranges::input_range Items>
  auto imap(F fn, Items&& items, MapOptions options) {
    return submit_stream<true>(fn, std::forward<Items>(items), std::move(options));
  }
  template <class F, std::ranges::input_range Items>
  auto imap_unordered(F fn, Items&& items, std::size_t chunksize = 1) {
    MapOptions options;
    options.chunksize = chunksize;
    return submit_stream<false>(fn, std::forward<Items>(items), std::move(options));
  }
  template <class F, std::ranges::input_range Items>
  auto imap_unordered(F fn, Items&& items, MapOptions options) {
    return submit_stream<false>(fn, std::forward<Items>(items), std::move(options));
  }

  // ---- lifecycle, as Python
  // No more tasks; the workers exit once every submitted task is done.
  void close();
  // Stops the workers now (see the fault list above) and fails unfinished tasks.
  void terminate();
  // Waits for the workers to exit; PoolError unless close() or terminate() came first.
  void join();
  // As join(), at most `timeout`; true once every worker has exited.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_for(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }

  [[nodiscard]] int processes() const;
  // The workers running now (for monitoring and tests).
  [[nodiscard]] std::vector<pid_t> worker_pids() const;
  [[nodiscard]] PoolStats stats() const;

 private:
  template <class I, class... A>
  static detail::pool::Initializer make_initializer(I initializer, A&&... initargs) {
    detail::pool::check_target<I>();
    using Arguments = std::tuple<std::decay_t<A>...>;
    static_assert(std::is_invocable_v<I&, std::decay_t<A>&...>, "the initializer cannot take these initargs");
    return {&detail::pool::invoke_initializer<I, std::decay_t<A>...>, detail::pool::target_address(initializer),
            encode(Arguments(std::forward<A>(initargs)...))};
  }
  bool join_for(std::optional<std::chrono::nanoseconds> timeout);

  // One chunk of a map or imap call: `arguments` is the encoded std::vector<Item>.
  template <bool Spread, class F, class Item>
  static detail::pool::TaskSpec chunk_task(F fn, std::shared_ptr<detail::pool::TaskSink> sink, std::size_t chunk,
                                           Bytes arguments, const MapOptions& options) {
    detail::pool::TaskSpec task;
    task.invoker = &detail::pool::invoke_chunk<F, Item, Spread>;
    task.target = detail::pool::target_address(fn);
    task.arguments = std::make_shared<const Bytes>(std::move(arguments));
    task.sink = std::move(sink);
    task.chunk = chunk;
    task.timeout = options.timeout;
    task.retries = options.retries;
    return task;
  }

  template <bool Spread, class F, class Items, class R>
  AsyncResult<std::vector<R>> submit_map(F fn, Items&& input, MapOptions options, Callbacks<std::vector<R>> callbacks) {
    detail::pool::check_target<F>();
    using Item = std::remove_cvref_t<std::ranges::range_value_t<Items>>;
    if constexpr (std::ranges::forward_range<Items> && std::ranges::sized_range<Items>) {
      // Its length is known: the chunks are encoded straight from it.
      return map_chunks<Spread, F, Item>(fn, input, std::move(options), std::move(callbacks));
    } else {
      // map takes the whole input first, as Python does (it needs the length for the chunksize).
      std::vector<Item> items;
      for (auto&& item : input) items.emplace_back(std::forward<decltype(item)>(item));
      return map_chunks<Spread, F, Item>(fn, items, std::move(options), std::move(callbacks));
    }
  }

  // Encodes every chunk of `range` before it returns (the caller's range may
  // go away then), handing them to the pool as they are ready: the workers
  // start on the first chunks while the later ones are encoded.
  template <bool Spread, class F, class Item, class Range, class R>
  AsyncResult<std::vector<R>> map_chunks(F fn, Range& range, const MapOptions& options,
                                         Callbacks<std::vector<R>> callbacks) {
    constexpr std::size_t batch_bytes = 64 * 1024;  // one submit (a lock, maybe a wake-up) per this much
    const auto total = static_cast<std::size_t>(std::ranges::size(range));
    const std::size_t chunksize =
        options.chunksize ? options.chunksize : detail::pool::default_chunksize(total, processes());
    std::vector<std::size_t> offsets;
    for (std::size_t offset = 0; offset < total; offset += chunksize) offsets.push_back(offset);
    auto state = std::make_shared<detail::pool::ResultState<std::vector<R>>>();
    auto sink = std::make_shared<detail::pool::MapSink<R>>(
        state, std::move(callbacks), offsets, total,
        detail::pool::ProgressTracker(options.progress, options.on_progress, total));
    std::vector<detail::pool::TaskSpec> batch;
    std::size_t batched = 0;
    auto it = std::ranges::begin(range);
    for (std::size_t chunk = 0; chunk < offsets.size(); ++chunk) {
      Bytes arguments;
      detail::pool::encode_items<Item>(arguments, it, std::min(chunksize, total - offsets[chunk]));
      batched += arguments.size();
      batch.push_back(chunk_task<Spread, F, Item>(fn, sink, chunk, std::move(arguments), options));
      // A PoolError here (closed, terminated or broken meanwhile) leaves the
      // chunks already queued to run for nobody; the call throws, as before any.
      if (batched >= batch_bytes || chunk + 1 == offsets.size()) {
        detail::pool::submit(*core_, std::move(batch));
        batch.clear();
        batched = 0;
      }
    }
    return AsyncResult<std::vector<R>>(std::move(state));
  }

  template <bool Ordered, class F, class Items>
  auto submit_stream(F fn, Items&& input, MapOptions options) {
    detail::pool::check_target<F>();
    using Item = std::remove_cvref_t<std::ranges::range_value_t<Items>>;
    using R = typename detail::pool::ChunkCall<F, Item, false>::Result;
    using State = detail::pool::StreamState<R>;
    std::optional<std::size_t> total;
    if constexpr (std::ranges::sized_range<Items>) total = static_cast<std::size_t>(std::ranges::size(input));
    const std::size_t chunksize = options.chunksize ? options.chunksize : 1;
    const std::size_t max_in_flight =
        options.max_in_flight ? options.max_in_flight : 4 * static_cast<std::size_t>(processes());
    auto state = std::make_shared<State>(Ordered,
                                         detail::pool::ProgressTracker(options.progress, options.on_progress, total));
    // The feeder owns the input (a view of an lvalue, the rvalue itself) and its position.
    auto view = std::make_shared<decltype(std::views::all(std::forward<Items>(input)))>(
        std::views::all(std::forward<Items>(input)));
    auto position = std::make_shared<std::ranges::iterator_t<std::remove_reference_t<decltype(*view)>>>(
        std::ranges::begin(*view));
    auto next_chunk = std::make_shared<std::size_t>(0);
    auto feeder = [core = core_, fn, view, position, next_chunk, chunksize, options](State& st, std::size_t room) {
      std::vector<detail::pool::TaskSpec> tasks;
      std::size_t fed = 0;
      bool done = false;
      while (!done && room - fed >= chunksize) {
        std::vector<Item> items;
        items.reserve(chunksize);
        auto& it = *position;
        const auto end = std::ranges::end(*view);
        while (items.size() < chunksize && it != end) {
          items.emplace_back(*it);
          ++it;
        }
        done = (it == end);
        if (items.empty()) break;
        fed += items.size();
        const std::size_t chunk = (*next_chunk)++;
        st.submitted(chunk, items.size());
        tasks.push_back(chunk_task<false, F, Item>(fn, st.shared_from_this(), chunk, encode(items), options));
      }
      if (const std::size_t count = tasks.size(); count > 0) {
        try {
          detail::pool::submit(*core, std::move(tasks));
        } catch (const PoolError&) {
          // The pool no longer runs: these items surface as errors at their
          // positions and the stream ends after them.
          for (std::size_t chunk = *next_chunk - count; chunk < *next_chunk; ++chunk)
            st.failed(chunk, std::current_exception());
          done = true;
        }
      }
      if (done) st.input_done();
    };
    return IMapIterator<R>(std::move(state), std::move(feeder), max_in_flight * chunksize);
  }

  std::shared_ptr<detail::pool::PoolCore> core_;
};

}  // namespace mpx
