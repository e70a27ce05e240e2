// DeathWatch: pidfds in an epoll set (see death_watch.hpp).
#include "mpx/actors/detail/death_watch.hpp"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "mpx/logging.hpp"

namespace mpx::actors::detail {

DeathWatch::DeathWatch(std::function<void()> on_death) : on_death_(std::move(on_death)) {}

DeathWatch::~DeathWatch() {
  if (thread_.joinable()) {
    const std::uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }
}

void DeathWatch::watch(pid_t pid) {
  if (pid <= 0) return;
  bool gone = false;
  {
    std::lock_guard lock(mutex_);
    if (failed_ || watched_.count(pid) != 0 || watched_.size() >= kMaxWatched) return;
    if (!thread_.joinable()) {
      epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
      stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = 0;  // pid 0 is never watched: the stop event
      if (!epoll_ || !stop_ || ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, stop_.get(), &ev) != 0) {
        get_logger()->warn("mpx actors: no death watch ({}); hosts' deaths are seen by the 10 ms sweep",
                           std::strerror(errno));
        failed_ = true;
        return;
      }
      try {
        thread_ = std::thread([this] { run(); });
      } catch (const std::system_error& e) {
        get_logger()->warn("mpx actors: no death watch ({}); hosts' deaths are seen by the 10 ms sweep", e.what());
        failed_ = true;
        return;
      }
    }
    mpx::detail::UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!fd) {
      gone = (errno == ESRCH);  // other errors (EMFILE...): leave it to the sweep
    } else {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = static_cast<std::uint64_t>(pid);
      if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd.get(), &ev) == 0) watched_.emplace(pid, std::move(fd));
    }
  }
  if (gone) on_death_();
}

void DeathWatch::run() {
  ::pthread_setname_np(::pthread_self(), "mpx-deathwatch");
  for (;;) {
    epoll_event events[16];
    const int n = ::epoll_wait(epoll_.get(), events, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      get_logger()->warn("mpx actors: death watch stopped: epoll_wait: {}", std::strerror(errno));
      return;
    }
    bool died = false;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == 0) return;
      std::lock_guard lock(mutex_);
      auto it = watched_.find(static_cast<pid_t>(events[i].data.u64));
      if (it == watched_.end()) continue;
      (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.get(), nullptr);
      watched_.erase(it);  // closes the pidfd
      died = true;
    }
    if (died) on_death_();
  }
}

}  // namespace mpx::actors::detail
