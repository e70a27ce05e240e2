// The rest of Python's Process surface: process_cpu_count(), Process::close(),
// authkey, and get_context(method) contexts.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <mpx/context.hpp>
#include <mpx/mpx.hpp>
#include <string>

using namespace std::chrono_literals;

namespace {

// Restores the calling process' authkey when a test ends, pass or fail.
struct AuthkeyGuard {
  std::string saved = mpx::current_process().authkey();
  ~AuthkeyGuard() { mpx::current_process().set_authkey(saved); }
};

// Exit 0 when the forkserver child has `expected` as its key and knows it was
// started with forkserver.
void check_forkserver_child(std::string expected) {
  bool ok = mpx::current_process().authkey() == expected && mpx::get_start_method() == mpx::StartMethod::forkserver;
  mpx::exit(ok ? 0 : 1);
}
MPX_REGISTER_FUNCTION(check_forkserver_child);


int affinity_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  EXPECT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
  return CPU_COUNT(&set);
}

// ---- process_cpu_count --------------------------------------------------------

TEST(ProcessCpuCount, CountsTheAffinityMask) {
  EXPECT_EQ(mpx::process_cpu_count(), affinity_count());
  EXPECT_LE(mpx::process_cpu_count(), mpx::cpu_count());
}

TEST(ProcessCpuCount, FollowsANarrowedMaskWhileCpuCountDoesNot) {
  int online = mpx::cpu_count();
  mpx::Process p([online] {
    cpu_set_t one;
    CPU_ZERO(&one);
    cpu_set_t current;
    if (::sched_getaffinity(0, sizeof current, &current) != 0) mpx::exit(10);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &current)) {
        CPU_SET(cpu, &one);
        break;
      }
    }
    if (::sched_setaffinity(0, sizeof one, &one) != 0) mpx::exit(11);
    mpx::exit(mpx::process_cpu_count() == 1 && mpx::cpu_count() == online ? 0 : 1);
  });
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
}

// ---- Process::close ------------------------------------------------------------

TEST(ProcessClose, RefusedWhileTheChildRuns) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  mpx::Process p([fd = fds[0]] {
    char c;
    (void)!::read(fd, &c, 1);  // until the parent writes
  });
  p.start();
  EXPECT_THROW(p.close(), mpx::ProcessError);
  EXPECT_FALSE(p.closed());
  EXPECT_TRUE(p.is_alive());  // still usable after the refusal
  char go = 'x';
  ASSERT_EQ(::write(fds[1], &go, 1), 1);
  ::close(fds[1]);
  ::close(fds[0]);
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
  p.close();
  EXPECT_TRUE(p.closed());
}

TEST(ProcessClose, LaterUseThrowsAndTheDescriptorIsReleased) {
  mpx::Process p(mpx::ProcessOptions().with_name("closing"), [] { mpx::exit(3); });
  p.start();
  ASSERT_TRUE(p.join(30s));
  ASSERT_EQ(p.exitcode(), 3);
  int sentinel = p.sentinel();
  ASSERT_NE(::fcntl(sentinel, F_GETFD), -1);

  p.close();
  EXPECT_EQ(::fcntl(sentinel, F_GETFD), -1) << "close() left the child's descriptor open";
  EXPECT_EQ(errno, EBADF);

  EXPECT_THROW(p.start(), mpx::ProcessError);
  EXPECT_THROW(p.join(), mpx::ProcessError);
  EXPECT_THROW((void)p.join(1s), mpx::ProcessError);
  EXPECT_THROW((void)p.is_alive(), mpx::ProcessError);
  EXPECT_THROW((void)p.pid(), mpx::ProcessError);
  EXPECT_THROW((void)p.exitcode(), mpx::ProcessError);
  EXPECT_THROW((void)p.sentinel(), mpx::ProcessError);
  EXPECT_THROW(p.terminate(), mpx::ProcessError);
  EXPECT_THROW(p.kill(), mpx::ProcessError);
  EXPECT_THROW(p.set_daemon(true), mpx::ProcessError);
  EXPECT_THROW((void)p.handle(), mpx::ProcessError);
  // What Python still answers on a closed process.
  EXPECT_EQ(p.name(), "closing");
  EXPECT_FALSE(p.daemon());
  EXPECT_NE(p.to_string().find("closed"), std::string::npos) << p.to_string();
  EXPECT_NO_THROW(p.close());  // idempotent
}

TEST(ProcessClose, BeforeStartMakesStartThrow) {
  mpx::Process p([] {});
  p.close();
  EXPECT_THROW(p.start(), mpx::ProcessError);
}

TEST(ProcessClose, AMovedProcessCarriesTheFlag) {
  mpx::Process p([] {});
  p.close();
  mpx::Process q = std::move(p);
  EXPECT_TRUE(q.closed());
  EXPECT_THROW(q.start(), mpx::ProcessError);
}

// ---- authkey ---------------------------------------------------------------------

TEST(Authkey, MainProcessHas32Bytes) {
  auto key = mpx::current_process().authkey();
  EXPECT_EQ(key.size(), 32u);
  EXPECT_EQ(mpx::current_process().authkey(), key);  // stable
}

TEST(Authkey, ChildrenInheritItAndGrandchildrenToo) {
  auto key = mpx::current_process().authkey();
  auto [mine, theirs] = mpx::Pipe<std::string>();
  mpx::Process p([&theirs] {
    theirs.send(mpx::current_process().authkey());
    mpx::Process grandchild([&theirs] { theirs.send(mpx::current_process().authkey()); });
    grandchild.start();
    grandchild.join();
  });
  EXPECT_EQ(p.authkey(), key);
  p.start();
  auto child_key = mine.recv(30s);
  auto grandchild_key = mine.recv(30s);
  ASSERT_TRUE(p.join(30s));
  ASSERT_TRUE(child_key && grandchild_key);
  EXPECT_EQ(*child_key, key);
  EXPECT_EQ(*grandchild_key, key);
}

