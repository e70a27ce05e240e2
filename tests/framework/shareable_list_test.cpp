// ShareableList: Python's layout, read and written from both sides with the
// system python3, and the list semantics of multiprocessing.shared_memory.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <chrono>
#include <cstring>
#include <mpx/mpx.hpp>
#include <mpx/shareable_list.hpp>
#include <mpx/shared_memory_manager.hpp>
#include <string>

#include "test_support.hpp"

using namespace std::chrono_literals;
using Item = mpx::ShareableList::Item;

namespace {

const char* const kPython = "/usr/bin/python3";

mpx::Bytes bytes_of(std::string_view s) {
  mpx::Bytes b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

std::string unique_name(const char* what) {
  return std::string("mpx_sl_") + what + "_" + std::to_string(::getpid());
}

// Unlinks the segment at the end of the test, whoever made it, pass or fail.
struct Unlinker {
  std::string name;
  ~Unlinker() { ::shm_unlink(("/" + name).c_str()); }
};

mpx::test::RunResult python(const std::string& script, const std::string& name) {
  return mpx::test::run_program({kPython, "-c", script, name}, 60s);
}

// Attaches without letting Python's resource tracker unlink the segment
// when this python exits (3.8-3.12 register attached segments too).
const std::string kAttach = R"(
import sys
from multiprocessing import shared_memory, resource_tracker
sl = shared_memory.ShareableList(name=sys.argv[1])
resource_tracker.unregister(sl.shm._name, "shared_memory")
)";

TEST(ShareableList, HoldsEveryKindInPythonsFormats) {
  mpx::ShareableList sl({std::int64_t{-7}, 2.5, true, false, "text", bytes_of("\x01\x02"), std::monostate{},
                         std::string(8, 'x')});
  Unlinker cleanup{sl.name()};
  ASSERT_EQ(sl.size(), 8u);
  EXPECT_EQ(sl.format(), "qdxxxxxxx?xxxxxxx?8s8sxxxxxx?x16s");
  EXPECT_EQ(std::get<std::int64_t>(sl[0]), -7);
  EXPECT_EQ(std::get<double>(sl[1]), 2.5);
  EXPECT_EQ(std::get<bool>(sl[2]), true);
  EXPECT_EQ(std::get<bool>(sl[3]), false);
  EXPECT_EQ(std::get<std::string>(sl[4]), "text");
  EXPECT_EQ(std::get<mpx::Bytes>(sl[5]), bytes_of("\x01\x02"));
  EXPECT_TRUE(std::holds_alternative<std::monostate>(sl[6]));
  EXPECT_EQ(std::get<std::string>(sl[7]), std::string(8, 'x'));
  // Python's calcsize: 8 + 8*9 + (6*8 + 8 + 16) + 8*8 + 8.
  EXPECT_EQ(sl.shm().size(), 8u + 72u + 72u + 64u + 8u);
  EXPECT_THROW((void)sl.get(8), mpx::SharedMemoryError);
}

TEST(ShareableList, SetFollowsPythonsSlotRules) {
  mpx::ShareableList sl({"abc", std::int64_t{1}, 0.5});
  Unlinker cleanup{sl.name()};
  sl.set(0, std::int64_t{42});  // a number into a string slot
  EXPECT_EQ(std::get<std::int64_t>(sl[0]), 42);
  sl.set(0, "abcdefg");  // back to a string: the slot keeps its 8 bytes
  EXPECT_EQ(std::get<std::string>(sl[0]), "abcdefg");
  EXPECT_EQ(sl.format().substr(0, 2), "8s");
  sl.set(1, "eightchr");  // a string into a number slot: "8s", exactly full
  EXPECT_EQ(std::get<std::string>(sl[1]), "eightchr");
  EXPECT_THROW(sl.set(1, "ninechars"), mpx::SharedMemoryError);
  EXPECT_EQ(std::get<std::string>(sl[1]), "eightchr") << "a refused set must not change the item";
  sl.set(2, std::monostate{});
  EXPECT_TRUE(std::holds_alternative<std::monostate>(sl[2]));
  sl.set(2, true);
  EXPECT_EQ(std::get<bool>(sl[2]), true);
  sl.set(0, std::string("a\0\0", 3));  // trailing NULs are lost, as in Python
  EXPECT_EQ(std::get<std::string>(sl[0]), "a");
  sl.set(0, bytes_of("b"));
  EXPECT_EQ(std::get<mpx::Bytes>(sl[0]), bytes_of("b"));
  EXPECT_THROW(sl.set(3, std::int64_t{1}), mpx::SharedMemoryError);
}

TEST(ShareableList, CountAndIndexUsePythonsEquality) {
  mpx::ShareableList sl({std::int64_t{1}, 1.0, true, "1", bytes_of("1"), std::monostate{}, std::int64_t{2}});
  Unlinker cleanup{sl.name()};
  EXPECT_EQ(sl.count(std::int64_t{1}), 3u);  // 1 == 1.0 == True
  EXPECT_EQ(sl.count("1"), 1u);              // str is not bytes
  EXPECT_EQ(sl.count(std::monostate{}), 1u);
  EXPECT_EQ(sl.index(std::int64_t{2}), 6u);
  EXPECT_EQ(sl.index(bytes_of("1")), 4u);
  EXPECT_THROW((void)sl.index("absent"), mpx::SharedMemoryError);
}

TEST(ShareableList, SharedWithAnotherProcessByName) {
  mpx::ShareableList sl({std::int64_t{0}, "......"});
  Unlinker cleanup{sl.name()};
  mpx::Process p([name = sl.name()] {
    auto mine = mpx::ShareableList::attach(name);
    mine.set(0, std::int64_t{123});
    mine.set(1, "child");
  });
  p.start();
  ASSERT_TRUE(p.join(30s));
  ASSERT_EQ(p.exitcode(), 0);
  EXPECT_EQ(std::get<std::int64_t>(sl[0]), 123);
  EXPECT_EQ(std::get<std::string>(sl[1]), "child");
}

TEST(ShareableList, AttachRefusesASegmentThatIsNotOne) {
  auto shm = mpx::SharedMemory::create(64);
  Unlinker cleanup{shm.name()};
  std::int64_t huge = 1'000'000;
  std::memcpy(shm.buf().data(), &huge, sizeof huge);
  EXPECT_THROW((void)mpx::ShareableList::attach(shm.name()), mpx::SharedMemoryError);
  std::int64_t one = 1, zero = 0, past = 1000;
  std::memcpy(shm.buf().data(), &one, 8);
  std::memcpy(shm.buf().data() + 8, &zero, 8);
  std::memcpy(shm.buf().data() + 16, &past, 8);  // the slot ends past the segment
  EXPECT_THROW((void)mpx::ShareableList::attach(shm.name()), mpx::SharedMemoryError);
  EXPECT_THROW((void)mpx::ShareableList::attach(unique_name("absent")), mpx::FileNotFoundError);
}

TEST(ShareableList, PythonReadsWhatCppWritesAndTheOtherWayRound) {
  mpx::ShareableList sl({std::int64_t{-5}, 3.25, true, "h\xc3\xa9llo w\xc3\xb6rld",
                         bytes_of(std::string_view("\x00\x01xy", 4)),
                         std::monostate{}, std::int64_t{9'007'199'254'740'993}},
                        unique_name("cpp"));
  Unlinker cleanup{sl.name()};
  sl.set(2, false);
  auto r = python(kAttach + R"(
print(repr(list(sl)))
print(sl.format)
sl[0] = 2**62
sl[1] = None
sl[3] = "py"
sl[4] = b"\x7f"
sl[5] = 1.5
sl[6] = True
sl.shm.close()
)",
                  sl.name());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = mpx::test::lines_of(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_EQ(lines[0], "[-5, 3.25, False, 'h\xc3\xa9llo w\xc3\xb6rld', b'\\x00\\x01xy', None, 9007199254740993]");
  EXPECT_EQ(lines[1], "qdxxxxxxx?16s8sxxxxxx?xq");
  EXPECT_EQ(std::get<std::int64_t>(sl[0]), std::int64_t{1} << 62);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(sl[1]));
  EXPECT_EQ(std::get<std::string>(sl[3]), "py");
  EXPECT_EQ(std::get<mpx::Bytes>(sl[4]), bytes_of("\x7f"));
  EXPECT_EQ(std::get<double>(sl[5]), 1.5);
  EXPECT_EQ(std::get<bool>(sl[6]), true);
  EXPECT_EQ(sl.format(), "qxxxxxx?xxxxxxxx?16s8sdxxxxxxx?");
}

TEST(ShareableList, CppReadsWhatPythonWritesAndTheOtherWayRound) {
  std::string name = unique_name("py");
  Unlinker cleanup{name};
  auto made = python(R"(
import sys
from multiprocessing import shared_memory, resource_tracker
sl = shared_memory.ShareableList([7, -0.5, True, "\u00e9t\u00e9", b"ab\x00c", None, "", 2**63 - 1], name=sys.argv[1])
resource_tracker.unregister(sl.shm._name, "shared_memory")  # outlive this python
sl.shm.close()
)",
                     name);
  ASSERT_EQ(made.exit_code, 0) << made.err;

  auto sl = mpx::ShareableList::attach(name);
  ASSERT_EQ(sl.size(), 8u);
  EXPECT_EQ(sl.format(), "qdxxxxxxx?8s8sxxxxxx?x8sq");
  EXPECT_EQ(std::get<std::int64_t>(sl[0]), 7);
  EXPECT_EQ(std::get<double>(sl[1]), -0.5);
  EXPECT_EQ(std::get<bool>(sl[2]), true);
  EXPECT_EQ(std::get<std::string>(sl[3]), "\xc3\xa9t\xc3\xa9");
  EXPECT_EQ(std::get<mpx::Bytes>(sl[4]), bytes_of(std::string_view("ab\0c", 4)));
  EXPECT_TRUE(std::holds_alternative<std::monostate>(sl[5]));
  EXPECT_EQ(std::get<std::string>(sl[6]), "");
  EXPECT_EQ(std::get<std::int64_t>(sl[7]), INT64_MAX);

  sl.set(0, "seven");
  sl.set(1, std::int64_t{-1});
  sl.set(2, std::monostate{});
  sl.set(5, 0.125);
  sl.set(6, bytes_of("zz"));
  sl.set(7, false);
  auto r = python(kAttach + R"(
print(repr(list(sl)))
print(sl.format)
sl.shm.close()
)",
                  name);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = mpx::test::lines_of(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_EQ(lines[0], "['seven', -1, None, '\xc3\xa9t\xc3\xa9', b'ab\\x00c', 0.125, b'zz', False]");
  EXPECT_EQ(lines[1], "8sqxxxxxx?x8s8sd8sxxxxxxx?");
}

// ---- SharedMemoryManager -----------------------------------------------------------

bool exists(const std::string& name) { return mpx::test::dev_shm_names().count(name) == 1; }

TEST(SharedMemoryManager, FreesItsSegmentsWhenDestroyed) {
  std::string shm_name, list_name;
  std::optional<mpx::SharedMemory> shm;
  {
    mpx::SharedMemoryManager smm;
    shm = smm.SharedMemory(100);
    auto sl = smm.ShareableList({std::int64_t{1}, "two"});
    shm_name = shm->name();
    list_name = sl.name();
    Unlinker a{shm_name}, b{list_name};  // only if the manager failed to
    EXPECT_TRUE(exists(shm_name));
    EXPECT_TRUE(exists(list_name));
    EXPECT_EQ(smm.segment_names(), (std::vector<std::string>{shm_name, list_name}));
    {
      mpx::SharedMemoryManager inner = std::move(smm);  // the moved-to manager owns them now
    }
    EXPECT_FALSE(exists(shm_name)) << "the manager's destructor left the segment";
    EXPECT_FALSE(exists(list_name));
  }
  shm->buf()[99] = std::byte{7};  // the handle's mapping outlives the name
  EXPECT_EQ(shm->buf()[99], std::byte{7});
}

TEST(SharedMemoryManager, ShutdownFreesAndRefusesNewSegments) {
  mpx::SharedMemoryManager smm;
  auto shm = smm.SharedMemory(8);
  Unlinker cleanup{shm.name()};
  shm.unlink();  // freed by someone else first: shutdown skips it
  auto sl = smm.ShareableList({2.0});
  Unlinker cleanup2{sl.name()};
  smm.shutdown();
  EXPECT_TRUE(smm.is_shut_down());
  EXPECT_FALSE(exists(sl.name()));
  EXPECT_NO_THROW(smm.shutdown());
  EXPECT_THROW((void)smm.SharedMemory(8), mpx::SharedMemoryError);
  EXPECT_THROW((void)smm.ShareableList({}), mpx::SharedMemoryError);
  EXPECT_EQ(std::get<double>(sl[0]), 2.0);  // still mapped
}

TEST(SharedMemoryManager, AChildUsesTheSegmentsButOnlyTheOwnerFreesThem) {
  mpx::SharedMemoryManager smm;
  auto sl = smm.ShareableList({std::int64_t{0}});
  Unlinker cleanup{sl.name()};
  mpx::Process p([&smm, name = sl.name()] {
    mpx::ShareableList::attach(name).set(0, std::int64_t{5});
    smm.shutdown();  // a forked copy: frees nothing
    try {
      (void)smm.SharedMemory(8);
    } catch (const mpx::SharedMemoryError&) {
      mpx::exit(0);
    }
    mpx::exit(1);
  });
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(exists(sl.name())) << "a child's copy of the manager unlinked the owner's segment";
  EXPECT_EQ(std::get<std::int64_t>(sl[0]), 5);
  smm.shutdown();
  EXPECT_FALSE(exists(sl.name()));
}

}  // namespace
