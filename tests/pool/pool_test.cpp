// The Pool: Python's API and its answers, and the faults where Python's pools
// hang or break (a worker killed, a task stuck forever, terminate under load).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <list>
#include <map>
#include <mutex>
#include <ranges>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mpx/pool.hpp"

using namespace std::chrono_literals;

namespace {

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
pid_t worker_pid(int) { return ::getpid(); }
int fail_on_three(int x) {
  if (x == 3) throw std::invalid_argument("three is not allowed");
  return x;
}
[[noreturn]] int block_forever(int) {
  for (;;) ::pause();
}
int die_by_signal(int) {
  ::raise(SIGKILL);
  return 0;
}
int die_by_abort(int) { std::abort(); }
int die_by_exit(int) {
#if defined(__SANITIZE_ADDRESS__)
  // LeakSanitizer checks at std::exit and turns the exit code into 23; the
  // test is about the exit code a worker dies with, so leave as std::exit
  // would without it.
  ::_exit(3);
#else
  std::exit(3);
#endif
}
int spin_forever(int) {
  for (unsigned long n = 0;; ++n) asm volatile("" : "+r"(n));  // burns CPU; not optimised away
}

// Kills its own worker the first time it sees `item == victim` (a marker file
// says it happened); runs normally everywhere else, and on a retry.
struct Job {
  int item = 0;
  int victim = 0;
  std::string marker;
  template <class A>
  void serialize(A& ar) {
    ar(item, victim, marker);
  }
};
int square_or_die_once(const Job& job) {
  if (job.item == job.victim) {
    const int fd = ::open(job.marker.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
    if (fd >= 0) ::raise(SIGKILL);
  }
  return job.item * job.item;
}

// A user type through arguments and results.
struct Point {
  int x = 0;
  int y = 0;
  template <class A>
  void serialize(A& ar) {
    ar(x, y);
  }
  bool operator==(const Point&) const = default;
};
Point mirror(const Point& p) { return {p.y, p.x}; }

// Creates `marker` when it runs item 0 (so the caller can see that a chunk ran).
struct Marked {
  int index = 0;
  std::string marker;
  std::string padding;
  template <class A>
  void serialize(A& ar) {
    ar(index, marker, padding);
  }
};
int touch_marker_at_zero(const Marked& m) {
  if (m.index == 0) ::close(::open(m.marker.c_str(), O_CREAT | O_WRONLY, 0600));
  return m.index;
}

// Bytes of encoding `count` items from `it` as a map chunk.
template <class Item, class It>
mpx::Bytes chunk_bytes(It it, std::size_t count) {
  mpx::Bytes out;
  mpx::detail::pool::encode_items<Item>(out, it, count);
  return out;
}

int nap_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
// Returns once `marker` exists (at most 20 s: a test must not hang).
int wait_for_marker(const std::string& marker) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (::access(marker.c_str(), F_OK) != 0) {
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(1ms);
  }
  return 1;
}

long timer_slack_ns(int) { return ::prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0); }

int g_initialized = 0;  // set by the initializer, in the workers only
void initialize(int value) { g_initialized = value; }
int read_initialized(int) { return g_initialized; }
void throwing_initializer() { throw std::runtime_error("no database"); }

bool alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

long resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      long kib = 0;
      status >> kib;
      return kib;
    }
    std::getline(status, key);
  }
  return -1;
}

std::string temp_marker() {
  return "/tmp/mpx-pool-test." + std::to_string(::getpid()) + "." +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
}

// Removes a file at the end of the scope, whatever happens.
struct RemoveFile {
  std::string path;
  ~RemoveFile() { ::unlink(path.c_str()); }
};

}  // namespace

// ---- Python's API

TEST(Pool, MapReturnsResultsInInputOrder) {
  mpx::Pool pool(2);
  std::vector<int> items(1000);
  for (int i = 0; i < 1000; ++i) items[i] = i;
  const auto squares = pool.map(square, items);
  ASSERT_EQ(squares.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(squares[i], i * i);
  EXPECT_EQ(pool.map(square, items, 1), squares);
  EXPECT_EQ(pool.map(square, items, 7), squares);
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());
}

