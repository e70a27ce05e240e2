// pool/src/pool.cpp: the pool's own thread. It owns the workers: starts and
// replaces them, hands them tasks (a few at a time each, so that fast tasks
// stream and a lost worker holds little), reads their results, and watches
// their pidfds and the task deadlines with one epoll set. Callers only queue
// tasks under a mutex and wake the thread through an eventfd.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "mpx/detail/demangle.hpp"
#include "mpx/detail/unique_fd.hpp"
#include "mpx/logging.hpp"
#include "mpx/pool.hpp"
#include "wire.hpp"
#include "worker.hpp"

namespace mpx::detail::pool {

using Clock = std::chrono::steady_clock;

ErrorInfo describe_current_exception() {
  try {
    throw;
  } catch (const SystemExit&) {
    throw;
  } catch (const std::exception& e) {
    return {demangle(typeid(e).name()), e.what()};
  } catch (...) {
    return {"unknown", "an exception not derived from std::exception"};
  }
}

void log_callback_error(const char* which) noexcept {
  try {
    const ErrorInfo info = describe_current_exception();
    get_logger()->error("mpx::Pool: a {} threw {}: {}", which, info.type, info.message);
  } catch (...) {
  }
}

namespace {

// Tasks handed to one worker at once: one while a worker's task time is
// unknown or long, so that a task never waits behind a slow (or stuck) one
// while another worker is free. With short tasks, at least one more than it
// runs: its next task is there when it finishes, instead of a round trip
// through this thread (tens of microseconds, more on a busy machine: 10% of
// a 1 ms task). Fast tasks get enough to cover window_cover_ns.
constexpr std::size_t min_window = 1;
constexpr std::size_t short_window = 2;
constexpr std::size_t max_window = 512;
constexpr double window_cover_ns = 200'000;
constexpr double short_task_ns = 5'000'000;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

std::string describe_exit(int code) {
  return code < 0 ? "killed by signal " + std::to_string(-code) : "exit code " + std::to_string(code);
}

enum class Key : std::uint64_t { wake = 1, listener = 2 };
// Worker events: slot << 2 | 0 (socket) or 1 (pidfd).
std::uint64_t socket_key(std::uint64_t slot) { return slot << 2; }
std::uint64_t pidfd_key(std::uint64_t slot) { return (slot << 2) | 1; }

}  // namespace

class PoolCore {
 public:
  PoolCore(const PoolOptions& options, Initializer initializer);
  ~PoolCore();

  void submit(std::vector<TaskSpec> tasks);
  void close();
  void terminate();
  bool join(std::optional<std::chrono::nanoseconds> timeout);
  [[nodiscard]] int processes() const { return processes_; }
  [[nodiscard]] std::vector<pid_t> pids() const {
    std::lock_guard lock(mutex_);
    return pids_;
  }
  [[nodiscard]] PoolStats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }

 private:
  struct Task {
    std::uint64_t id = 0;
    TaskSpec spec;
    int losses = 0;
  };
  struct Worker {
    std::uint64_t slot = 0;
    std::unique_ptr<Process> process;
    pid_t pid = 0;
    UniqueFd socket;
    bool ready = false;  // connected and initialised
    bool eof = false;
    std::deque<Task> in_flight;  // sent, in order; the front one runs
    std::uint64_t sent = 0;
    Bytes out;
    std::size_t out_done = 0;
    bool writing = false;  // EPOLLOUT armed
    FrameBuffer in;
    Clock::time_point head_since{};
    double task_ns = 0;  // moving average of a task's time
    std::exception_ptr kill_reason;  // set when we stopped it for a timeout
    std::uint64_t killed_task = 0;   // the task that timed out
    std::optional<Clock::time_point> sigkill_at;
  };
  enum class Phase { running, closed, terminating, done };

