// Supervisor (see mpx/actors/supervisor.hpp).
#include "mpx/actors/supervisor.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "mpx/detail/unique_fd.hpp"
#include "mpx/logging.hpp"
#include "mpx/process.hpp"
#include "runtime.hpp"

namespace mpx::actors {

using Clock = std::chrono::steady_clock;

std::string ExitReport::to_string() const {
  std::string code = exit_code ? std::to_string(*exit_code) : "unknown";
  return supervisor + "/" + child + " (pid " + std::to_string(pid) + ") " + how + ", exit code " + code +
         ", restarts " + std::to_string(restarts);
}

ChildSpec ChildSpec::process(std::string id, std::function<void()> target) {
  ChildSpec spec;
  spec.id = std::move(id);
  spec.kind = Kind::process;
  spec.target = std::move(target);
  return spec;
}

ChildSpec ChildSpec::host(std::string id, HostOptions options, std::vector<ActorSpec> actors) {
  ChildSpec spec;
  spec.id = std::move(id);
  spec.kind = Kind::host;
  spec.host_options = std::move(options);
  spec.actors = std::move(actors);
  return spec;
}

ChildSpec ChildSpec::supervisor(std::string id, SupervisorOptions options, std::vector<ChildSpec> children) {
  ChildSpec spec;
  spec.id = std::move(id);
  spec.kind = Kind::supervisor;
  spec.shutdown = std::chrono::milliseconds::max();  // infinity, as OTP's default for supervisors
  spec.supervisor_options = std::make_shared<const SupervisorOptions>(std::move(options));
  spec.children = std::move(children);
  return spec;
}

namespace {

// The body of a nested supervisor's process: runs the supervisor until it
// gives up (exit 1: its parent sees the escalation) or gets SIGTERM (exit 0).
// SIGTERM is blocked and waited for with sigtimedwait: no handler.
void run_nested(const std::string& name, const SupervisorOptions& options, const std::vector<ChildSpec>& children) {
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, nullptr);
  Supervisor supervisor(name, options, children);
  const timespec tick{0, 20'000'000};
  for (;;) {
    if (sigtimedwait(&term, nullptr, &tick) == SIGTERM) {
      supervisor.stop();
      mpx::exit(0);
    }
    if (supervisor.failed()) {
      get_logger()->error("mpx supervisor {}: {}", name, supervisor.failure());
      mpx::exit(1);
    }
  }
}

}  // namespace

struct Supervisor::Impl {
  struct Child {
    ChildSpec spec;
    std::optional<Host> host;
    std::optional<Process> process;
    std::optional<ProcessHandle> handle;
    enum class State { stopped, running, restarting } state = State::stopped;
    unsigned restarts = 0;
    unsigned failures_in_a_row = 0;
    Clock::time_point started_at{};
    Clock::time_point restart_at{};
    std::optional<int> last_exit;
  };

  std::string name;
  SupervisorOptions options;
  std::vector<Child> children;
  mutable std::mutex mutex;
  mutable std::condition_variable changed;
  std::deque<ExitReport> history;
  std::deque<Clock::time_point> restart_times;
  bool failed = false;
  bool stopped = false;
  std::string failure;
  mpx::detail::UniqueFd wake;
  std::atomic<bool> stop_requested{false};
  std::thread watcher;
  std::mt19937 rng{std::random_device{}()};

  void start_child(Child& c) {
    switch (c.spec.kind) {
      case ChildSpec::Kind::host:
        if (!c.host) {
          c.host.emplace(c.spec.id, c.spec.host_options);
          for (const auto& actor : c.spec.actors) c.host->spawn_with(actor.type, actor.name, actor.args);
        } else {
          c.host->restart();  // same mailbox; named actors spawned again
        }
        c.handle = c.host->process();
        break;
      case ChildSpec::Kind::process:
        c.process.emplace(ProcessOptions().with_name(c.spec.id).with_start_method(StartMethod::fork), c.spec.target);
        c.process->start();
        c.handle = c.process->handle();
        break;
      case ChildSpec::Kind::supervisor: {
        auto options = c.spec.supervisor_options;
        auto specs = c.spec.children;
        auto id = c.spec.id;
        c.process.emplace(ProcessOptions().with_name(c.spec.id).with_start_method(StartMethod::fork),
                          [id, options, specs] { run_nested(id, *options, specs); });
        c.process->start();
        c.handle = c.process->handle();
        break;
      }
    }
    c.state = Child::State::running;
    c.started_at = Clock::now();
    get_logger()->info("mpx supervisor {}: started {} (pid {})", name, c.spec.id, c.handle->pid());
  }

