// SharedMemory: create/attach, errors, interoperability with Python's
// multiprocessing.shared_memory and raw shm_open, and the tracker rule
// (segments of a killed creator are unlinked; persistent ones and ones still
// attached by another mpx process stay).
#include "mpx/shared_memory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include "mpx/detail/shm_tracker.hpp"
#include "mpx/sharedctypes.hpp"
#include "sync_test_util.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;
using mpx::test::Signal;

namespace {

std::string unique_name(const std::string& tag) {
  static std::atomic<int> counter{0};
  return "mpx_test_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
}

bool exists(const std::string& name) { return mpx::test::dev_shm_names().count(name) > 0; }

// Unlinks a segment by name when the test ends, whatever happened.
struct Cleanup {
  std::string name;
  ~Cleanup() { ::shm_unlink(("/" + name).c_str()); }
};

const char* kPython = "/usr/bin/python3";

}  // namespace

TEST(SharedMemory, CreateAttachReadWrite) {
  auto name = unique_name("basic");
  Cleanup cleanup{name};
  mpx::SharedMemory created(name, true, 256);
  EXPECT_EQ(created.name(), name);
  EXPECT_EQ(created.size(), 256u);
  EXPECT_TRUE(exists(name));
  created.buf()[0] = std::byte{0xab};
  mpx::SharedMemory attached(name);
  EXPECT_EQ(attached.size(), 256u);
  EXPECT_EQ(attached.buf()[0], std::byte{0xab});
  attached.buf()[255] = std::byte{7};
  EXPECT_EQ(created.buf()[255], std::byte{7});
  mpx::SharedMemory partial(name, false, 100);  // attaching fewer bytes than the segment is allowed
  EXPECT_EQ(partial.size(), 256u);
  attached.close();
  created.close();
  partial.unlink();
  EXPECT_FALSE(exists(name));
}

TEST(SharedMemory, AcceptsOneLeadingSlashLikeShmOpen) {
  auto name = unique_name("slash");
  Cleanup cleanup{name};
  mpx::SharedMemory created("/" + name, true, 64);
  EXPECT_EQ(created.name(), name);
  mpx::SharedMemory(name).unlink();
}

TEST(SharedMemory, GeneratedNamesFollowPythonsConvention) {
  auto shm = mpx::SharedMemory::create(64);
  Cleanup cleanup{shm.name()};
  EXPECT_EQ(shm.name().rfind("psm_", 0), 0u);
  EXPECT_EQ(shm.name().size(), 12u);
  EXPECT_TRUE(exists(shm.name()));
  auto other = mpx::SharedMemory(std::nullopt, true, 64);
  Cleanup cleanup2{other.name()};
  EXPECT_NE(other.name(), shm.name());
  shm.unlink();
  other.unlink();
}

TEST(SharedMemory, BadInputGetsClearTypedErrors) {
  auto name = unique_name("errors");
  Cleanup cleanup{name};
  EXPECT_THROW((void)mpx::SharedMemory(name), mpx::FileNotFoundError);
  mpx::SharedMemory shm(name, true, 128);
  EXPECT_THROW(mpx::SharedMemory(name, true, 128), mpx::FileExistsError);
  EXPECT_EQ(mpx::SharedMemory(name, false, 129).size(), 128u);  // Python ignores the size when attaching
  EXPECT_THROW(mpx::SharedMemory(unique_name("neg"), true, -1), mpx::SharedMemoryError);
  EXPECT_THROW(mpx::SharedMemory(name, false, -5), mpx::SharedMemoryError);
  EXPECT_THROW(mpx::SharedMemory(unique_name("zero"), true, 0), mpx::SharedMemoryError);
  EXPECT_THROW(mpx::SharedMemory("a/b", true, 16), mpx::SharedMemoryError);
  EXPECT_THROW(mpx::SharedMemory("", true, 16), mpx::SharedMemoryError);
  EXPECT_THROW(mpx::SharedMemory(std::string(254, 'x'), true, 16), mpx::SharedMemoryError);
  EXPECT_THROW(mpx::SharedMemory(std::nullopt, false, 16), mpx::SharedMemoryError);
  try {
    mpx::SharedMemory("has/slash", true, 16);
  } catch (const mpx::SharedMemoryError& e) {
    EXPECT_NE(std::string(e.what()).find("'/'"), std::string::npos) << e.what();
  }
  shm.close();
  EXPECT_THROW((void)shm.buf(), mpx::SharedMemoryError);
  shm.unlink();
  EXPECT_THROW(shm.unlink(), mpx::FileNotFoundError);
}

