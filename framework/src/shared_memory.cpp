#include "mpx/shared_memory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "mpx/detail/shared_mapping.hpp"
#include "mpx/detail/shm_tracker.hpp"
#include "mpx/detail/unique_fd.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {

namespace {

// glibc's shm_open refuses names whose length + 1 reaches NAME_MAX (255).
constexpr std::size_t kMaxNameLength = 253;

std::string os_message(const std::string& what, int err) { return what + ": " + std::strerror(err); }

std::string random_name() {
  // Python: "psm_" + secrets.token_hex(4).
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string name = "psm_";
  auto bits = rng();
  for (int i = 0; i < 8; ++i) name += hex[(bits >> (4 * i)) & 0xf];
  return name;
}

std::string strip_slash(const std::string& name) {
  return !name.empty() && name[0] == '/' ? name.substr(1) : name;
}

}  // namespace

namespace detail {

std::string shm_object_name(const std::string& given) {
  std::string name = strip_slash(given);
  if (name.empty()) throw SharedMemoryError("SharedMemory: empty name");
  if (name.find('/') != std::string::npos)
    throw SharedMemoryError("SharedMemory: name '" + given + "' contains '/' (only one leading '/' is allowed)");
  if (name.find('\0') != std::string::npos) throw SharedMemoryError("SharedMemory: name contains a NUL byte");
  if (name == "." || name == "..") throw SharedMemoryError("SharedMemory: name '" + name + "' is not allowed");
  if (name.size() > kMaxNameLength)
    throw SharedMemoryError("SharedMemory: name is " + std::to_string(name.size()) + " bytes long, at most " +
                            std::to_string(kMaxNameLength) + " are allowed");
  return "/" + name;
}

}  // namespace detail

SharedMemory::SharedMemory(std::optional<std::string> name, bool create, std::int64_t size, Lifetime lifetime) {
  const bool tracked = lifetime == Lifetime::tracked;
  if (size < 0) throw SharedMemoryError("SharedMemory: size must not be negative, got " + std::to_string(size));
  if (create && size == 0) throw SharedMemoryError("SharedMemory: size must be positive when creating a segment");
  if (!create && !name) throw SharedMemoryError("SharedMemory: a name is required to attach to a segment");

  if (create) {
    detail::UniqueFd fd;
    std::string object;
    for (int attempt = 0;; ++attempt) {
      object = detail::shm_object_name(name ? *name : random_name());
      fd.reset(::shm_open(object.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600));
      if (fd) break;
      int err = errno;
      if (err == EEXIST && !name && attempt < 100) continue;  // generated name collided: draw again
      if (err == EEXIST) throw FileExistsError("SharedMemory: '" + object.substr(1) + "' already exists");
      throw SharedMemoryError(os_message("SharedMemory: shm_open('" + object + "')", err));
    }
    auto fail = [&](const std::string& what, int err) {
      ::shm_unlink(object.c_str());
      throw SharedMemoryError(os_message(what, err));
    };
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) fail("SharedMemory: ftruncate", errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) fail("SharedMemory: fstat", errno);
    if (tracked) {
      try {
        detail::shm_tracker::register_created(object, st.st_dev, st.st_ino);
      } catch (...) {
        ::shm_unlink(object.c_str());
        throw;
      }
    }
    try {
      mapping_ = std::make_shared<detail::SharedMapping>(
          detail::SharedMapping::of_fd(fd.get(), static_cast<std::size_t>(size)));
    } catch (const OSError& e) {
      ::shm_unlink(object.c_str());
      if (tracked) detail::shm_tracker::unlinked(object);
      throw SharedMemoryError(std::string("SharedMemory: ") + e.what());
    }
    name_ = object.substr(1);
    size_ = static_cast<std::size_t>(size);
    return;
  }

  std::string object = detail::shm_object_name(*name);
  if (tracked) detail::shm_tracker::register_attached(object);
  detail::UniqueFd fd(::shm_open(object.c_str(), O_RDWR | O_CLOEXEC, 0));
  auto fail = [&](auto error) {
    if (tracked) detail::shm_tracker::forget(object);
    throw error;
  };
  if (!fd) {
    int err = errno;
    if (err == ENOENT) fail(FileNotFoundError("SharedMemory: no segment named '" + object.substr(1) + "'"));
    fail(SharedMemoryError(os_message("SharedMemory: shm_open('" + object + "')", err)));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail(SharedMemoryError(os_message("SharedMemory: fstat", errno)));
  // As Python: when attaching, `size` is ignored; the segment's own size counts.
  auto actual = static_cast<std::size_t>(st.st_size);
  if (actual == 0) fail(SharedMemoryError("SharedMemory: segment '" + object.substr(1) + "' is empty"));
  try {
    mapping_ = std::make_shared<detail::SharedMapping>(detail::SharedMapping::of_fd(fd.get(), actual));
  } catch (const OSError& e) {
    fail(SharedMemoryError(std::string("SharedMemory: ") + e.what()));
  }
  name_ = object.substr(1);
  size_ = actual;
}

std::span<std::byte> SharedMemory::buf() const {
  if (!mapping_) throw SharedMemoryError("SharedMemory '" + name_ + "': used after close()");
  return mapping_->bytes();
}

void SharedMemory::unlink() {
  std::string object = "/" + name_;
  if (name_.empty()) throw SharedMemoryError("SharedMemory: unlink() on an empty handle");
  if (::shm_unlink(object.c_str()) != 0) {
    int err = errno;
    detail::shm_tracker::unlinked(object);
    if (err == ENOENT) throw FileNotFoundError("SharedMemory: '" + name_ + "' is already unlinked");
    throw SharedMemoryError(os_message("SharedMemory: shm_unlink('" + object + "')", err));
  }
  detail::shm_tracker::unlinked(object);
}

std::uint32_t SharedMemory::passed_fd() const {
  if (!mapping_) throw SharedMemoryError("SharedMemory '" + name_ + "': a closed handle cannot be passed");
  return detail::send_fd(mapping_->fd(), "SharedMemory");
}

void SharedMemory::arrive(std::size_t size, std::uint32_t index) {
  auto mapping = detail::receive_mapping(index, "SharedMemory");
  if (mapping->size() < size)
    throw SharedMemoryError("SharedMemory '" + name_ + "': the received segment is smaller than sent");
  mapping_ = std::move(mapping);
  size_ = size;
}

}  // namespace mpx