  // Stops a running child in order; its exit is reported as stopped.
  void stop_child(Child& c) {
    if (c.state != Child::State::running || !c.handle) {
      c.state = Child::State::stopped;
      return;
    }
    auto& h = *c.handle;
    const auto timeout = c.spec.shutdown;
    if (timeout.count() == 0) {
      h.kill();
      h.join();
    } else if (c.spec.kind == ChildSpec::Kind::host) {
      c.host->stop(timeout);
    } else {
      h.terminate();
      const bool infinite = timeout == std::chrono::milliseconds::max();
      if (infinite) {
        h.join();
      } else if (!h.join(timeout)) {
        get_logger()->warn("mpx supervisor {}: {} ignored SIGTERM for {} ms: killing it", name, c.spec.id,
                           timeout.count());
        h.kill();
        h.join();
      }
    }
    report(c, "stopped by the supervisor");
    c.state = Child::State::stopped;
  }

  void report(Child& c, std::string how) {
    ExitReport r;
    r.supervisor = name;
    r.child = c.spec.id;
    r.pid = c.handle ? c.handle->pid() : 0;
    r.exit_code = c.handle ? c.handle->exitcode() : std::nullopt;
    r.how = std::move(how);
    r.restarts = c.restarts;
    r.when = std::chrono::system_clock::now();
    c.last_exit = r.exit_code;
    const bool normal = r.exit_code && *r.exit_code == 0;
    if (normal)
      get_logger()->info("mpx supervisor: {}", r.to_string());
    else
      get_logger()->warn("mpx supervisor: {}", r.to_string());
    history.push_back(r);
    while (history.size() > options.history) history.pop_front();
    if (options.on_exit) {
      try {
        options.on_exit(r);
      } catch (const std::exception& e) {
        get_logger()->error("mpx supervisor {}: on_exit threw: {}", name, e.what());
      }
    }
  }

  std::chrono::milliseconds backoff_delay(Child& c) {
    const auto& b = options.backoff;
    if (Clock::now() - c.started_at >= b.reset_after) c.failures_in_a_row = 0;
    const unsigned k = c.failures_in_a_row++;
    if (b.min.count() <= 0) return std::chrono::milliseconds(0);
    double delay = static_cast<double>(b.min.count()) * std::pow(2.0, std::min(k, 30u));
    if (b.max.count() > 0) delay = std::min(delay, static_cast<double>(b.max.count()));
    if (b.jitter > 0) delay *= std::uniform_real_distribution<double>(1.0 - b.jitter, 1.0 + b.jitter)(rng);
    return std::chrono::milliseconds(static_cast<long long>(delay));
  }

  void give_up(const std::string& why) {
    failure = why;
    get_logger()->error("mpx supervisor {}: {}: stopping every child", name, why);
    for (auto it = children.rbegin(); it != children.rend(); ++it) stop_child(*it);
    failed = true;
    changed.notify_all();
  }

  void on_exit(std::size_t index) {
    Child& c = children[index];
    c.state = Child::State::stopped;
    const auto code = c.handle->exitcode();
    report(c, code && *code < 0 ? "killed by signal" : "exited");
    const bool abnormal = !code || *code != 0;
    const bool restart = c.spec.restart == RestartType::permanent ||
                         (c.spec.restart == RestartType::transient && abnormal);
    if (!restart) return;
    const auto now = Clock::now();
    restart_times.push_back(now);
    while (!restart_times.empty() && now - restart_times.front() > options.intensity.period) restart_times.pop_front();
    if (static_cast<int>(restart_times.size()) > options.intensity.restarts) {
      give_up("reached the maximum restart intensity (" + std::to_string(options.intensity.restarts) +
              " restarts in " + std::to_string(options.intensity.period.count()) + " ms)");
      return;
    }
    const auto at = now + backoff_delay(c);
    std::size_t first = index;
    if (options.strategy == Strategy::one_for_all) first = 0;
    std::size_t last = options.strategy == Strategy::one_for_one ? index : children.size() - 1;
    // Siblings caught by the strategy stop in reverse order.
    for (std::size_t i = last + 1; i-- > first;)
      if (i != index) stop_child(children[i]);
    for (std::size_t i = first; i <= last; ++i) {
      Child& s = children[i];
      if (i != index && s.spec.restart == RestartType::temporary) continue;
      s.state = Child::State::restarting;
      s.restart_at = at;
    }
  }

  void restart_due() {
    const auto now = Clock::now();
    for (auto& c : children) {
      if (c.state != Child::State::restarting || c.restart_at > now) continue;
      ++c.restarts;
      try {
        start_child(c);
      } catch (const std::exception& e) {
        get_logger()->error("mpx supervisor {}: restarting {} failed: {}", name, c.spec.id, e.what());
        c.state = Child::State::stopped;
        give_up("could not restart " + c.spec.id + ": " + e.what());
        return;
      }
    }
  }