TEST(Pool, AChunkIsEncodedAsTheVectorOfItsItemsTheWorkerDecodes) {
  const std::vector<int> ints{1, -2, 3, 40000};
  EXPECT_EQ(chunk_bytes<int>(ints.begin(), 4), mpx::encode(ints));
  const auto iota = std::views::iota(7, 11);
  EXPECT_EQ(chunk_bytes<int>(iota.begin(), 4), mpx::encode(std::vector<int>{7, 8, 9, 10}));
  EXPECT_EQ(chunk_bytes<int>(ints.begin() + 1, 2), mpx::encode(std::vector<int>{-2, 3}));
  EXPECT_EQ(chunk_bytes<int>(ints.begin(), 0), mpx::encode(std::vector<int>{}));
  const std::vector<std::string> strings{"a", "", std::string(1000, 'z')};
  EXPECT_EQ(chunk_bytes<std::string>(strings.begin(), 3), mpx::encode(strings));
  const std::vector<bool> bools{true, false, true};
  EXPECT_EQ(chunk_bytes<bool>(bools.begin(), 3), mpx::encode(bools));
  const std::vector<Point> points{{1, 2}, {3, 4}};
  EXPECT_EQ(chunk_bytes<Point>(points.begin(), 2), mpx::encode(points));
  const std::vector<std::tuple<int, std::string>> pairs{{1, "x"}, {2, "yy"}};
  using Pair = std::tuple<int, std::string>;
  EXPECT_EQ(chunk_bytes<Pair>(pairs.begin(), 2), mpx::encode(pairs));
  // An iterator whose items are converted to the range's value type on the way.
  auto doubled = std::views::iota(0, 3) | std::views::transform([](int i) { return static_cast<long>(2 * i); });
  EXPECT_EQ(chunk_bytes<long>(doubled.begin(), 3), mpx::encode(std::vector<long>{0, 2, 4}));
}

TEST(Pool, MapTakesAnyInputRange) {
  mpx::Pool pool(2);
  // Sized and forward, not contiguous: read in place.
  EXPECT_EQ(pool.map(square, std::views::iota(0, 5)), (std::vector<int>{0, 1, 4, 9, 16}));
  const std::list<int> list{3, 1, 2};
  EXPECT_EQ(pool.map(square, list, 2), (std::vector<int>{9, 1, 4}));
  // Not sized (a filter), and input only (a stream): taken first.
  auto odd = std::views::iota(0, 10) | std::views::filter([](int i) { return i % 2 == 1; });
  EXPECT_EQ(pool.map(square, odd), (std::vector<int>{1, 9, 25, 49, 81}));
  std::istringstream text("4 5 6");
  EXPECT_EQ(pool.map(square, std::views::istream<int>(text)), (std::vector<int>{16, 25, 36}));
  EXPECT_EQ(pool.starmap(add, std::vector<std::tuple<int, int>>{{1, 2}, {3, 4}}), (std::vector<int>{3, 7}));
}

TEST(Pool, MapAsyncHasReadItsInputWhenItReturns) {
  mpx::Pool pool(2);
  auto items = std::make_unique<std::vector<std::string>>(100, std::string(100, 'q'));
  mpx::MapOptions options;
  options.chunksize = 7;
  auto lengths = pool.map_async([](const std::string& s) { return s.size(); }, *items, options);
  items.reset();  // the caller's input is gone before the chunks have run
  const auto got = lengths.get(30s);
  ASSERT_EQ(got.size(), 100u);
  for (const auto length : got) EXPECT_EQ(length, 100u);
}

TEST(Pool, MapHandsChunksToTheWorkersWhileItEncodesTheRest) {
  // A large map should not leave the workers idle until its last chunk is
  // encoded: reading the last item waits (timed) until item 0 has run.
  mpx::Pool pool(2);
  const std::string marker = temp_marker();
  RemoveFile cleanup{marker};
  constexpr int n = 4;
  std::atomic<bool> ran_first = false;
  auto items = std::views::iota(0, n) | std::views::transform([&](int i) {
                 if (i == n - 1) {
                   const auto deadline = std::chrono::steady_clock::now() + 10s;
                   while (::access(marker.c_str(), F_OK) != 0 && std::chrono::steady_clock::now() < deadline)
                     std::this_thread::sleep_for(1ms);
                   ran_first = ::access(marker.c_str(), F_OK) == 0;
                 }
                 // 1 MiB per item: each chunk is worth a submission of its own.
                 return Marked{i, marker, std::string(1 << 20, 'p')};
               });
  const auto got = pool.map(touch_marker_at_zero, items, 1);
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_TRUE(ran_first) << "item 0 did not run before the last item was read";
}