  // ---- the pool's thread
  void run();
  void start_worker();
  void take_submissions();
  void dispatch();
  std::size_t window(const Worker& w) const;
  void send_task(Worker& w, Task task);
  void flush(Worker& w);
  void on_socket(Worker& w, std::uint32_t events);
  void on_frame(Worker& w, const Frame& frame);
  void on_exit(std::uint64_t slot);
  void check_deadlines();
  int epoll_timeout_ms() const;
  void fail(Task& task, std::exception_ptr error);
  void complete(Task& task, const Frame& frame, Worker& w);
  void break_pool(const std::string& why);
  void shut_down(bool kill);
  void watch(int fd, std::uint64_t key, std::uint32_t events);
  void unwatch(int fd);
  std::optional<std::chrono::milliseconds> timeout_of(const Task& task) const {
    return task.spec.timeout ? task.spec.timeout : options_.task_timeout;
  }
  int retries_of(const Task& task) const { return task.spec.retries.value_or(options_.retries); }
  void publish_pids();

  const PoolOptions options_;
  const int processes_;
  const Initializer initializer_;
  const StartMethod start_method_;
  std::string socket_name_;
  UniqueFd listener_;
  UniqueFd epoll_;
  UniqueFd wake_;

  // Shared with the callers.
  mutable std::mutex mutex_;
  std::condition_variable finished_cv_;
  std::deque<Task> submitted_;
  Phase phase_ = Phase::running;
  std::optional<std::string> broken_;
  std::atomic<bool> wake_pending_{false};
  bool thread_done_ = false;
  std::vector<pid_t> pids_;
  PoolStats stats_;
  std::uint64_t next_task_id_ = 1;

  // The pool's thread only.
  std::deque<Task> queue_;
  std::map<std::uint64_t, Worker> workers_;
  std::uint64_t next_slot_ = 1;
  std::uint64_t worker_number_ = 0;
  bool closing_ = false;
  bool terminating_ = false;
  std::optional<std::string> break_reason_;  // breaks the pool at the end of this round of events
  int failed_starts_ = 0;                    // workers in a row that died before they were ready
  std::thread thread_;
  std::thread::id thread_id_;
};

// ---- construction and the callers' side

namespace {
StartMethod checked_start_method(const PoolOptions& options) {
  const StartMethod method = options.start_method.value_or(get_start_method());
  // Tasks travel as the addresses of their (template-instantiated) invokers,
  // which a new program image, loaded elsewhere, does not share.
  if (method == StartMethod::spawn)
    throw PoolError("mpx::Pool: the spawn start method is not supported (use fork or forkserver)");
  return method;
}
int checked_processes(const PoolOptions& options) {
  const int n = options.processes.value_or(cpu_count());
  if (n < 1) throw PoolError("mpx::Pool: the number of processes must be at least 1, got " + std::to_string(n));
  if (options.maxtasksperchild && *options.maxtasksperchild < 1)
    throw PoolError("mpx::Pool: maxtasksperchild must be at least 1, got " + std::to_string(*options.maxtasksperchild));
  if (options.retries < 0) throw PoolError("mpx::Pool: retries must not be negative");
  if (options.task_timeout && options.task_timeout->count() <= 0)
    throw PoolError("mpx::Pool: task_timeout must be positive");
  return n;
}
// A worker's sleeps and timed waits end within 1 us of their time unless
// the caller chose a timer slack (Linux's default 50 us is paid by every
// short sleep of a task: 5% of a 1 ms one).
PoolOptions with_worker_defaults(PoolOptions options) {
  if (!options.worker_limits.timer_slack) options.worker_limits.timer_slack = std::chrono::microseconds(1);
  return options;
}
}  // namespace

PoolCore::PoolCore(const PoolOptions& options, Initializer initializer)
    : options_(with_worker_defaults(options)),
      processes_(checked_processes(options)),
      initializer_(std::move(initializer)),
      start_method_(checked_start_method(options)) {
  std::random_device random;
  static std::atomic<unsigned> counter{0};
  socket_name_ = "mpx-pool." + std::to_string(::getpid()) + "." + std::to_string(counter++) + "." +
                 std::to_string(random()) + std::to_string(random());
  listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listener_) throw PoolError(errno_text("mpx::Pool: socket"));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path + 1, socket_name_.data(), socket_name_.size());
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + socket_name_.size());
  if (::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0 ||
      ::listen(listener_.get(), 128) != 0)
    throw PoolError(errno_text("mpx::Pool: cannot listen for its workers"));
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!epoll_ || !wake_) throw PoolError(errno_text("mpx::Pool: epoll/eventfd"));
  watch(wake_.get(), static_cast<std::uint64_t>(Key::wake), EPOLLIN);
  watch(listener_.get(), static_cast<std::uint64_t>(Key::listener), EPOLLIN);

  // The workers are started by the pool's thread (the kernel ties their
  // parent-death signal to it); the first start's error is ours to throw.
  std::promise<void> started;
  auto started_future = started.get_future();
  thread_ = std::thread([this, &started] {
    thread_id_ = std::this_thread::get_id();
    try {
      for (int i = 0; i < processes_; ++i) start_worker();
    } catch (...) {
      shut_down(true);
      {
        std::lock_guard lock(mutex_);
        thread_done_ = true;
      }
      started.set_exception(std::current_exception());
      return;
    }
    started.set_value();
    run();
  });
  try {
    started_future.get();
  } catch (const ProcessError& e) {
    // Limits Process::start refuses (worker_limits), or no fork: the pool's error.
    thread_.join();
    throw PoolError(std::string("mpx::Pool: cannot start its workers: ") + e.what());
  } catch (...) {
    thread_.join();
    throw;
  }
}

