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
// the server; at most 128 KiB). Registration happens during static
// initialisation, before main, so the server (forked later) knows every
// function. Names must be unique within a program; a duplicate is logged and
// ignored.
#pragma once

#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "mpx/serialization.hpp"

namespace mpx::detail {

using RemoteInvoker = void (*)(std::span<const std::byte> arguments);

bool register_function(const char* name, void (*function)(), RemoteInvoker invoker);

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
