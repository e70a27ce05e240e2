// Event-loop integration (mpx/wait.hpp): descriptors that poll readable when
// there is something to do (a Connection's fileno(), a Queue's
// readable_fd(), a Process' sentinel()) in a real epoll loop, and mpx::wait
// as multiprocessing.connection.wait.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "mpx/pipe.hpp"
#include "mpx/process.hpp"
#include "mpx/queue.hpp"
#include "mpx/wait.hpp"
#include "queue_test_support.hpp"

using mpx::test::ForkedChild;
using mpx::test::Signal;
using namespace std::chrono_literals;

namespace {

// A level-triggered epoll set, closed on destruction.
class Epoll {
 public:
  Epoll() : fd_(::epoll_create1(EPOLL_CLOEXEC)) {}
  Epoll(const Epoll&) = delete;
  Epoll& operator=(const Epoll&) = delete;
  ~Epoll() { ::close(fd_); }
  bool add(int fd, std::uint64_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    return ::epoll_ctl(fd_, EPOLL_CTL_ADD, fd, &ev) == 0;
  }
  // Tags of the ready descriptors after at most `timeout`.
  std::vector<std::uint64_t> wait(std::chrono::milliseconds timeout) {
    epoll_event evs[8];
    int n = ::epoll_wait(fd_, evs, 8, static_cast<int>(timeout.count()));
    std::vector<std::uint64_t> tags;
    for (int i = 0; i < n; ++i) tags.push_back(evs[i].data.u64);
    return tags;
  }

 private:
  int fd_;
};

}  // namespace

TEST(Wait, ConnectionFilenoPollsReadableWhenAMessageIsWaitingNotOnlyAtEndOfFile) {
  auto [a, b] = mpx::Pipe();
  Epoll ep;
  ASSERT_TRUE(ep.add(b.fileno(), 1));
  EXPECT_FALSE(b.poll());  // nothing yet: arms fileno()
  EXPECT_TRUE(ep.wait(0ms).empty()) << "readable with nothing to read";
  Signal go;
  ForkedChild sender([&, &a = a] {
    for (int round = 0; round < 3; ++round) {
      if (go.wait() != 's') return 1;
      a.send(std::string("message ") + std::to_string(round));
    }
    return 0;
  });
  for (int round = 0; round < 3; ++round) {
    go.notify('s');
    auto ready = ep.wait(10s);
    ASSERT_EQ(ready, std::vector<std::uint64_t>{1}) << "round " << round << ": fileno() never turned readable";
    ASSERT_TRUE(b.poll());
    EXPECT_EQ(b.recv<std::string>(), "message " + std::to_string(round));
    EXPECT_FALSE(b.poll());  // drained: re-arms, and fileno() is quiet again
    EXPECT_TRUE(ep.wait(0ms).empty()) << "round " << round << ": still readable after the drain";
  }
  EXPECT_EQ(sender.join(), 0);
}

TEST(Wait, ConnectionFilenoStillPollsReadableAtEndOfFile) {
  auto [a, b] = mpx::Pipe();
  EXPECT_FALSE(b.poll());
  Epoll ep;
  ASSERT_TRUE(ep.add(b.fileno(), 7));
  EXPECT_TRUE(ep.wait(0ms).empty());
  a.close();
  EXPECT_EQ(ep.wait(10s), std::vector<std::uint64_t>{7});
  EXPECT_THROW((void)b.recv_bytes(), mpx::EOFError);
}

