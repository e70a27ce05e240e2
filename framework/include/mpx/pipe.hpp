// mpx/pipe.hpp: Pipe(), as multiprocessing.Pipe.
//
//     auto [parent_end, child_end] = mpx::Pipe();        // duplex: both ends send and recv
//     auto [r, w] = mpx::Pipe(false);                    // r receives only, w sends only
//     auto [a, b] = mpx::Pipe<std::string>();            // typed ends: a.send("x"), b.recv()
//
// Contract: see mpx/connection.hpp. Both ends are made in the calling
// process; fork to share them. Throws mpx::OSError if the sockets or the
// small shared page that holds the per-end locks cannot be made.
#pragma once

#include <utility>

#include "mpx/connection.hpp"

namespace mpx {

[[nodiscard]] inline std::pair<Connection, Connection> Pipe(bool duplex = true) { return make_pipe(duplex); }

template <class T>
[[nodiscard]] std::pair<TypedConnection<T>, TypedConnection<T>> Pipe(bool duplex = true) {
  auto [a, b] = make_pipe(duplex);
  return {TypedConnection<T>(std::move(a)), TypedConnection<T>(std::move(b))};
}

}  // namespace mpx
