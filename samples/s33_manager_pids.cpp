// Seed 33: ten processes write dic[pid] = pid and list.append(pid) into
// Manager objects; all ten entries are there afterwards.
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <set>
#include <vector>

#include "mpx/manager.hpp"
#include "mpx/process.hpp"

int main() {
  mpx::Manager m;
  auto dic = m.dict<int, int>();
  auto list = m.list<int>();
  std::vector<mpx::Process> processes;
  for (int i = 0; i < 10; ++i) {
    processes.emplace_back([dic, list]() mutable {
      const int pid = ::getpid();
      dic.set(pid, pid);
      list.append(pid);
    });
  }
  std::set<int> started;
  for (auto& p : processes) {
    p.start();
    started.insert(p.pid());
  }
  for (auto& p : processes) p.join();
  std::set<int> keys;
  bool values_match = true;
  for (const auto& [k, v] : dic.items()) {
    keys.insert(k);
    values_match = values_match && k == v;
  }
  const auto appended = list.snapshot();
  const std::set<int> in_list(appended.begin(), appended.end());
  std::cout << "dict entries: " << dic.size() << "\n"
            << "list entries: " << appended.size() << "\n"
            << "every pid in both: " << (keys == started && in_list == started && values_match ? "yes" : "no")
            << std::endl;
  return 0;
}