TEST(Authkey, AProcessMayGiveItsChildAnotherKey) {
  auto [mine, theirs] = mpx::Pipe<std::string>();
  mpx::Process p([&theirs] { theirs.send(mpx::current_process().authkey()); });
  p.set_authkey(std::string("sec\0ret", 7));
  p.start();
  auto child_key = mine.recv(30s);
  ASSERT_TRUE(p.join(30s));
  ASSERT_TRUE(child_key);
  EXPECT_EQ(*child_key, std::string("sec\0ret", 7));
  EXPECT_EQ(mpx::current_process().authkey().size(), 32u) << "the parent's own key must not change";
}

TEST(Authkey, SettingTheCurrentKeyReachesLaterProcesses) {
  AuthkeyGuard restore;
  mpx::current_process().set_authkey("new key");
  mpx::Process p([] { mpx::exit(mpx::current_process().authkey() == "new key" ? 0 : 1); });
  EXPECT_EQ(p.authkey(), "new key");
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Authkey, OnlyTheCurrentProcessHasOne) {
  mpx::Process p([] {
    auto parent = mpx::parent_process();
    if (!parent) mpx::exit(2);
    try {
      (void)parent->authkey();
    } catch (const mpx::ProcessError&) {
      mpx::exit(0);
    }
    mpx::exit(1);
  });
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Authkey, ServesAsTheListenerKey) {
  auto key = mpx::current_process().authkey();
  mpx::Listener listener(mpx::Family::unix_socket, key);
  mpx::Process p([address = listener.address()] {
    auto c = mpx::Client(address, mpx::current_process().authkey(), 10s);
    c.send_bytes("hi");
  });
  p.start();
  auto conn = listener.accept(30s);
  ASSERT_TRUE(conn);
  auto got = conn->recv_bytes();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), got.size()), "hi");
  ASSERT_TRUE(p.join(30s));
}

// ---- contexts -----------------------------------------------------------------------

TEST(Context, CarriesItsStartMethod) {
  auto fork = mpx::get_context(mpx::StartMethod::fork);
  auto server = mpx::get_context("forkserver");
  EXPECT_EQ(fork.get_start_method(), mpx::StartMethod::fork);
  EXPECT_EQ(server.get_start_method(), mpx::StartMethod::forkserver);
  EXPECT_EQ(mpx::get_context("fork").get_start_method(), mpx::StartMethod::fork);
  EXPECT_EQ(mpx::get_context("spawn").get_start_method(), mpx::StartMethod::spawn);
  EXPECT_THROW((void)mpx::get_context("vfork"), mpx::ProcessError);
  EXPECT_EQ(mpx::get_all_start_methods(), (std::vector<mpx::StartMethod>{
                                              mpx::StartMethod::fork, mpx::StartMethod::forkserver,
                                              mpx::StartMethod::spawn}));
}

TEST(Context, TheDefaultContextFollowsSetStartMethod) {
  auto ctx = mpx::get_context();
  EXPECT_FALSE(ctx.has_fixed_method());
  EXPECT_EQ(ctx.get_start_method(), mpx::get_start_method());
}

TEST(Context, ProcessesStartWithTheContextMethod) {
  ASSERT_EQ(mpx::get_start_method(), mpx::StartMethod::fork);
  auto ctx = mpx::get_context(mpx::StartMethod::forkserver);
  auto key = mpx::current_process().authkey();
  mpx::Process p = ctx.Process(check_forkserver_child, key);
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0) << "the child was not started by the fork server, or lacks the parent's key";
  EXPECT_EQ(mpx::get_start_method(), mpx::StartMethod::fork) << "a context must not change the default";

  // A closure cannot go through the fork server: proof that the method is used.
  mpx::Process closure = ctx.Process([] {});
  EXPECT_THROW(closure.start(), mpx::ProcessError);
  // Options naming a method win over the context's.
  mpx::Process forked = ctx.Process(mpx::ProcessOptions().with_start_method(mpx::StartMethod::fork), [] {});
  forked.start();
  ASSERT_TRUE(forked.join(30s));
  EXPECT_EQ(forked.exitcode(), 0);
}

TEST(Context, AForkserverChildHasTheKeyOfItsProcess) {
  auto ctx = mpx::get_context(mpx::StartMethod::forkserver);
  mpx::Process p = ctx.Process(check_forkserver_child, std::string("another key"));
  p.set_authkey("another key");
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0) << "the key travels with the start request";
}

TEST(Context, MakesTheSamePrimitives) {
  auto ctx = mpx::get_context(mpx::StartMethod::fork);
  auto q = ctx.Queue<int>(2);
  EXPECT_EQ(q.maxsize(), 2u);
  auto lock = ctx.Lock();
  auto sem = ctx.Semaphore(3u);
  auto value = ctx.Value<int>(7);
  auto event = ctx.Event();
  auto [a, b] = ctx.Pipe();
  mpx::Process p = ctx.Process([&] {
    q.put(41);
    value.set_value(8);
    lock.acquire();
    a.send_bytes("x");
    event.set();
  });
  p.start();
  EXPECT_EQ(q.get(30s), 41);
  EXPECT_TRUE(event.wait(30s));
  EXPECT_EQ(value.value(), 8);
  EXPECT_TRUE(lock.locked());
  EXPECT_EQ(sem.get_value(), 3u);
  auto msg = b.recv_bytes(30s);
  ASSERT_TRUE(msg);
  EXPECT_EQ(msg->size(), 1u);
  ASSERT_TRUE(p.join(30s));
}

}  // namespace
