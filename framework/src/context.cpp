#include "mpx/context.hpp"

#include <string>

namespace mpx {

Context get_context(std::string_view method) {
  for (StartMethod m : get_all_start_methods()) {
    if (method == to_string(m)) return Context(m);
  }
  throw ProcessError("cannot find context for '" + std::string(method) +
                     "': mpx offers the start methods 'fork', 'forkserver' and 'spawn'");
}

std::vector<StartMethod> get_all_start_methods() {
  return {StartMethod::fork, StartMethod::forkserver, StartMethod::spawn};
}

std::string_view to_string(StartMethod method) noexcept {
  switch (method) {
    case StartMethod::forkserver: return "forkserver";
    case StartMethod::spawn: return "spawn";
    case StartMethod::fork: break;
  }
  return "fork";
}

}  // namespace mpx
