#include "mpx/shared_memory_manager.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <utility>

#include "mpx/detail/shm_tracker.hpp"

namespace mpx {

struct SharedMemoryManager::State {
  pid_t owner = ::getpid();
  mutable std::mutex mutex;  // guards names and shut_down
  std::vector<std::string> names;
  bool shut_down = false;

  void check_usable() const {
    if (owner != ::getpid()) {
      throw SharedMemoryError("this SharedMemoryManager belongs to pid " + std::to_string(owner) +
                              ": only that process may make segments through it");
    }
    if (shut_down) throw SharedMemoryError("the SharedMemoryManager has been shut down");
  }
};

SharedMemoryManager::SharedMemoryManager() : state_(std::make_unique<State>()) {}
SharedMemoryManager::SharedMemoryManager(SharedMemoryManager&&) noexcept = default;

SharedMemoryManager& SharedMemoryManager::operator=(SharedMemoryManager&& other) noexcept {
  if (this != &other) {
    try {
      shutdown();  // the segments this one made are freed, as at destruction
    } catch (...) {
      // shutdown() only throws for a moved-from manager; nothing to free then.
    }
    state_ = std::move(other.state_);
  }
  return *this;
}

SharedMemoryManager::~SharedMemoryManager() {
  try {
    shutdown();
  } catch (...) {
    // Nothing to report to from a destructor; the tracker frees what is left.
  }
}

template <class Make>
auto SharedMemoryManager::make(Make&& make_segment) {
  if (!state_) throw SharedMemoryError("use of a moved-from SharedMemoryManager");
  // Held while making: a concurrent shutdown() either sees the name or
  // happened before (and then this throws).
  std::lock_guard lock(state_->mutex);
  state_->check_usable();
  auto made = make_segment();
  state_->names.push_back(made.name());
  return made;
}

mpx::SharedMemory SharedMemoryManager::SharedMemory(std::int64_t size) {
  return make([size] { return mpx::SharedMemory::create(size); });
}

mpx::ShareableList SharedMemoryManager::ShareableList(const std::vector<ShareableList::Item>& items) {
  return make([&items] { return mpx::ShareableList(items); });
}

void SharedMemoryManager::shutdown() {
  if (!state_ || state_->owner != ::getpid()) return;  // moved from, or a forked child's copy
  std::vector<std::string> names;
  {
    std::lock_guard lock(state_->mutex);
    state_->shut_down = true;
    names.swap(state_->names);
  }
  for (const auto& name : names) {
    // Without attaching (no mapping needed); ENOENT: someone unlinked it already.
    std::string object = "/" + name;
    ::shm_unlink(object.c_str());
    detail::shm_tracker::unlinked(object);
  }
}

bool SharedMemoryManager::is_shut_down() const {
  if (!state_) return true;
  std::lock_guard lock(state_->mutex);
  return state_->shut_down;
}

std::vector<std::string> SharedMemoryManager::segment_names() const {
  if (!state_) return {};
  std::lock_guard lock(state_->mutex);
  return state_->names;
}

}  // namespace mpx