TEST(Pool, DefaultChunksizeIsPythons) {
  // Python: chunksize, extra = divmod(len, 4 * processes); chunksize += bool(extra)
  EXPECT_EQ(mpx::detail::pool::default_chunksize(10, 2), 2u);
  EXPECT_EQ(mpx::detail::pool::default_chunksize(16, 2), 2u);
  EXPECT_EQ(mpx::detail::pool::default_chunksize(17, 2), 3u);
  EXPECT_EQ(mpx::detail::pool::default_chunksize(3, 4), 1u);
}

TEST(Pool, ApplyStarmapAndLambdas) {
  mpx::Pool pool(2);
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
  EXPECT_EQ(pool.apply([](int x) { return x + 1; }, 41), 42);
  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(add, pairs), (std::vector<int>{3, 7, 11}));
  EXPECT_EQ(pool.starmap_async(add, pairs).get(), (std::vector<int>{3, 7, 11}));
  EXPECT_EQ(pool.map(mirror, std::vector<Point>{{1, 2}, {3, 4}}), (std::vector<Point>{{2, 1}, {4, 3}}));
  // A function object without members is default-constructed in the worker.
  struct Triple {
    int operator()(int x) const { return 3 * x; }
  };
  EXPECT_EQ(pool.map(Triple{}, std::vector<int>{1, 2}), (std::vector<int>{3, 6}));
  EXPECT_EQ(pool.apply([](const std::string& s) { return s + "!"; }, std::string("hi")), "hi!");
}

TEST(Pool, ApplyAsyncRunsInParallelAndResultsAreReusable) {
  mpx::Pool pool(2);
  std::vector<mpx::AsyncResult<pid_t>> results;
  for (int i = 0; i < 50; ++i) results.push_back(pool.apply_async(worker_pid, i));
  std::set<pid_t> pids;
  for (auto& r : results) pids.insert(r.get(30s));
  EXPECT_FALSE(pids.count(::getpid()));
  const auto workers = pool.worker_pids();
  for (pid_t pid : pids) EXPECT_NE(std::find(workers.begin(), workers.end(), pid), workers.end());
  auto r = pool.apply_async(square, 9);
  EXPECT_EQ(r.get(), 81);
  EXPECT_EQ(r.get(), 81);  // a result can be read again
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.successful());
}

TEST(Pool, ATaskNeverWaitsBehindALongOneWhileAnotherWorkerIsFree) {
  // Both workers learn that their tasks are long (20 ms, over the 5 ms up
  // to which a worker is handed its next task ahead); then one blocks, and
  // every later task must run on the other one.
  mpx::Pool pool(2);
  const std::string marker = temp_marker();
  RemoveFile cleanup{marker};
  ASSERT_EQ(pool.map(nap_ms, std::vector<int>{20, 20, 20, 20}, 1), (std::vector<int>{20, 20, 20, 20}));
  auto blocked = pool.apply_async(wait_for_marker, marker);
  std::vector<mpx::AsyncResult<int>> later;
  for (int i = 0; i < 6; ++i) later.push_back(pool.apply_async(nap_ms, 20));
  for (auto& r : later) EXPECT_EQ(r.get(10s), 20);  // none is stuck behind the blocked task
  EXPECT_FALSE(blocked.ready());
  ::close(::open(marker.c_str(), O_CREAT | O_WRONLY, 0600));
  EXPECT_EQ(blocked.get(30s), 1);
}