PoolCore::~PoolCore() {
  terminate();
  if (thread_.joinable()) thread_.join();
}

void PoolCore::submit(std::vector<TaskSpec> specs) {
  {
    std::lock_guard lock(mutex_);
    if (broken_) throw PoolError("mpx::Pool: the pool is broken: " + *broken_);
    if (phase_ != Phase::running)
      throw PoolError(phase_ == Phase::closed ? "mpx::Pool: the pool is closed (close() was called)"
                                              : "mpx::Pool: the pool is not running (terminate() was called)");
    for (auto& spec : specs) submitted_.push_back(Task{next_task_id_++, std::move(spec), 0});
  }
  if (!wake_pending_.exchange(true)) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_.get(), &one, sizeof one);
  }
}

void PoolCore::close() {
  {
    std::lock_guard lock(mutex_);
    if (phase_ == Phase::running) phase_ = Phase::closed;
  }
  wake_pending_.store(true);
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_.get(), &one, sizeof one);
}

void PoolCore::terminate() {
  {
    std::lock_guard lock(mutex_);
    if (phase_ == Phase::running || phase_ == Phase::closed) phase_ = Phase::terminating;
  }
  wake_pending_.store(true);
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_.get(), &one, sizeof one);
  // From a callback (the pool's own thread) the request is all we can do.
  if (std::this_thread::get_id() != thread_id_) join(std::nullopt);
}

bool PoolCore::join(std::optional<std::chrono::nanoseconds> timeout) {
  std::unique_lock lock(mutex_);
  if (phase_ == Phase::running)
    throw PoolError("mpx::Pool::join: call close() or terminate() first");
  if (std::this_thread::get_id() == thread_id_)
    throw PoolError("mpx::Pool::join: called from a callback, on the pool's own thread");
  if (timeout) {
    if (!finished_cv_.wait_for(lock, *timeout, [&] { return thread_done_; })) return false;
  } else {
    finished_cv_.wait(lock, [&] { return thread_done_; });
  }
  lock.unlock();
  static std::mutex join_mutex;  // std::thread::join must not race with itself
  std::lock_guard join_lock(join_mutex);
  if (thread_.joinable()) thread_.join();
  return true;
}

// ---- the pool's thread

void PoolCore::watch(int fd, std::uint64_t key, std::uint32_t events) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = key;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0 && errno == EEXIST)
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &event);
}

