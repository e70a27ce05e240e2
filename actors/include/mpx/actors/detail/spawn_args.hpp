// mpx/actors/detail/spawn_args.hpp: constructor arguments of a spawned actor,
// encoded as a std::tuple so that another process can build the actor.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "mpx/serialization.hpp"

namespace mpx::actors::detail {

// String literals travel as std::string; everything else as its decayed type.
template <class T>
using SpawnArg = std::conditional_t<std::is_same_v<std::decay_t<T>, const char*> || std::is_same_v<std::decay_t<T>, char*>,
                                    std::string, std::decay_t<T>>;

struct SpawnArgs {
  std::uint64_t tag;           // type_tag of the tuple
  std::string_view type_name;  // for the error message of a mismatch
  Bytes bytes;
};

template <class... Args>
SpawnArgs encode_spawn_args(const Args&... args) {
  using Tuple = std::tuple<SpawnArg<Args>...>;
  return {mpx::type_tag<Tuple>(), mpx::type_name<Tuple>(), mpx::encode(Tuple(args...))};
}

}  // namespace mpx::actors::detail