TEST(Pool, ShortTasksStreamAndAKilledWorkersQueuedTasksGoToTheOthers) {
  // 1 ms tasks: each worker holds its next task ahead. Killing one mid-way
  // loses nothing: the task it ran is retried, the one it held runs elsewhere.
  mpx::Pool pool(mpx::PoolOptions().with_processes(2).with_retries(1));
  const std::string marker = temp_marker();
  RemoveFile cleanup{marker};
  std::vector<Job> jobs;
  for (int i = 0; i < 200; ++i) jobs.push_back(Job{i, 150, marker});
  auto slow_square = [](const Job& job) {
    std::this_thread::sleep_for(1ms);
    return square_or_die_once(job);
  };
  const auto got = pool.map(slow_square, jobs, 1);
  ASSERT_EQ(got.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(got[i], i * i);
  EXPECT_EQ(pool.stats().tasks_retried, 1u);
  EXPECT_EQ(pool.stats().workers_lost, 1u);
}

TEST(Pool, ImapYieldsInOrderAndImapUnorderedYieldsEverything) {
  mpx::Pool pool(2);
  std::vector<int> ordered;
  for (int v : pool.imap(square, std::views::iota(0, 500), 7)) ordered.push_back(v);
  ASSERT_EQ(ordered.size(), 500u);
  for (int i = 0; i < 500; ++i) EXPECT_EQ(ordered[i], i * i);

  std::multiset<int> unordered;
  auto it = pool.imap_unordered(square, std::vector<int>{1, 2, 3, 4, 5});
  while (auto v = it.next(30s)) unordered.insert(*v);
  EXPECT_EQ(unordered, (std::multiset<int>{1, 4, 9, 16, 25}));
}

TEST(Pool, ImapConsumesAnEndlessInputLazily) {
  mpx::Pool pool(2);
  auto stream = pool.imap(square, std::views::iota(0), 10);  // no end
  for (int i = 0; i < 1000; ++i) {
    auto v = stream.next(30s);
    ASSERT_TRUE(v);
    ASSERT_EQ(*v, i * i);
  }
}

TEST(Pool, ImapUnorderedOfTenMillionItemsRunsInBoundedMemory) {
#if defined(__SANITIZE_ADDRESS__)
  // ASan's shadow memory and quarantine grow the resident set by far more
  // than the bound this test checks.
  GTEST_SKIP() << "the resident-set bound does not hold under ASan's shadow memory";
#endif
  mpx::Pool pool(2);
  const long before = resident_kib();
  long long sum = 0;
  std::size_t count = 0;
  mpx::MapOptions options;
  options.chunksize = 1000;
  for (int v : pool.imap_unordered([](int x) { return x & 1; }, std::views::iota(0, 10'000'000), options)) {
    sum += v;
    ++count;
  }
  const long after = resident_kib();
  EXPECT_EQ(count, 10'000'000u);
  EXPECT_EQ(sum, 5'000'000);
  // The input alone, materialized, would be 40 MB and its results as much again.
  EXPECT_LT(after - before, 16 * 1024) << "RSS grew from " << before << " KiB to " << after << " KiB";
}

TEST(Pool, UserTypesAndLargeResults) {
  mpx::Pool pool(2);
  auto big = pool.apply([](int n) { return std::string(static_cast<std::size_t>(n), 'x'); }, 8 << 20);
  EXPECT_EQ(big.size(), 8u << 20);
}

// ---- misuse is a typed error

TEST(Pool, MisuseIsATypedError) {
  EXPECT_THROW(mpx::Pool(0), mpx::PoolError);
  EXPECT_THROW(mpx::Pool(-1), mpx::PoolError);
  EXPECT_THROW(mpx::Pool(mpx::PoolOptions().with_processes(1).with_maxtasksperchild(0)), mpx::PoolError);
  EXPECT_THROW(mpx::Pool(mpx::PoolOptions().with_processes(1).with_start_method(mpx::StartMethod::spawn)),
               mpx::PoolError);

  mpx::Pool pool(1);
  EXPECT_THROW(pool.join(), mpx::PoolError);  // before close()
  auto blocked = pool.apply_async(block_forever, 0);
  EXPECT_THROW((void)blocked.successful(), mpx::PoolError);  // not ready
  EXPECT_THROW((void)blocked.get(50ms), mpx::TimeoutError);  // and the task goes on
  EXPECT_FALSE(blocked.ready());
  pool.close();
  EXPECT_THROW((void)pool.apply_async(square, 1), mpx::PoolError);
  EXPECT_THROW((void)pool.map(square, std::vector<int>{1}), mpx::PoolError);
  EXPECT_FALSE(pool.join(50ms));  // the blocked task keeps a worker busy
  pool.terminate();
  EXPECT_TRUE(pool.join(30s));
  EXPECT_THROW((void)blocked.get(), mpx::PoolError);  // terminated before it finished
}

TEST(Pool, CloseThenJoinFinishesEveryTask) {
  mpx::Pool pool(2);
  auto r = pool.map_async(square, std::views::iota(0, 200));
  pool.close();
  pool.join();
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.get()[199], 199 * 199);
  EXPECT_TRUE(pool.worker_pids().empty());
}