void PoolCore::unwatch(int fd) { ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

void PoolCore::start_worker() {
  WorkerConfig config;
  config.socket_name = socket_name_;
  config.max_tasks = options_.maxtasksperchild ? static_cast<std::uint64_t>(*options_.maxtasksperchild) : 0;
  config.initializer_invoker = reinterpret_cast<std::uint64_t>(initializer_.invoker);
  config.initializer_target = initializer_.target;
  config.initializer_arguments = initializer_.arguments;
  auto process = std::make_unique<Process>(ProcessOptions()
                                               .with_name("PoolWorker-" + std::to_string(++worker_number_))
                                               .with_daemon(true)
                                               .with_start_method(start_method_)
                                               .with_limits(options_.worker_limits),
                                           &mpx_pool_worker_main, std::move(config));
  process->start();
  const std::uint64_t slot = next_slot_++;
  Worker& w = workers_[slot];
  w.slot = slot;
  w.pid = process->pid();
  w.process = std::move(process);
  watch(w.process->sentinel(), pidfd_key(slot), EPOLLIN);
  {
    std::lock_guard lock(mutex_);
    ++stats_.workers_started;
  }
  publish_pids();
}

void PoolCore::publish_pids() {
  std::vector<pid_t> pids;
  for (const auto& [slot, w] : workers_) pids.push_back(w.pid);
  std::lock_guard lock(mutex_);
  pids_ = std::move(pids);
}

void PoolCore::take_submissions() {
  std::lock_guard lock(mutex_);
  while (!submitted_.empty()) {
    queue_.push_back(std::move(submitted_.front()));
    submitted_.pop_front();
  }
  closing_ = phase_ != Phase::running;
  terminating_ = phase_ == Phase::terminating;
}

std::size_t PoolCore::window(const Worker& w) const {
  if (w.task_ns <= 0 || w.task_ns > short_task_ns) return min_window;
  const auto n = static_cast<std::size_t>(window_cover_ns / w.task_ns) + 1;
  return std::clamp(n, short_window, max_window);
}

void PoolCore::dispatch() {
  while (!queue_.empty()) {
    // The ready worker with the fewest tasks in hand and room for another.
    Worker* best = nullptr;
    for (auto& [slot, w] : workers_) {
      if (!w.ready || w.eof || w.kill_reason || w.in_flight.size() >= window(w)) continue;
      if (options_.maxtasksperchild && w.sent >= static_cast<std::uint64_t>(*options_.maxtasksperchild)) continue;
      if (!best || w.in_flight.size() < best->in_flight.size()) best = &w;
    }
    if (!best) break;
    Task task = std::move(queue_.front());
    queue_.pop_front();
    send_task(*best, std::move(task));
  }
  for (auto& [slot, w] : workers_) flush(w);
}

void PoolCore::send_task(Worker& w, Task task) {
  const auto& spec = task.spec;
  append_frame(w.out, FrameKind::task,
               {task.id, reinterpret_cast<std::uint64_t>(spec.invoker), static_cast<std::uint64_t>(spec.target)},
               *spec.arguments);
  if (w.in_flight.empty()) w.head_since = Clock::now();
  w.in_flight.push_back(std::move(task));
  ++w.sent;
}

void PoolCore::flush(Worker& w) {
  while (w.out_done < w.out.size() && !w.eof) {
    const ssize_t n = ::send(w.socket.get(), w.out.data() + w.out_done, w.out.size() - w.out_done,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      w.out_done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!w.writing) {
        w.writing = true;
        watch(w.socket.get(), socket_key(w.slot), EPOLLIN | EPOLLOUT);
      }
      return;
    }
    // The worker is going away; its pidfd tells the rest.
    w.eof = true;
    unwatch(w.socket.get());
    return;
  }
  if (w.out_done == w.out.size()) {
    w.out.clear();
    w.out_done = 0;
    if (w.writing) {
      w.writing = false;
      if (!w.eof) watch(w.socket.get(), socket_key(w.slot), EPOLLIN);
    }
  }
}

void PoolCore::on_socket(Worker& w, std::uint32_t events) {
  if (events & EPOLLOUT) flush(w);
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  for (;;) {
    auto room = w.in.reserve(std::max<std::size_t>(64 * 1024, w.in.wanted()));
    const ssize_t n = ::recv(w.socket.get(), room.data(), room.size(), MSG_DONTWAIT);
    if (n > 0) {
      w.in.commit(static_cast<std::size_t>(n));
      try {
        while (auto frame = w.in.next()) on_frame(w, *frame);
      } catch (const DecodeError& e) {
        get_logger()->error("mpx::Pool: worker {} sent a corrupt frame ({}); killing it", w.pid, e.what());
        w.process->kill();
        w.eof = true;
        unwatch(w.socket.get());
        return;
      }
      if (static_cast<std::size_t>(n) < room.size()) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    // End of stream (or an error): the worker exits; its pidfd settles its tasks.
    w.eof = true;
    unwatch(w.socket.get());
    return;
  }
}

void PoolCore::on_frame(Worker& w, const Frame& frame) {
  switch (frame.kind) {
    case FrameKind::ready:
      w.ready = true;
      failed_starts_ = 0;
      return;
    case FrameKind::init_failed: {
      const auto info = decode<ErrorInfo>(frame.body);
      get_logger()->error("mpx::Pool: the initializer threw in worker {}: {}: {}", w.pid, info.type, info.message);
      break_reason_ = "the initializer threw " + info.type + ": " + info.message;
      return;
    }
    case FrameKind::result:
    case FrameKind::error: {
      if (frame.body.size() < 8 || w.in_flight.empty() || w.in_flight.front().id != get_u64(frame.body, 0))
        throw DecodeError(DecodeError::Kind::malformed_payload, "mpx::Pool: a result for a task the worker does not hold");
      Task task = std::move(w.in_flight.front());
      w.in_flight.pop_front();
      const auto now = Clock::now();
      const double took = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - w.head_since).count());
      w.task_ns = w.task_ns <= 0 ? took : 0.8 * w.task_ns + 0.2 * took;
      w.head_since = now;
      complete(task, frame, w);
      return;
    }
    case FrameKind::task:
      break;
  }
  throw DecodeError(DecodeError::Kind::malformed_payload, "mpx::Pool: a frame of an unknown kind from a worker");
}

