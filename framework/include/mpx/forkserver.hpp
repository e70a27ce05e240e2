// mpx/forkserver.hpp: functions the fork server (or a spawned child) may
// run, registered by name.
//
// Under the forkserver start method the child is forked by a clean helper
// process, not by the caller, and under spawn it is a new run of the
// program, so the target cannot be a closure: it must be a plain function
// registered once at namespace scope,
//
//     void worker(int id, std::string text);
//     MPX_REGISTER_FUNCTION(worker);
//     ...
//     mpx::set_start_method(mpx::StartMethod::forkserver);   // early in main
//     mpx::Process p(worker, 7, std::string("x"));  p.start();
//
// and its arguments must be serializable (they are encoded with
// mpx::encode, as a std::tuple of the decayed parameter types, and sent to
// the server; the whole encoded request, arguments, name and identity
// included, must fit in 160 KiB, else start() throws ProcessError).
// Primitives (Queue, Pipe ends, Lock, Event, Value, SharedMemory...) may be
// arguments too: their memory or descriptor travels with the request as a
// file descriptor (SCM_RIGHTS), at most 253 per start; see
// mpx/detail/fd_passing.hpp and docs/processes.md.
// Registration happens during static
// initialisation, before main, so the server (forked later) knows every
// function. Names must be unique within a program; a duplicate is logged and
// ignored.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/unique_fd.hpp"
#include "mpx/serialization.hpp"

namespace mpx::detail {

// Decodes the arguments (with the descriptors received along, closed once
// decoded) and calls the function.
using RemoteInvoker = void (*)(std::span<const std::byte> arguments, std::vector<UniqueFd>& fds);

bool register_function(const char* name, void (*function)(), RemoteInvoker invoker);

// For tests and diagnostics: the pid of this process' fork server, 0 when
// none runs (or the last one is known to have died); and how long start()
// waits for the server's reply (30 s unless changed).
pid_t forkserver_pid();
void set_forkserver_reply_timeout(std::chrono::milliseconds timeout);

template <class T>
struct FunctionTraits;
template <class R, class... P>
struct FunctionTraits<R (*)(P...)> {
  using Arguments = std::tuple<std::decay_t<P>...>;
};

template <auto Function>
void invoke_remote(std::span<const std::byte> bytes, std::vector<UniqueFd>& fds) {
  using Arguments = typename FunctionTraits<decltype(Function)>::Arguments;
  auto arguments = [&] {
    FdReceiveScope scope(fds);  // only while decoding: the target's own decodes are messages
    return decode<Arguments>(bytes);
  }();
  std::apply([](auto&... values) { Function(values...); }, arguments);
}

}  // namespace mpx::detail

#define MPX_DETAIL_CONCAT_(a, b) a##b
#define MPX_DETAIL_CONCAT(a, b) MPX_DETAIL_CONCAT_(a, b)
#define MPX_REGISTER_FUNCTION(function)                                                \
  [[maybe_unused]] static const bool MPX_DETAIL_CONCAT(mpx_registered_function_, __LINE__) = \
      ::mpx::detail::register_function(#function, reinterpret_cast<void (*)()>(&function), \
                                       &::mpx::detail::invoke_remote<&function>)