// ---- errors of tasks

TEST(Pool, ATaskExceptionComesBackAsRemoteErrorWithItsTypeAndMessage) {
  mpx::Pool pool(2);
  try {
    (void)pool.apply(fail_on_three, 3);
    FAIL() << "no exception";
  } catch (const mpx::RemoteError& e) {
    EXPECT_EQ(e.type(), "std::invalid_argument");
    EXPECT_EQ(e.message(), "three is not allowed");
  }
  auto r = pool.apply_async(fail_on_three, 3);
  r.wait();
  EXPECT_FALSE(r.successful());
  EXPECT_EQ(pool.apply(fail_on_three, 4), 4);  // the pool is unaffected
}

TEST(Pool, MapRaisesTheFirstErrorAfterItsOtherTasksFinished) {
  mpx::Pool pool(2);
  std::vector<int> items{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  auto r = pool.map_async(fail_on_three, items, [] {
    mpx::MapOptions o;
    o.chunksize = 1;
    return o;
  }());
  EXPECT_THROW((void)r.get(30s), mpx::RemoteError);
  // Raised only once every chunk was in: all ten tasks are done.
  EXPECT_EQ(pool.stats().tasks_done, 10u);

  // imap raises at the failing position, and goes on after it.
  auto it = pool.imap(fail_on_three, items);
  std::vector<int> seen;
  int errors = 0;
  for (;;) {
    try {
      auto v = it.next(30s);
      if (!v) break;
      seen.push_back(*v);
    } catch (const mpx::RemoteError&) {
      ++errors;
      EXPECT_EQ(seen.size(), 3u);  // at position 3
    }
  }
  EXPECT_EQ(errors, 1);
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 4, 5, 6, 7, 8, 9}));
}

TEST(Pool, CallbacksRunInTheCallerOneAtATimeBeforeGetReturns) {
  mpx::Pool pool(2);
  std::mutex mutex;
  std::set<std::thread::id> threads;
  std::set<pid_t> pids;
  std::atomic<int> running{0};
  std::atomic<int> overlaps{0};
  std::vector<int> values;
  std::vector<mpx::AsyncResult<int>> results;
  for (int i = 0; i < 40; ++i) {
    results.push_back(pool.apply_async(square, std::tuple{i},
                                       {.callback =
                                            [&](const int& v) {
                                              if (running.fetch_add(1) != 0) overlaps++;
                                              std::lock_guard lock(mutex);
                                              threads.insert(std::this_thread::get_id());
                                              pids.insert(::getpid());
                                              values.push_back(v);
                                              running.fetch_sub(1);
                                            },
                                        .error_callback = {}}));
  }
  std::string error_type;
  auto failing = pool.apply_async(fail_on_three, std::tuple{3},
                                  {.callback = {}, .error_callback = [&](const mpx::Error& e) {
                                     std::lock_guard lock(mutex);
                                     error_type = dynamic_cast<const mpx::RemoteError&>(e).type();
                                   }});
  for (auto& r : results) (void)r.get(30s);
  failing.wait();
  std::lock_guard lock(mutex);
  EXPECT_EQ(values.size(), 40u);  // every callback ran before its get() returned
  EXPECT_EQ(pids, std::set<pid_t>{::getpid()});
  EXPECT_EQ(threads.size(), 1u);
  EXPECT_FALSE(threads.count(std::this_thread::get_id()));
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(error_type, "std::invalid_argument");
}

