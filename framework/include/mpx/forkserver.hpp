// mpx/forkserver.hpp: functions the fork server may run, registered by name.
//
// Under the forkserver start method the child is forked by a clean helper
// process, not by the caller, so the target cannot be a closure: it must be
// a plain function registered once at namespace scope,
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

#include "mpx/serialization.hpp"

namespace mpx::detail {

using RemoteInvoker = void (*)(std::span<const std::byte> arguments);

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
void invoke_remote(std::span<const std::byte> bytes) {
  using Arguments = typename FunctionTraits<decltype(Function)>::Arguments;
  auto arguments = decode<Arguments>(bytes);
  std::apply([](auto&... values) { Function(values...); }, arguments);
}

}  // namespace mpx::detail

#define MPX_DETAIL_CONCAT_(a, b) a##b
#define MPX_DETAIL_CONCAT(a, b) MPX_DETAIL_CONCAT_(a, b)
#define MPX_REGISTER_FUNCTION(function)                                                \
  [[maybe_unused]] static const bool MPX_DETAIL_CONCAT(mpx_registered_function_, __LINE__) = \
      ::mpx::detail::register_function(#function, reinterpret_cast<void (*)()>(&function), \
                                       &::mpx::detail::invoke_remote<&function>)