// An epoll loop that serves a queue as a service would: on readable, drain
// with get_nowait() until Empty, then wait again. Every item arrives, and the
// descriptor is quiet whenever the queue was drained and nothing was put.
TEST(Wait, QueueReadableFdDrivesAnEpollLoop) {
  constexpr int kBursts = 20;
  mpx::Queue<std::string> q;
  Epoll ep;
  ASSERT_TRUE(ep.add(q.readable_fd(), 2));
  EXPECT_THROW((void)q.get_nowait(), mpx::Empty);  // arms
  EXPECT_TRUE(ep.wait(0ms).empty());
  Signal go;
  ForkedChild producer([&] {
    for (int burst = 0; burst < kBursts; ++burst) {
      if (go.wait() != 'p') return 1;
      for (int i = 0; i <= burst; ++i) q.put(std::to_string(burst) + "/" + std::to_string(i) + std::string(i * 40, '.'));
    }
    return 0;
  });
  for (int burst = 0; burst < kBursts; ++burst) {
    go.notify('p');
    int got = 0;
    while (got <= burst) {
      auto ready = ep.wait(10s);
      ASSERT_EQ(ready, std::vector<std::uint64_t>{2}) << "burst " << burst << ": readable_fd() never turned readable";
      for (;;) {
        try {
          EXPECT_EQ(q.get_nowait(), std::to_string(burst) + "/" + std::to_string(got) + std::string(got * 40, '.'));
          ++got;
        } catch (const mpx::Empty&) {
          break;  // re-armed
        }
      }
    }
    EXPECT_EQ(got, burst + 1);
    EXPECT_TRUE(ep.wait(0ms).empty()) << "burst " << burst << ": readable after the queue was drained";
  }
  EXPECT_EQ(producer.join(), 0);
}

// The fast path pays nothing while nobody polls: once the armed signal is
// spent, 100,000 puts write the eventfd no more (its count stays 1).
TEST(Wait, PutsDoNotSignalTheQueueDescriptorWhileNobodyArmsIt) {
  mpx::Queue<std::int64_t> q;
  for (std::int64_t i = 0; i < 100'000; ++i) q.put(i);
  std::uint64_t count = 0;
  ASSERT_EQ(::read(q.readable_fd(), &count, sizeof count), static_cast<ssize_t>(sizeof count));
  EXPECT_EQ(count, 1u) << "puts wrote the eventfd without a reader armed";
  for (std::int64_t i = 0; i < 100'000; ++i) ASSERT_EQ(q.get_nowait(), i);
}

TEST(Wait, WaitReturnsTheReadyConnectionsQueuesAndProcesses) {
  auto [a, b] = mpx::Pipe();
  mpx::Queue<int> q;
  Signal go;
  mpx::Process p([&, &a = a] {
    if (go.wait() != 'q') ::_exit(1);
    q.put(42);
    if (go.wait() != 'c') ::_exit(1);
    a.send(7);
    if (go.wait() != 'x') ::_exit(1);
    ::_exit(0);
  });
  p.start();
  struct Reap {
    mpx::Process& p;
    ~Reap() {
      if (p.is_alive()) p.kill();
      p.join();
    }
  } reap{p};
  std::vector<mpx::Waitable> objects{b, q, p};
  EXPECT_TRUE(mpx::wait(objects, 50ms).empty()) << "something ready before anything happened";
  EXPECT_TRUE(mpx::wait(objects, 0s).empty());

  go.notify('q');
  EXPECT_EQ(mpx::wait(objects, 10s), std::vector<std::size_t>{1});
  EXPECT_EQ(q.get_nowait(), 42);

  go.notify('c');
  EXPECT_EQ(mpx::wait(objects, 10s), std::vector<std::size_t>{0});
  EXPECT_EQ(b.recv<int>(), 7);

  go.notify('x');
  auto ready = mpx::wait(objects, 10s);
  ASSERT_FALSE(ready.empty());
  EXPECT_EQ(ready.back(), 2u) << "the sentinel of the ended process";
  EXPECT_TRUE(p.join(5s));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Wait, ReadyObjectsAreReportedAtOnceAndTogether) {
  auto [a, b] = mpx::Pipe();
  mpx::Queue<std::string> q;
  q.put("waiting");
  a.send_bytes("waiting too");
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(mpx::wait({b, q}, 10s), (std::vector<std::size_t>{0, 1}));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  EXPECT_TRUE(mpx::wait({mpx::Waitable::descriptor(fds[0])}, 0s).empty());
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  EXPECT_EQ(mpx::wait({mpx::Waitable::descriptor(fds[0])}, 1s), std::vector<std::size_t>{0});
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(Wait, AQueueTakenByAnotherConsumerIsNotReported) {
  mpx::Queue<int> q;
  Signal took;
  ForkedChild rival([&] {
    int v = q.get(10s);  // takes the one item as soon as it comes
    took.notify('t');
    return v == 5 ? 0 : 1;
  });
  q.put(5);
  EXPECT_EQ(took.wait(), 't');
  EXPECT_TRUE(mpx::wait({q}, 100ms).empty()) << "reported an item another consumer had taken";
  EXPECT_EQ(rival.join(), 0);
}
