// Private to framework/src: what the forkserver and spawn start methods
// share. Neither can hand the child a closure, so the child is described by
// a StartRequest (a registered function's name, its encoded arguments, who
// the child is) that travels over a Unix socket with the descriptors of the
// primitives among the arguments (SCM_RIGHTS), and is run in the new child
// by run_start_request().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include <cereal/types/optional.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include "mpx/detail/unique_fd.hpp"
#include "process_runtime.hpp"

namespace mpx::detail {

// Largest encoded request (name, arguments, identity): what one datagram
// of a default-sized SOCK_SEQPACKET socket carries with room to spare.
inline constexpr std::size_t kMaxStartRequestSize = 160 * 1024;

struct StartRequest {
  std::uint64_t id = 0;  // forkserver: matches the reply to its request
  std::string function;
  std::string arguments;  // the encoded argument tuple
  std::string name;
  bool daemon = false;
  std::vector<int> identity;
  std::string parent_name;
  int parent_pid = 0;
  int log_level = 0;
  ProcessLimits limits;
  std::string authkey;  // the Process's authkey: the child's current_process().authkey()

  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, function, arguments, name, daemon, identity, parent_name, parent_pid, log_level, limits, authkey);
  }
};

StartRequest make_start_request(const ChildIdentity& who, const RemoteCall& call, const std::string& authkey);

// Empty when `function` is registered, else why it cannot run.
[[nodiscard]] std::string unregistered_reason(const std::string& function);

// In the new child (single-threaded): becomes the child the request
// describes (expected parent `expected_ppid`, start method `method`), decodes
// the arguments with the `passed` descriptors (closed once decoded) and runs
// the function; exits with its exit code.
[[noreturn]] void run_start_request(const StartRequest& request, pid_t expected_ppid, StartMethod method,
                                    std::vector<UniqueFd>& passed);

// The spawn start method (spawn.cpp).
std::shared_ptr<ChildState> spawn_start(const ChildIdentity& who, const RemoteCall& call, const std::string& authkey);

}  // namespace mpx::detail
