// Descriptors over a Unix socket (SCM_RIGHTS), the one helper of the fork
// server and the manager, and the save/load every primitive handle shares
// (detail::PassedToChild): mpx/detail/fd_passing.hpp, mpx/detail/sync_handle.hpp.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "mpx/barrier.hpp"
#include "mpx/condition.hpp"
#include "mpx/detail/fd_passing.hpp"
#include "mpx/lock.hpp"
#include "mpx/serialization.hpp"
#include "mpx/sync_error.hpp"

namespace {

using namespace std::chrono_literals;
using mpx::detail::Deadline;
using mpx::detail::UniqueFd;

struct SocketPair {
  UniqueFd a, b;
};

SocketPair socket_pair(int type) {
  int fds[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) != 0) throw std::runtime_error("socketpair");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

UniqueFd new_memfd() {
  UniqueFd fd(::memfd_create("fd-passing-test", MFD_CLOEXEC));
  if (!fd) throw std::runtime_error("memfd_create");
  return fd;
}

int open_fds() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

bool same_file(int a, int b) {
  struct stat sa {}, sb {};
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

// The OSError code that `f` throws (0 when it throws none).
template <class F>
int os_error_of(F f) {
  try {
    f();
  } catch (const mpx::OSError& e) {
    return e.code();
  }
  return 0;
}

TEST(FdPassing, PayloadAndDescriptorsArriveInOrderCloseOnExec) {
  auto [a, b] = socket_pair(SOCK_SEQPACKET);
  UniqueFd m0 = new_memfd(), m1 = new_memfd(), m2 = new_memfd();
  const int sent[] = {m0.get(), m1.get(), m2.get()};
  mpx::detail::send_with_fds(a.get(), bytes_of("hello"), sent);
  std::vector<std::byte> buffer(64);
  std::vector<UniqueFd> fds;
  auto n = mpx::detail::receive_with_fds(b.get(), buffer, fds, 3, Deadline::after(10s));
  ASSERT_EQ(n, 5u);
  EXPECT_EQ(std::memcmp(buffer.data(), "hello", 5), 0);
  ASSERT_EQ(fds.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(same_file(fds[i].get(), sent[i])) << "descriptor " << i;
    EXPECT_NE(::fcntl(fds[i].get(), F_GETFD) & FD_CLOEXEC, 0) << "descriptor " << i << " without close-on-exec";
  }
}

// The manager's use: one byte of a stream with the channel's memfd.
TEST(FdPassing, StreamSocketCarriesOneByteWithItsDescriptor) {
  auto [a, b] = socket_pair(SOCK_STREAM);
  UniqueFd m = new_memfd();
  const std::byte byte{'F'};
  const int fd = m.get();
  mpx::detail::send_with_fds(a.get(), std::span(&byte, 1), std::span(&fd, 1));
  std::byte got{};
  std::vector<UniqueFd> fds;
  auto n = mpx::detail::receive_with_fds(b.get(), std::span(&got, 1), fds, 1, Deadline::after(10s));
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(got, byte);
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_TRUE(same_file(fds[0].get(), m.get()));
}

// One more descriptor than the receiver takes: MSG_CTRUNC (or, where
// CMSG_SPACE's padding had room for it, the count), EMSGSIZE, and none of the
// descriptors that came stays open.
TEST(FdPassing, MoreDescriptorsThanAllowedThrowsAndClosesThem) {
  for (std::size_t max : {1u, 2u, 3u}) {
    auto [a, b] = socket_pair(SOCK_SEQPACKET);
    std::vector<UniqueFd> memfds;
    std::vector<int> sent;
    for (std::size_t i = 0; i <= max; ++i) {
      memfds.push_back(new_memfd());
      sent.push_back(memfds.back().get());
    }
    mpx::detail::send_with_fds(a.get(), bytes_of("x"), sent);
    const int before = open_fds();
    std::vector<std::byte> buffer(16);
    std::vector<UniqueFd> fds;
    EXPECT_EQ(os_error_of([&] { (void)mpx::detail::receive_with_fds(b.get(), buffer, fds, max); }), EMSGSIZE)
        << max + 1 << " descriptors for room of " << max;
    EXPECT_TRUE(fds.empty());
    EXPECT_EQ(open_fds(), before) << "received descriptors left open, max " << max;
  }
}

TEST(FdPassing, DatagramLargerThanTheBufferThrowsAndClosesItsDescriptors) {
  auto [a, b] = socket_pair(SOCK_SEQPACKET);
  UniqueFd m = new_memfd();
  const int fd = m.get();
  mpx::detail::send_with_fds(a.get(), bytes_of(std::string(100, 'x')), std::span(&fd, 1));
  const int before = open_fds();
  std::vector<std::byte> buffer(10);
  std::vector<UniqueFd> fds;
  EXPECT_EQ(os_error_of([&] { (void)mpx::detail::receive_with_fds(b.get(), buffer, fds, 1); }), EMSGSIZE);
  EXPECT_TRUE(fds.empty());
  EXPECT_EQ(open_fds(), before);
}

TEST(FdPassing, TimedReceiveReturnsNulloptWhenNothingCame) {
  auto [a, b] = socket_pair(SOCK_SEQPACKET);
  std::vector<std::byte> buffer(16);
  std::vector<UniqueFd> fds;
  fds.push_back(new_memfd());  // replaced: emptied on expiry
  EXPECT_FALSE(mpx::detail::receive_with_fds(b.get(), buffer, fds, 1, Deadline::after(20ms)).has_value());
  EXPECT_TRUE(fds.empty());
  EXPECT_FALSE(mpx::detail::wait_readable(b.get(), 0ms));
  mpx::detail::send_with_fds(a.get(), bytes_of("late"), {});
  EXPECT_TRUE(mpx::detail::wait_readable(b.get(), 10s));
  EXPECT_EQ(mpx::detail::receive_with_fds(b.get(), buffer, fds, 1, Deadline::after(10s)), std::optional<std::size_t>(4));
  EXPECT_TRUE(fds.empty());
}

TEST(FdPassing, EndOfFileIsZeroBytes) {
  auto [a, b] = socket_pair(SOCK_SEQPACKET);
  a.reset();
  std::vector<std::byte> buffer(16);
  std::vector<UniqueFd> fds;
  EXPECT_EQ(mpx::detail::receive_with_fds(b.get(), buffer, fds, 1, Deadline::after(10s)), std::optional<std::size_t>(0));
  EXPECT_EQ(mpx::detail::receive_with_fds(b.get(), buffer, fds), 0u);
}

TEST(FdPassing, SendErrorsAreTyped) {
  auto [a, b] = socket_pair(SOCK_SEQPACKET);
  UniqueFd m = new_memfd();
  const std::vector<int> too_many(mpx::detail::kMaxPassedFds + 1, m.get());
  EXPECT_EQ(os_error_of([&] { mpx::detail::send_with_fds(a.get(), bytes_of("x"), too_many); }), EINVAL);
  EXPECT_FALSE(mpx::detail::wait_readable(b.get(), 0ms)) << "something was sent";
  b.reset();
  EXPECT_EQ(os_error_of([&] { mpx::detail::send_with_fds(a.get(), bytes_of("x"), {}); }), EPIPE);
}

// ---- the save/load of the primitives (detail::PassedToChild) ----------------

// Encodes `value` as a process argument is encoded: inside a FdSendScope.
template <class T>
mpx::Bytes encode_passed(const T& value, std::vector<UniqueFd>& received) {
  mpx::detail::FdSendScope scope;
  auto bytes = mpx::encode(value);
  for (int fd : scope.fds()) received.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  return bytes;
}

mpx::detail::SpanInputArchive payload_of(const mpx::Bytes& bytes) {
  return mpx::detail::SpanInputArchive(std::span(bytes).subspan(mpx::envelope_header_size), "payload");
}

// The wire format: the handle's own travelling fields, then the placement.
TEST(PassedToChild, LockTravelsAsItsPlacementOnly) {
  mpx::Lock lock;
  std::vector<UniqueFd> received;
  auto bytes = encode_passed(lock, received);
  auto ar = payload_of(bytes);
  mpx::detail::PassedPlacement p;
  ar(p);
  EXPECT_EQ(ar.remaining(), 0u);
  EXPECT_EQ(p.fd_index, 0u);
  EXPECT_EQ(received.size(), 1u);
}

TEST(PassedToChild, BarrierTravelsItsTimeoutThenItsPlacementAndArrivesWithoutAction) {
  mpx::Barrier barrier(2, std::chrono::nanoseconds(1500ms));
  std::vector<UniqueFd> received;
  auto bytes = encode_passed(barrier, received);
  {
    auto ar = payload_of(bytes);
    std::optional<std::chrono::nanoseconds> timeout;
    mpx::detail::PassedPlacement p;
    ar(timeout, p);
    EXPECT_EQ(ar.remaining(), 0u);
    EXPECT_EQ(timeout, std::chrono::nanoseconds(1500ms));
  }
  // Loaded over a handle that has an action: the action does not stay.
  mpx::Barrier loaded(5, [] {}, std::chrono::nanoseconds(1s));
  {
    mpx::detail::FdReceiveScope scope(received);
    auto ar = payload_of(bytes);
    ar(loaded);
  }
  EXPECT_EQ(loaded.timeout(), std::chrono::nanoseconds(1500ms));
  EXPECT_EQ(loaded.parties(), 2u) << "not the passed barrier's state";
  std::vector<UniqueFd> again;
  EXPECT_NO_THROW((void)encode_passed(loaded, again)) << "the action stayed (a barrier with one cannot be passed)";
}

TEST(PassedToChild, ConditionTravelsItsLockThenItsPlacement) {
  mpx::Lock lock;
  mpx::Condition cond(lock);
  std::vector<UniqueFd> received;
  auto bytes = encode_passed(cond, received);
  auto ar = payload_of(bytes);
  mpx::detail::FdReceiveScope scope(received);
  std::variant<mpx::RLock, mpx::Lock> travelled;
  mpx::detail::PassedPlacement p;
  ar(travelled, p);
  EXPECT_EQ(ar.remaining(), 0u);
  ASSERT_TRUE(std::holds_alternative<mpx::Lock>(travelled));
  EXPECT_EQ(std::get<mpx::Lock>(travelled).locked(), false);
  lock.acquire();
  EXPECT_TRUE(std::get<mpx::Lock>(travelled).locked()) << "not the condition's lock";
  lock.release();
  // The condition's own descriptor is collected first (passed() is an
  // argument of the archive call that then saves the lock), as it always was.
  EXPECT_EQ(p.fd_index, 0u);
  EXPECT_EQ(received.size(), 2u);
}

}  // namespace
