#include "mpx/context.hpp"

#include <string>

namespace mpx {

Context get_context(std::string_view method) {
  for (StartMethod m : get_all_start_methods()) {
    if (method == to_string(m)) return Context(m);
  }
  throw ProcessError("cannot find context for '" + std::string(method) +
                     "': mpx offers the start methods 'fork' and 'forkserver'");
}

std::vector<StartMethod> get_all_start_methods() { return {StartMethod::fork, StartMethod::forkserver}; }

std::string_view to_string(StartMethod method) noexcept {
  return method == StartMethod::forkserver ? "forkserver" : "fork";
}

}  // namespace mpx