TEST(SharedMemory, CopiesShareTheMappingAndCloseIsPerHandle) {
  auto shm = mpx::SharedMemory::create(64);
  Cleanup cleanup{shm.name()};
  mpx::SharedMemory copy = shm;
  shm.buf()[3] = std::byte{9};
  shm.close();
  EXPECT_TRUE(shm.closed());
  EXPECT_EQ(copy.buf()[3], std::byte{9});
  copy.unlink();
}

TEST(SharedMemory, ForkedChildWritesParentReads) {
  auto shm = mpx::SharedMemory::create(1 << 20);
  Cleanup cleanup{shm.name()};
  Child child([&] {
    std::memset(shm.buf().data(), 0x5a, shm.size());
    return 0;
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_EQ(shm.buf()[12345], std::byte{0x5a});
  shm.unlink();
}

TEST(SharedMemoryInterop, PlainShmOpenSeesMpxAndMpxSeesPlainShmOpen) {
  auto name = unique_name("c");
  Cleanup cleanup{name};
  mpx::SharedMemory shm(name, true, 4096);
  shm.buf()[0] = std::byte{0xab};
  {  // What a C program does.
    int fd = ::shm_open(("/" + name).c_str(), O_RDWR, 0);
    ASSERT_GE(fd, 0);
    auto* p = static_cast<unsigned char*>(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    ::close(fd);
    ASSERT_NE(p, MAP_FAILED);
    EXPECT_EQ(p[0], 0xab);
    p[1] = 0xcd;
    ::munmap(p, 4096);
  }
  EXPECT_EQ(shm.buf()[1], std::byte{0xcd});
  shm.unlink();

  auto theirs = unique_name("c2");
  Cleanup cleanup2{theirs};
  int fd = ::shm_open(("/" + theirs).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 100), 0);
  unsigned char byte = 0x42;
  ASSERT_EQ(::pwrite(fd, &byte, 1, 0), 1);
  ::close(fd);
  mpx::SharedMemory attached(theirs);
  EXPECT_EQ(attached.size(), 100u);
  EXPECT_EQ(attached.buf()[0], std::byte{0x42});
}

TEST(SharedMemoryInterop, PythonReadsAndWritesAnMpxSegment) {
  auto name = unique_name("py");
  Cleanup cleanup{name};
  mpx::SharedMemory shm(name, true, 256);
  shm.buf()[0] = std::byte{0xab};
  // Python 3.11 registers even attach-only segments with its resource
  // tracker, which would unlink ours at exit (bpo-38119): unregister.
  const char* script =
      "import sys\n"
      "from multiprocessing import shared_memory, resource_tracker\n"
      "s = shared_memory.SharedMemory(sys.argv[1])\n"
      "resource_tracker.unregister(s._name, 'shared_memory')\n"
      "print(hex(s.buf[0]), s.size)\n"
      "s.buf[1] = 0xcd\n"
      "s.close()\n";
  auto r = mpx::test::run_program({kPython, "-c", script, name}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "0xab 256\n");
  EXPECT_EQ(shm.buf()[1], std::byte{0xcd});
  EXPECT_TRUE(exists(name));  // Python did not unlink it
  shm.unlink();
}

TEST(SharedMemoryInterop, MpxAttachesToAPythonSegment) {
  auto name = unique_name("pyc");
  Cleanup cleanup{name};
  const char* script =
      "import sys\n"
      "from multiprocessing import shared_memory, resource_tracker\n"
      "s = shared_memory.SharedMemory(sys.argv[1], create=True, size=256)\n"
      "s.buf[0] = 0xab\n"
      "resource_tracker.unregister(s._name, 'shared_memory')  # keep it after we exit\n"
      "s.close()\n";
  auto r = mpx::test::run_program({kPython, "-c", script, name}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  mpx::SharedMemory shm(name);
  EXPECT_EQ(shm.size(), 256u);
  EXPECT_EQ(shm.buf()[0], std::byte{0xab});
  shm.unlink();
}

// Every tracker test runs its own tracker (PrivateTracker): a tracker left
// lingering by an earlier test must not be the one that does the work. The
// test process itself never touches shared memory here (it would hold the
// tracker), only its children do; it looks at /dev/shm directly.

TEST(SharedMemoryTracker, SegmentOfAKilledCreatorIsUnlinked) {
  mpx::test::PrivateTracker tracker;
  auto name = unique_name("killed");
  Cleanup cleanup{name};
  mpx::RawValue<pid_t> tracker_pid(0);
  Signal ready;
  Child creator([&] {
    mpx::SharedMemory shm(name, true, 4096);
    *tracker_pid = mpx::detail::shm_tracker::tracker_pid();
    ready.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(ready.wait(), 'x');
  ASSERT_TRUE(exists(name));
  EXPECT_NE(*tracker_pid, 0);
  creator.kill(SIGKILL);
  EXPECT_TRUE(mpx::test::eventually([&] { return !exists(name); }, 10s)) << name << " leaked";
  EXPECT_EQ(creator.join(), -SIGKILL);
}

TEST(SharedMemoryTracker, SegmentOfACreatorThatExitsWithoutUnlinkIsUnlinked) {
  mpx::test::PrivateTracker tracker;
  auto name = unique_name("exited");
  Cleanup cleanup{name};
  Child creator([&] {
    mpx::SharedMemory shm(name, true, 4096);
    return 0;
  });
  ASSERT_EQ(creator.join(), 0);
  EXPECT_TRUE(mpx::test::eventually([&] { return !exists(name); }, 10s));
}

TEST(SharedMemoryTracker, PersistentSegmentSurvivesItsCreator) {
  mpx::test::PrivateTracker tracker;
  auto persistent = unique_name("persistent");
  auto marker = unique_name("marker");
  Cleanup cleanup{persistent}, cleanup2{marker};
  Signal ready;
  Child creator([&] {
    mpx::SharedMemory p(persistent, true, 64, mpx::SharedMemory::Lifetime::persistent);
    mpx::SharedMemory m(marker, true, 64);
    ready.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(ready.wait(), 'x');
  creator.kill(SIGKILL);
  // The tracked marker going away proves the tracker has handled the death.
  ASSERT_TRUE(mpx::test::eventually([&] { return !exists(marker); }, 10s));
  EXPECT_TRUE(exists(persistent));
}

TEST(SharedMemoryTracker, SegmentStaysWhileAnotherMpxProcessHasItAttached) {
  // Python's tracker unlinks a name others still use when its creator dies.
  mpx::test::PrivateTracker tracker;
  auto name = unique_name("shared");
  auto marker = unique_name("marker");
  Cleanup cleanup{name}, cleanup2{marker};
  Signal created, attached;
  Child creator([&] {
    mpx::SharedMemory shm(name, true, 64);
    mpx::SharedMemory m(marker, true, 64);
    created.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(created.wait(), 'x');
  Child user([&] {
    mpx::SharedMemory shm(name);
    attached.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(attached.wait(), 'x');
  creator.kill(SIGKILL);
  ASSERT_TRUE(mpx::test::eventually([&] { return !exists(marker); }, 10s));
  EXPECT_TRUE(exists(name)) << "unlinked while still attached";
  user.kill(SIGKILL);
  EXPECT_TRUE(mpx::test::eventually([&] { return !exists(name); }, 10s)) << name << " leaked";
}

TEST(SharedMemoryTracker, KillingTheCreatorsWholeProcessGroupStillCleansUp) {
  mpx::test::PrivateTracker tracker;
  auto name = unique_name("group");
  Cleanup cleanup{name};
  Signal ready;
  Child creator([&] {
    ::setpgid(0, 0);
    mpx::SharedMemory shm(name, true, 64);
    ready.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(ready.wait(), 'x');
  ::kill(-creator.pid(), SIGKILL);  // the tracker is in its own session: spared
  EXPECT_TRUE(mpx::test::eventually([&] { return !exists(name); }, 10s));
}

TEST(SharedMemoryTracker, ANamesakeCreatedAfterAnUnlinkIsLeftAlone) {
  mpx::test::PrivateTracker tracker;
  auto name = unique_name("namesake");
  Cleanup cleanup{name};
  Signal ready;
  Child creator([&] {
    mpx::SharedMemory shm(name, true, 64);
    shm.unlink();
    // Someone else (not mpx) takes the name.
    int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return 1;
    ::close(fd);
    ready.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(ready.wait(), 'x');
  creator.kill(SIGKILL);
  EXPECT_EQ(creator.join(), -SIGKILL);
  // Prove the tracker handled the death with a segment created after it.
  auto marker = unique_name("marker");
  Cleanup cleanup2{marker};
  Child other([&] {
    mpx::SharedMemory m(marker, true, 64);
    return 0;
  });
  ASSERT_EQ(other.join(), 0);
  ASSERT_TRUE(mpx::test::eventually([&] { return !exists(marker); }, 10s));
  EXPECT_TRUE(exists(name));
}

TEST(SharedMemoryTracker, ForkedChildrenKeepTheirParentsSegments) {
  mpx::test::PrivateTracker tracker;
  auto name = unique_name("inherit");
  Cleanup cleanup{name};
  // The grandchild is not ours to kill or reap: it lives until it reads EOF
  // on `life`, i.e. until this test (or the test process) closes its write end.
  int life[2];
  ASSERT_EQ(::pipe2(life, O_CLOEXEC), 0);
  struct CloseLife {
    int* fds;
    ~CloseLife() {
      if (fds[1] >= 0) ::close(fds[1]);
      ::close(fds[0]);
    }
  } close_life{life};
  mpx::RawValue<pid_t> grandchild(0);
  Signal ready;
  Child creator([&] {
    mpx::SharedMemory shm(name, true, 64);
    pid_t g = ::fork();
    if (g == 0) {  // in a real program: works with the inherited mapping
      ::close(life[1]);
      char c;
      while (::read(life[0], &c, 1) < 0 && errno == EINTR) {
      }
      ::_exit(0);
    }
    *grandchild = g;
    ready.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(ready.wait(), 'x');
  ASSERT_GT(*grandchild, 0);
  const pid_t grandchild_pid = *grandchild;
  creator.kill(SIGKILL);
  EXPECT_EQ(creator.join(), -SIGKILL);
  // A request on a new connection is answered only after the tracker has
  // handled every connection that closed before it (one poll loop, closed
  // connections first): after this round trip, the creator's death is known.
  Child probe([] { return mpx::detail::shm_tracker::tracker_pid() != 0 ? 0 : 1; });
  EXPECT_EQ(probe.join(), 0);
  EXPECT_TRUE(exists(name)) << "unlinked while a forked child of the creator lives";
  // End the grandchild: its copy of the connection closes, the segment goes.
  ::close(life[1]);
  life[1] = -1;
  EXPECT_TRUE(mpx::test::eventually([&] { return !mpx::test::pid_exists(grandchild_pid); }, 10s));
  EXPECT_TRUE(mpx::test::eventually([&] { return !exists(name); }, 10s)) << name << " leaked";
}

TEST(SharedMemoryTracker, AfterTheTrackerAndTheCreatorAreKilledTheNextTrackerCleansUp) {
  // Python leaks here. A private tracker so that killing it disturbs nobody else.
  mpx::test::PrivateTracker private_tracker;
  auto leaked = unique_name("orphan");
  auto survivor = unique_name("survivor");
  auto marker = unique_name("marker");
  Cleanup c1{leaked}, c2{survivor}, c3{marker};
  mpx::RawValue<pid_t> tracker(0);
  Signal ready, attached;
  Child creator([&] {
    mpx::SharedMemory a(leaked, true, 64);
    mpx::SharedMemory b(survivor, true, 64);
    *tracker = mpx::detail::shm_tracker::tracker_pid();
    ready.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(ready.wait(), 'x');
  Child user([&] {  // keeps `survivor` attached through the crash
    mpx::SharedMemory b(survivor);
    attached.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(attached.wait(), 'x');
  ASSERT_GT(*tracker, 0);
  ASSERT_EQ(::access(private_tracker.state_path().c_str(), F_OK), 0) << "no table file for the private tracker";
  ::kill(*tracker, SIGKILL);
  ASSERT_TRUE(mpx::test::eventually([&] { return !mpx::test::pid_exists(*tracker); }, 10s));
  creator.kill(SIGKILL);
  EXPECT_EQ(creator.join(), -SIGKILL);
  EXPECT_TRUE(exists(leaked));  // nobody is watching right now
  // The next process that uses shared memory starts a tracker, which reads
  // its predecessor's table.
  Child next([&] {
    mpx::SharedMemory m(marker, true, 64);
    return 0;
  });
  EXPECT_EQ(next.join(), 0);
  EXPECT_TRUE(mpx::test::eventually([&] { return !exists(leaked); }, 10s)) << leaked << " leaked";
  EXPECT_TRUE(mpx::test::eventually([&] { return !exists(marker); }, 10s));
  EXPECT_TRUE(exists(survivor)) << "unlinked while still attached";
  user.kill(SIGKILL);
  EXPECT_TRUE(mpx::test::eventually([&] { return !exists(survivor); }, 10s)) << survivor << " leaked";
}