void PoolCore::complete(Task& task, const Frame& frame, Worker&) {
  // Counted before the sink hears of it: the sink may wake a caller who then reads stats().
  {
    std::lock_guard lock(mutex_);
    ++stats_.tasks_done;
  }
  const auto body = frame.body.subspan(8);
  try {
    if (frame.kind == FrameKind::result) {
      task.spec.sink->succeeded(task.spec.chunk, body);
    } else {
      auto info = decode<ErrorInfo>(body);
      task.spec.sink->failed(task.spec.chunk,
                             std::make_exception_ptr(RemoteError(std::move(info.type), std::move(info.message))));
    }
  } catch (const Error&) {
    // A result that does not decode (wrong type, corrupt): the task fails with that error.
    task.spec.sink->failed(task.spec.chunk, std::current_exception());
  }
}

void PoolCore::fail(Task& task, std::exception_ptr error) {
  {
    std::lock_guard lock(mutex_);
    ++stats_.tasks_done;  // before the sink, as in complete()
  }
  try {
    task.spec.sink->failed(task.spec.chunk, std::move(error));
  } catch (...) {
    log_callback_error("result handler");
  }
}

void PoolCore::on_exit(std::uint64_t slot) {
  auto it = workers_.find(slot);
  if (it == workers_.end()) return;
  Worker& w = it->second;
  // Results it sent before it died still count.
  if (!w.eof) on_socket(w, EPOLLIN);
  w.process->join();
  const int code = w.process->exitcode().value_or(-9);
  unwatch(w.process->sentinel());
  if (!w.eof) unwatch(w.socket.get());

  std::deque<Task> orphans = std::move(w.in_flight);
  const bool retired = orphans.empty() && code == 0;
  if (!orphans.empty() && !terminating_) {
    Task head = std::move(orphans.front());
    orphans.pop_front();
    if (w.kill_reason && head.id != w.killed_task) {
      // The timed-out task finished just before the kill: this one never started.
      orphans.push_front(std::move(head));
    } else if (w.kill_reason) {
      get_logger()->warn("mpx::Pool: worker {} was stopped: a task ran past its timeout", w.pid);
      fail(head, w.kill_reason);
    } else {
      const std::string what = "mpx::Pool: worker " + std::to_string(w.pid) + " (" + w.process->name() +
                               ") died running a task: " + describe_exit(code);
      get_logger()->warn("{}", what);
      {
        std::lock_guard lock(mutex_);
        ++stats_.workers_lost;
      }
      if (head.losses < retries_of(head)) {
        ++head.losses;
        {
          std::lock_guard lock(mutex_);
          ++stats_.tasks_retried;
        }
        head.spec.sink->retried();
        orphans.push_front(std::move(head));
      } else {
        fail(head, std::make_exception_ptr(WorkerLost(what, w.pid, code)));
      }
    }
    // The tasks behind it never started: they go first to the others.
    for (auto task = orphans.rbegin(); task != orphans.rend(); ++task) queue_.push_front(std::move(*task));
    orphans.clear();
  } else if (!retired && !terminating_) {
    get_logger()->warn("mpx::Pool: worker {} ({}) exited while idle: {}", w.pid, w.process->name(), describe_exit(code));
  }
  if (!w.ready && !retired && !terminating_ && ++failed_starts_ >= 3 * processes_)
    break_reason_ = "workers die before they are ready (last: " + describe_exit(code) + ")";
  for (auto& task : orphans) queue_.push_front(std::move(task));  // terminating: failed below
  workers_.erase(it);
  const bool work_left = !queue_.empty() || std::any_of(workers_.begin(), workers_.end(), [](const auto& entry) {
    return !entry.second.in_flight.empty();
  });
  if (!terminating_ && !break_reason_ && (!closing_ || work_left)) {
    try {
      start_worker();
    } catch (const Error& e) {
      get_logger()->error("mpx::Pool: cannot start a replacement worker: {}", e.what());
      if (workers_.empty()) break_reason_ = std::string("no worker can start: ") + e.what();
    }
  }
  publish_pids();
}

