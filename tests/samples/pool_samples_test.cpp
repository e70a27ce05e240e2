// The pool samples (seeds 04, 21, 22, 23, 36), run as programs: each test
// checks the behaviour SEEDS.md states for its seed.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "child_process.hpp"
#include "test_support.hpp"

using mpx::test::lines_of;
using mpx::test::run_sample;
using namespace std::chrono_literals;

TEST(PoolSamples, S04MapReturnsTheResultsInInputOrder) {
  auto r = run_sample("s04_pool_map", {}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), std::vector<std::string>{"process in -> done"});
}

TEST(PoolSamples, S21SquaresOfOneToTenInOrder) {
  auto r = run_sample("s21_pool_squares", {}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), std::vector<std::string>{"[1, 4, 9, 16, 25, 36, 49, 64, 81, 100]"});
}

TEST(PoolSamples, S22GetReturnsTheValueAndJoinBeforeCloseIsAnError) {
  auto r = run_sample("s22_apply_async", {}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0], "get() = 27");
  EXPECT_EQ(lines[1], "join() before close(): mpx::Pool::join: call close() or terminate() first");
  EXPECT_EQ(lines[2], "closed and joined");
}

TEST(PoolSamples, S36CallbackRunsInTheParentWithEachResultAndApplyAsyncIsParallel) {
  auto r = run_sample("s36_apply_async_callback", {}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::multiset<std::string> callbacks;
  double serial = 0;
  double parallel = 0;
  for (const auto& line : lines_of(r.out)) {
    std::smatch m;
    if (line.rfind("Bar(", 0) == 0)
      callbacks.insert(line);
    else if (std::regex_match(line, m, std::regex("apply x4: ([0-9.e-]+) s")))
      serial = std::stod(m[1]);
    else if (std::regex_match(line, m, std::regex("apply_async x10 on 2 workers: ([0-9.e-]+) s")))
      parallel = std::stod(m[1]);
  }
  std::multiset<std::string> expected;
  for (int i = 0; i < 10; ++i) expected.insert("Bar(" + std::to_string(i) + ") in parent");
  EXPECT_EQ(callbacks, expected) << r.out;
  // Four tasks of 100 ms one after another cannot take less than 0.4 s; ten
  // of them run one at a time could not take less than 1 s.
  EXPECT_GE(serial, 0.4);
  EXPECT_GT(parallel, 0.0) << r.out;
  EXPECT_LT(parallel, 0.95) << r.out;
}

TEST(PoolSamples, S23APoolOfThreeFetchesEveryPageWithCurl) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("mpx-s23-" + std::to_string(::getpid()));
  struct Cleanup {
    fs::path path;
    ~Cleanup() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } cleanup{root};
  fs::create_directories(root / "site");
  fs::create_directories(root / "out");
  std::vector<std::string> pages;
  for (int i = 0; i < 6; ++i) {
    pages.push_back("page" + std::to_string(i) + ".html");
    std::ofstream(root / "site" / pages.back()) << "<html>page " << i << " " << std::string(1000 * i, 'x') << "</html>\n";
  }
  // A small HTTP server on 127.0.0.1 (a port the kernel picks), killed at the end.
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const std::string site = (root / "site").string();
  mpx::test::Child server([&] {
    ::dup2(out[1], STDOUT_FILENO);
    ::execlp("python3", "python3", "-c",
             "import functools, http.server, sys\n"
             "handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n"
             "handler.log_message = lambda *args: None\n"
             "server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)\n"
             "print(server.server_address[1], flush=True)\n"
             "server.serve_forever()\n",
             site.c_str(), static_cast<char*>(nullptr));
    return 127;
  });
  ::close(out[1]);
  std::string port;
  pollfd readable{out[0], POLLIN, 0};
  char c = 0;
  while (::poll(&readable, 1, 30'000) == 1 && ::read(out[0], &c, 1) == 1 && c != '\n') port += c;
  ::close(out[0]);
  ASSERT_FALSE(port.empty()) << "the HTTP server did not start";

  std::vector<std::string> args{(root / "out").string()};
  for (const auto& page : pages) args.push_back("http://127.0.0.1:" + port + "/" + page);
  auto r = run_sample("s23_pool_downloader", args, 120s);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const auto& page : pages) {
    std::ifstream sent(root / "site" / page);
    std::ifstream got(root / "out" / page);
    std::stringstream a, b;
    a << sent.rdbuf();
    b << got.rdbuf();
    EXPECT_FALSE(b.str().empty()) << page;
    EXPECT_EQ(a.str(), b.str()) << page;
  }
}
