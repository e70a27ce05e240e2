// Manager benchmarks, side by side in one run with Python's
// multiprocessing.Manager (bench/python/manager_bench.py):
//   manager_dict_set_get          d[i] = i then d[i], from a child process, local manager
//                                 (dict operations/s; goal >= 10x Python)
//   manager_list_append           l.append(i) from the parent (appends/s)
//   manager_lock_acquire_release  acquire + release of a manager Lock (pairs/s)
//   manager_tcp_dict_set_get      as the first, over TCP on 127.0.0.1 with an authkey,
//                                 the client reached with Manager::connect (operations/s)
// Every figure is the median of --repeat runs. --json FILE writes one record
// per scenario; --quick runs smaller sizes; --no-python skips the peers.
#include <cstdio>
#include <map>
#include <string>

#include "bench_support.hpp"
#include "mpx/manager.hpp"
#include "mpx/pipe.hpp"
#include "mpx/process.hpp"

using mpx::bench::Clock;
using Row = mpx::bench::Record;

namespace {

// d[i] = i; d[i], n times, in a child process; returns operations per second.
double dict_rate_in_child(const mpx::DictProxy<int, int>& d, int n, std::optional<std::pair<std::string, std::string>> tcp) {
  auto ends = mpx::Pipe(false);
  auto receive = ends.first;
  auto send = ends.second;
  mpx::Process child([&, send]() mutable {
    auto dict = d;
    std::optional<mpx::Manager> remote;
    if (tcp) {
      remote.emplace(mpx::Manager::connect(tcp->first, tcp->second));
      dict = remote->dict<int, int>();
    }
    dict.set(-1, -1);  // connect before the clock starts
    const auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      dict.set(i, i);
      if (dict.get(i) != i) std::abort();
    }
    send.send(2.0 * n / mpx::bench::seconds_since(t0));
  });
  child.start();
  const auto rate = receive.recv<double>();
  child.join();
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  const auto opt = mpx::bench::parse_options(argc, argv);
  const int n_dict = opt.quick ? 20'000 : 200'000;
  const int n_list = opt.quick ? 20'000 : 200'000;
  const int n_lock = opt.quick ? 20'000 : 200'000;
  const int n_tcp = opt.quick ? 5'000 : 50'000;

  double dict_rate = 0, list_rate = 0, lock_rate = 0, tcp_rate = 0;
  try {
    mpx::Manager m({.address = "127.0.0.1:0", .authkey = "bench-key"});
    auto d = m.dict<int, int>();
    dict_rate = mpx::bench::median_of(opt.repeat, [&] { return dict_rate_in_child(d, n_dict, std::nullopt); });
    list_rate = mpx::bench::median_of(opt.repeat, [&] {
      auto l = m.list<int>();
      const auto t0 = Clock::now();
      for (int i = 0; i < n_list; ++i) l.append(i);
      return n_list / mpx::bench::seconds_since(t0);
    });
    auto lock = m.Lock();
    lock_rate = mpx::bench::median_of(opt.repeat, [&] {
      const auto t0 = Clock::now();
      for (int i = 0; i < n_lock; ++i) {
        lock.acquire();
        lock.release();
      }
      return n_lock / mpx::bench::seconds_since(t0);
    });
    tcp_rate = mpx::bench::median_of(opt.repeat, [&] {
      return dict_rate_in_child(d, n_tcp, std::make_pair(m.address(), std::string("bench-key")));
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "manager_bench: %s\n", e.what());
    return 1;
  }

  std::map<std::string, double> py;
  if (opt.python) py = mpx::bench::run_python("manager_bench.py", mpx::bench::python_args(opt));
  auto peer = [&](const std::string& key) { return py.count(key) ? py[key] : 0.0; };

  std::vector<Row> rows{
      {"manager_dict_set_get", "ops/s", dict_rate, {{"python_manager", peer("manager_dict_set_get")}}, true,
       "from a child; goal >= 10x python"},
      {"manager_list_append", "ops/s", list_rate, {{"python_manager", peer("manager_list_append")}}, true, ""},
      {"manager_lock_acquire_release", "pairs/s", lock_rate,
       {{"python_manager", peer("manager_lock_acquire_release")}}, true, ""},
      {"manager_tcp_dict_set_get", "ops/s", tcp_rate, {{"python_manager", peer("manager_tcp_dict_set_get")}}, true,
       "127.0.0.1 with an authkey"},
  };
  mpx::bench::print_records(rows);
  if (!mpx::bench::write_json(opt.json_path, "manager_bench", rows)) return 1;
  return 0;
}
