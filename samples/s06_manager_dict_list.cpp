// Seed 06: a dict and a list from a Manager, changed by a child.
//
//     with Manager() as m:
//         d = m.dict(); l = m.list()
//         p = Process(target=f, args=(d, l)); p.start(); p.join()   # f: d["haha"] = 88; l.append(20)
//         print(d); print(l)                                        # {'haha': 88}  [20]
#include <iostream>
#include <string>

#include "mpx/manager.hpp"
#include "mpx/process.hpp"

int main() {
  mpx::Manager m;  // the `with` block: the server is shut down and reaped at the end of the scope
  auto d = m.dict<std::string, int>();
  auto l = m.list<int>();
  mpx::Process p([d, l]() mutable {
    d.set("haha", 88);
    l.append(20);
  });
  p.start();
  p.join();
  std::string dict = "{";
  for (const auto& [k, v] : d.items()) dict += (dict.size() > 1 ? ", " : "") + k + ": " + std::to_string(v);
  std::string list = "[";
  for (int x : l.snapshot()) list += (list.size() > 1 ? ", " : "") + std::to_string(x);
  std::cout << dict << "}\n" << list << "]" << std::endl;
  return 0;
}