void PoolCore::check_deadlines() {
  const auto now = Clock::now();
  for (auto& [slot, w] : workers_) {
    if (w.sigkill_at && now >= *w.sigkill_at) {
      w.process->kill();
      w.sigkill_at.reset();
      continue;
    }
    if (w.kill_reason || w.in_flight.empty()) continue;
    const auto limit = timeout_of(w.in_flight.front());
    if (!limit || now - w.head_since < *limit) continue;
    w.killed_task = w.in_flight.front().id;
    w.kill_reason = std::make_exception_ptr(TaskTimeout(
        "mpx::Pool: a task ran longer than its timeout of " + std::to_string(limit->count()) + " ms", *limit));
    {
      std::lock_guard lock(mutex_);
      ++stats_.tasks_timed_out;
      ++stats_.workers_lost;
    }
    w.process->terminate();
    w.sigkill_at = now + options_.kill_grace;
  }
}

int PoolCore::epoll_timeout_ms() const {
  std::optional<Clock::time_point> next;
  auto consider = [&](Clock::time_point at) {
    if (!next || at < *next) next = at;
  };
  for (const auto& [slot, w] : workers_) {
    if (w.sigkill_at) consider(*w.sigkill_at);
    if (!w.kill_reason && !w.in_flight.empty())
      if (const auto limit = timeout_of(w.in_flight.front())) consider(w.head_since + *limit);
  }
  if (!next) return -1;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*next - Clock::now()).count() + 1;
  return static_cast<int>(std::clamp<long long>(left, 0, 60'000));
}

void PoolCore::break_pool(const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    if (broken_) return;
    broken_ = why;
  }
  // Fail everything now; the workers are stopped as by terminate().
  auto error = std::make_exception_ptr(PoolError("mpx::Pool: the pool is broken: " + why));
  take_submissions();
  for (auto& task : queue_) fail(task, error);
  queue_.clear();
  for (auto& [slot, w] : workers_) {
    for (auto& task : w.in_flight) fail(task, error);
    w.in_flight.clear();
  }
  shut_down(true);
}

// Stops every worker: closing their sockets lets idle ones exit; `kill`
// sends SIGTERM, then SIGKILL after the grace period. Returns once all are reaped.
void PoolCore::shut_down(bool kill) {
  for (auto& [slot, w] : workers_) {
    if (w.socket) ::shutdown(w.socket.get(), SHUT_WR);
    // A worker not yet connected (or accepted) would wait for a pool that
    // no longer reads; it has done no work: stop it.
    if (kill || !w.socket || !w.ready) w.process->terminate();
  }
  const auto sigkill_at = Clock::now() + options_.kill_grace;
  for (auto& [slot, w] : workers_) {
    const auto left = sigkill_at - Clock::now();
    if (!kill || !w.process->join(left > Clock::duration::zero() ? left : Clock::duration::zero())) {
      if (kill) w.process->kill();
      w.process->join();
    }
  }
  // Tasks still in the workers' hands go back to the queue (to be failed).
  for (auto it = workers_.rbegin(); it != workers_.rend(); ++it)
    for (auto task = it->second.in_flight.rbegin(); task != it->second.in_flight.rend(); ++task)
      queue_.push_front(std::move(*task));
  workers_.clear();
  publish_pids();
}