  void watch() {
    while (!stop_requested.load()) {
      std::vector<pollfd> fds{{wake.get(), POLLIN, 0}};
      std::vector<std::size_t> who;
      int timeout_ms = 1000;
      {
        std::lock_guard lock(mutex);
        if (failed) return;
        const auto now = Clock::now();
        for (std::size_t i = 0; i < children.size(); ++i) {
          auto& c = children[i];
          if (c.state == Child::State::running) {
            fds.push_back({c.handle->sentinel(), POLLIN, 0});
            who.push_back(i);
          } else if (c.state == Child::State::restarting) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(c.restart_at - now).count();
            timeout_ms = std::min<int>(timeout_ms, static_cast<int>(std::max<long long>(0, left)));
          }
        }
      }
      ::poll(fds.data(), fds.size(), timeout_ms);
      if (stop_requested.load()) return;
      std::lock_guard lock(mutex);
      if (fds[0].revents & POLLIN) {
        std::uint64_t n;
        [[maybe_unused]] auto r = ::read(wake.get(), &n, sizeof n);
      }
      for (std::size_t k = 0; k < who.size(); ++k) {
        auto& c = children[who[k]];
        if (c.state == Child::State::running && (fds[k + 1].revents & (POLLIN | POLLHUP)) && !c.handle->is_alive()) {
          on_exit(who[k]);
          if (failed) return;
        }
      }
      restart_due();
      changed.notify_all();
    }
  }
};

Supervisor::Supervisor(std::string name, SupervisorOptions options, std::vector<ChildSpec> children)
    : impl_(std::make_unique<Impl>()) {
  detail::check_name(name, "supervisor name");
  impl_->name = std::move(name);
  impl_->options = std::move(options);
  impl_->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl_->wake) throw ActorError("mpx supervisor: eventfd failed");
  for (auto& spec : children) {
    Impl::Child c;
    c.spec = std::move(spec);
    impl_->children.push_back(std::move(c));
  }
  try {
    for (auto& c : impl_->children) impl_->start_child(c);
  } catch (...) {
    for (auto it = impl_->children.rbegin(); it != impl_->children.rend(); ++it) impl_->stop_child(*it);
    throw;
  }
  impl_->watcher = std::thread([impl = impl_.get()] { impl->watch(); });
}

Supervisor::~Supervisor() {
  try {
    stop();
  } catch (const std::exception& e) {
    get_logger()->error("mpx supervisor {}: stop failed: {}", impl_->name, e.what());
  }
}

void Supervisor::stop() {
  impl_->stop_requested.store(true);
  std::uint64_t one = 1;
  [[maybe_unused]] auto w = ::write(impl_->wake.get(), &one, sizeof one);
  if (impl_->watcher.joinable()) impl_->watcher.join();
  std::lock_guard lock(impl_->mutex);
  if (impl_->stopped) return;
  impl_->stopped = true;
  for (auto it = impl_->children.rbegin(); it != impl_->children.rend(); ++it) impl_->stop_child(*it);
  for (auto& c : impl_->children)
    if (c.host) c.host->shutdown(std::chrono::milliseconds(1000));  // retires the mailboxes
  impl_->changed.notify_all();
}

bool Supervisor::failed() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->failed;
}

std::string Supervisor::failure() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->failure;
}

bool Supervisor::wait_failed(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  return impl_->changed.wait_for(lock, timeout, [&] { return impl_->failed; });
}

const std::string& Supervisor::name() const { return impl_->name; }

std::vector<ChildInfo> Supervisor::which_children() const {
  std::lock_guard lock(impl_->mutex);
  std::vector<ChildInfo> out;
  for (const auto& c : impl_->children) {
    ChildInfo info;
    info.id = c.spec.id;
    info.kind = c.spec.kind;
    info.restarts = c.restarts;
    info.last_exit = c.last_exit;
    switch (c.state) {
      case Impl::Child::State::running:
        info.state = "running";
        info.pid = c.handle->pid();
        break;
      case Impl::Child::State::restarting: info.state = "restarting"; break;
      case Impl::Child::State::stopped: info.state = "stopped"; break;
    }
    out.push_back(std::move(info));
  }
  return out;
}

ChildCounts Supervisor::count_children() const {
  ChildCounts counts;
  for (const auto& info : which_children()) {
    ++counts.specs;
    if (info.state == "running") ++counts.active;
    if (info.kind == ChildSpec::Kind::supervisor)
      ++counts.supervisors;
    else
      ++counts.workers;
  }
  return counts;
}

std::vector<ExitReport> Supervisor::reports() const {
  std::lock_guard lock(impl_->mutex);
  return {impl_->history.begin(), impl_->history.end()};
}

Host Supervisor::host(const std::string& id) const {
  std::lock_guard lock(impl_->mutex);
  for (const auto& c : impl_->children)
    if (c.spec.id == id && c.host) return *c.host;
  throw ActorError("mpx supervisor " + impl_->name + ": no host child '" + id + "'");
}

}  // namespace mpx::actors