// ---- workers: initializer, maxtasksperchild

TEST(Pool, InitializerRunsInEachWorkerNeverInTheCaller) {
  mpx::Pool pool(mpx::PoolOptions().with_processes(2), initialize, 7);
  const auto values = pool.map(read_initialized, std::vector<int>(20, 0), 1);
  for (int v : values) EXPECT_EQ(v, 7);
  EXPECT_EQ(g_initialized, 0);
}

TEST(Pool, AnInitializerThatThrowsBreaksThePoolInsteadOfLoopingForever) {
  mpx::Pool pool(mpx::PoolOptions().with_processes(2), throwing_initializer);
  try {
    // Refused at submission if the pool broke already, else failed in get().
    (void)pool.apply_async(square, 2).get(30s);
    FAIL() << "no error";
  } catch (const mpx::PoolError& e) {
    EXPECT_NE(std::string(e.what()).find("no database"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)pool.apply_async(square, 2), mpx::PoolError);
}

TEST(Pool, MaxtasksperchildReplacesWorkers) {
  mpx::Pool pool(mpx::PoolOptions().with_processes(1).with_maxtasksperchild(2));
  const auto pids = pool.map(worker_pid, std::vector<int>(6, 0), 1);
  std::map<pid_t, int> tasks_per_pid;
  for (pid_t pid : pids) ++tasks_per_pid[pid];
  EXPECT_EQ(tasks_per_pid.size(), 3u);
  for (const auto& [pid, n] : tasks_per_pid) EXPECT_EQ(n, 2) << pid;
  EXPECT_GE(pool.stats().workers_started, 3u);
}

// ---- faults

TEST(Pool, AWorkerThatDiesFailsItsTaskWithWorkerLostAndIsReplaced) {
  mpx::Pool pool(2);
  const struct {
    int (*fn)(int);
    int exitcode;
  } deaths[] = {{die_by_signal, -SIGKILL}, {die_by_abort, -SIGABRT}, {die_by_exit, 3}};
  for (const auto& death : deaths) {
    try {
      (void)pool.apply_async(death.fn, 0).get(30s);
      FAIL() << "no error";
    } catch (const mpx::WorkerLost& e) {
      EXPECT_EQ(e.exitcode(), death.exitcode) << e.what();
      EXPECT_GT(e.pid(), 0);
    }
    EXPECT_EQ(pool.apply(square, 5), 25);  // the pool goes on
  }
  EXPECT_EQ(pool.stats().workers_lost, 3u);
  EXPECT_EQ(pool.worker_pids().size(), 2u);
}

TEST(Pool, AWorkerKilledDuringMapIsRetriedAndTheResultIsComplete) {
  const std::string marker = temp_marker();
  RemoveFile cleanup{marker};
  mpx::Pool pool(mpx::PoolOptions().with_processes(2).with_retries(2));
  std::vector<Job> jobs;
  for (int i = 0; i < 10'000; ++i) jobs.push_back({i, 5000, marker});
  const auto squares = pool.map(square_or_die_once, jobs);
  ASSERT_EQ(squares.size(), 10'000u);
  for (int i = 0; i < 10'000; ++i) ASSERT_EQ(squares[i], i * i);
  EXPECT_EQ(pool.stats().workers_lost, 1u);
  EXPECT_EQ(pool.stats().tasks_retried, 1u);
}

TEST(Pool, AWorkerKilledDuringMapWithoutRetriesRaisesWorkerLostPromptly) {
  const std::string marker = temp_marker();
  RemoveFile cleanup{marker};
  mpx::Pool pool(2);
  std::vector<Job> jobs;
  for (int i = 0; i < 10'000; ++i) jobs.push_back({i, 5000, marker});
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW((void)pool.map(square_or_die_once, jobs), mpx::WorkerLost);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);  // generous: the issue asks for < 1 s, see pool_bench
  EXPECT_EQ(pool.map(square, std::vector<int>{2}), std::vector<int>{4});
}

TEST(Pool, AWorkerKilledFromOutsideIsReplaced) {
  mpx::Pool pool(2);
  auto stuck = pool.apply_async(block_forever, 0);
  // Find the worker that holds the stuck task: the other one answers.
  const pid_t free_worker = pool.apply_async(worker_pid, 0).get(30s);
  pid_t busy = 0;
  for (pid_t pid : pool.worker_pids())
    if (pid != free_worker) busy = pid;
  ASSERT_GT(busy, 0);
  ::kill(busy, SIGKILL);
  try {
    (void)stuck.get(30s);
    FAIL() << "no error";
  } catch (const mpx::WorkerLost& e) {
    EXPECT_EQ(e.pid(), busy);
    EXPECT_EQ(e.exitcode(), -SIGKILL);
  }
  EXPECT_EQ(pool.apply(square, 3), 9);
  const auto pids = pool.worker_pids();
  EXPECT_EQ(pids.size(), 2u);
  EXPECT_EQ(std::find(pids.begin(), pids.end(), busy), pids.end());
}

TEST(Pool, AWorkerKilledByItsCpuLimitFailsItsTaskWithThatExitCode) {
  mpx::ProcessLimits limits;
  limits.cpu_seconds = 1;
  mpx::Pool pool(mpx::PoolOptions().with_processes(1).with_worker_limits(limits));
  try {
    (void)pool.apply_async(spin_forever, 0).get(60s);
    FAIL() << "no error";
  } catch (const mpx::WorkerLost& e) {
    EXPECT_EQ(e.exitcode(), -SIGXCPU) << e.what();
  }
  EXPECT_EQ(pool.apply(square, 6), 36);  // the replacement works (its own CPU budget)
}

TEST(Pool, WorkersSleepWithA1usTimerSlackUnlessTheCallerChoseOne) {
  mpx::Pool defaults(mpx::PoolOptions().with_processes(1));
  EXPECT_EQ(defaults.apply(timer_slack_ns, 0), 1000);
  mpx::ProcessLimits limits;
  limits.timer_slack = 20us;
  mpx::Pool chosen(mpx::PoolOptions().with_processes(1).with_worker_limits(limits));
  EXPECT_EQ(chosen.apply(timer_slack_ns, 0), 20000);
  limits.timer_slack = 0ns;
  EXPECT_THROW(mpx::Pool(mpx::PoolOptions().with_processes(1).with_worker_limits(limits)), mpx::PoolError);
}

TEST(Pool, ATaskStuckForeverFailsWithTaskTimeoutAndThePoolGoesOn) {
  mpx::Pool pool(mpx::PoolOptions().with_processes(2).with_task_timeout(300ms).with_kill_grace(100ms));
  auto stuck = pool.apply_async(block_forever, 0);
  try {
    (void)stuck.get(30s);
    FAIL() << "no error";
  } catch (const mpx::TaskTimeout& e) {
    EXPECT_EQ(e.limit(), 300ms);
  }
  EXPECT_EQ(pool.apply(square, 4), 16);
  EXPECT_EQ(pool.stats().tasks_timed_out, 1u);
  // Per call: a tighter limit than the pool's.
  auto quick = pool.apply_async(block_forever, std::tuple{0}, {}, {.timeout = 100ms, .retries = {}});
  EXPECT_THROW((void)quick.get(30s), mpx::TimeoutError);
  EXPECT_EQ(pool.worker_pids().size(), 2u);
}

TEST(Pool, TerminateWithEveryWorkerStuckAndTenThousandPendingReturnsAndLeavesNoProcess) {
  auto pool = std::make_unique<mpx::Pool>(mpx::PoolOptions().with_processes(2).with_kill_grace(100ms));
  std::vector<mpx::AsyncResult<int>> results;
  for (int i = 0; i < 10'000; ++i) results.push_back(pool->apply_async(block_forever, i));
  const auto pids = pool->worker_pids();
  ASSERT_EQ(pids.size(), 2u);
  const auto start = std::chrono::steady_clock::now();
  pool->terminate();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  for (pid_t pid : pids) EXPECT_FALSE(alive(pid)) << pid;
  for (auto& r : results) {
    ASSERT_TRUE(r.wait(1s));
    EXPECT_THROW((void)r.get(), mpx::PoolError);
  }
  pool->join();
}

TEST(Pool, DestroyingAPoolReapsEveryWorker) {
  std::vector<pid_t> pids;
  {
    mpx::Pool pool(3);
    pids = pool.worker_pids();
    (void)pool.apply_async(block_forever, 0);
  }
  ASSERT_EQ(pids.size(), 3u);
  for (pid_t pid : pids) EXPECT_FALSE(alive(pid)) << pid;
}

// ---- progress

TEST(Pool, ProgressCallbackSeesEveryItem) {
  mpx::Pool pool(2);
  std::vector<mpx::Progress> reports;
  mpx::MapOptions options;
  options.chunksize = 10;
  options.on_progress = [&](const mpx::Progress& p) { reports.push_back(p); };
  (void)pool.map(square, std::views::iota(0, 1000), options);
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports.back().done, 1000u);
  EXPECT_EQ(reports.back().total, 1000u);
  for (std::size_t i = 1; i < reports.size(); ++i) EXPECT_GE(reports[i].done, reports[i - 1].done);

  std::vector<mpx::Progress> stream_reports;
  options.on_progress = [&](const mpx::Progress& p) { stream_reports.push_back(p); };
  for ([[maybe_unused]] int v : pool.imap_unordered(square, std::views::iota(0, 500), options)) {
  }
  ASSERT_FALSE(stream_reports.empty());
  EXPECT_EQ(stream_reports.back().done, 500u);
}

TEST(Pool, ProgressLineText) {
  mpx::Progress p;
  p.done = 50;
  p.total = 200;
  p.elapsed = std::chrono::seconds(5);
  p.lost = 1;
  p.retried = 1;
  EXPECT_DOUBLE_EQ(p.rate(), 10.0);
  ASSERT_TRUE(p.eta());
  EXPECT_DOUBLE_EQ(p.eta()->count(), 15.0);
  EXPECT_EQ(p.to_string(), "50/200  25% | 10.0 it/s | elapsed 0:00:05 | eta 0:00:15 | lost 1 retried 1");
}

// ---- start methods

TEST(Pool, WorksUnderForkserverFromABusyMultiThreadedProcess) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int i = 0; i < 8; ++i)
    busy.emplace_back([&] {
      std::vector<int> scratch;
      while (!stop) {
        scratch.assign(1000, 1);  // malloc traffic while the pool starts
      }
    });
  {
    mpx::Pool pool(mpx::PoolOptions().with_processes(2).with_start_method(mpx::StartMethod::forkserver));
    EXPECT_EQ(pool.map(square, std::views::iota(0, 100))[99], 99 * 99);
    EXPECT_EQ(pool.apply([](int x) { return x - 1; }, 1), 0);
    try {
      (void)pool.apply(die_by_signal, 0);
      FAIL() << "no error";
    } catch (const mpx::WorkerLost& e) {
      EXPECT_EQ(e.exitcode(), -SIGKILL);
    }
    EXPECT_EQ(pool.apply(square, 6), 36);
  }
  stop = true;
  for (auto& t : busy) t.join();
}

TEST(Pool, ProgressLineGoesToStderrOnlyWhenAsked) {
  // A child with stderr on a pipe (not a terminal: plain lines) runs two maps,
  // one with progress and one without; the pipe shows exactly the first.
  int err[2];
  ASSERT_EQ(::pipe(err), 0);
  mpx::Process child([&] {
    ::dup2(err[1], STDERR_FILENO);
    mpx::Pool pool(2);
    (void)pool.map(square, std::views::iota(0, 300));
    mpx::MapOptions options;
    options.progress = true;
    (void)pool.map(square, std::views::iota(0, 1000), options);
  });
  child.start();
  ::close(err[1]);
  std::string text;
  char buffer[4096];
  for (ssize_t n; (n = ::read(err[0], buffer, sizeof buffer)) > 0;) text.append(buffer, static_cast<std::size_t>(n));
  ::close(err[0]);
  ASSERT_TRUE(child.join(60s));
  EXPECT_EQ(child.exitcode(), 0);
  EXPECT_NE(text.find("mpx::Pool: 1000/1000 100%"), std::string::npos) << text;
  EXPECT_EQ(text.find("/300"), std::string::npos) << text;
}