void PoolCore::run() {
  epoll_event events[64];
  for (;;) {
    take_submissions();
    if (terminating_) break;
    dispatch();
    const bool idle = queue_.empty() && std::all_of(workers_.begin(), workers_.end(), [](const auto& entry) {
                        return entry.second.in_flight.empty();
                      });
    if ((closing_ && idle) || broken_) break;  // broken_: written by this thread only

    const int n = ::epoll_wait(epoll_.get(), events, 64, epoll_timeout_ms());
    if (n < 0 && errno != EINTR) {
      get_logger()->error("mpx::Pool: epoll_wait: {}", std::strerror(errno));
      break_pool("epoll_wait failed");
      break;
    }
    for (int i = 0; i < n; ++i) {
      const std::uint64_t key = events[i].data.u64;
      if (key == static_cast<std::uint64_t>(Key::wake)) {
        std::uint64_t count = 0;
        [[maybe_unused]] const auto r = ::read(wake_.get(), &count, sizeof count);
        wake_pending_.store(false);
      } else if (key == static_cast<std::uint64_t>(Key::listener)) {
        for (;;) {
          UniqueFd peer(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
          if (!peer) break;
          ucred credentials{};
          socklen_t size = sizeof credentials;
          ::getsockopt(peer.get(), SOL_SOCKET, SO_PEERCRED, &credentials, &size);
          auto w = std::find_if(workers_.begin(), workers_.end(), [&](const auto& entry) {
            return entry.second.pid == credentials.pid && !entry.second.socket;
          });
          if (w == workers_.end()) {
            get_logger()->warn("mpx::Pool: refused a connection from pid {}, not one of its workers", credentials.pid);
            continue;
          }
          w->second.socket = std::move(peer);
          watch(w->second.socket.get(), socket_key(w->first), EPOLLIN);
        }
      } else {
        const std::uint64_t slot = key >> 2;
        if (key & 1) {
          on_exit(slot);
        } else if (auto w = workers_.find(slot); w != workers_.end()) {
          on_socket(w->second, events[i].events);
        }
      }
    }
    check_deadlines();
    if (break_reason_) break_pool(*break_reason_);
  }

  // Leaving: closed and idle (workers exit on their own), broken, or terminating.
  take_submissions();
  shut_down(terminating_ || broken_.has_value());
  auto error = std::make_exception_ptr(PoolError("mpx::Pool: terminated before the task finished"));
  for (auto& task : queue_) fail(task, error);
  queue_.clear();
  {
    std::unique_lock lock(mutex_);
    // Late submissions raced with terminate(): fail them too.
    std::deque<Task> late = std::move(submitted_);
    phase_ = Phase::done;
    lock.unlock();
    for (auto& task : late) fail(task, error);
    lock.lock();
    thread_done_ = true;
  }
  finished_cv_.notify_all();
}

// ---- the free functions behind Pool

std::shared_ptr<PoolCore> start_pool(const PoolOptions& options, Initializer initializer) {
  return std::make_shared<PoolCore>(options, std::move(initializer));
}
void submit(PoolCore& core, std::vector<TaskSpec> tasks) { core.submit(std::move(tasks)); }
int pool_processes(const PoolCore& core) { return core.processes(); }
void close_pool(PoolCore& core) { core.close(); }
void terminate_pool(PoolCore& core) { core.terminate(); }
bool join_pool(PoolCore& core, std::optional<std::chrono::nanoseconds> timeout) { return core.join(timeout); }
std::vector<pid_t> worker_pids(const PoolCore& core) { return core.pids(); }
PoolStats pool_stats(const PoolCore& core) { return core.stats(); }

}  // namespace mpx::detail::pool

namespace mpx {

Pool::~Pool() {
  if (core_) detail::pool::terminate_pool(*core_);
}
void Pool::close() { detail::pool::close_pool(*core_); }
void Pool::terminate() { detail::pool::terminate_pool(*core_); }
void Pool::join() { detail::pool::join_pool(*core_, std::nullopt); }
bool Pool::join_for(std::optional<std::chrono::nanoseconds> timeout) { return detail::pool::join_pool(*core_, timeout); }
int Pool::processes() const { return detail::pool::pool_processes(*core_); }
std::vector<pid_t> Pool::worker_pids() const { return detail::pool::worker_pids(*core_); }
PoolStats Pool::stats() const { return detail::pool::pool_stats(*core_); }

}  // namespace mpx
