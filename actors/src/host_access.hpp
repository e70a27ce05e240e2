// What a supervisor does to its host children beyond Host's public API
// (host.cpp defines it; Host befriends it).
#pragma once

#include "mpx/actors/host.hpp"

namespace mpx::actors::detail {

struct HostAccess {
  // Host::restart() without forking the next standby (HostOptions::standby):
  // the caller does that later with refresh_standby, so the fork (which
  // stalls this process for milliseconds) is off the path of the restarted
  // host's first messages.
  static void restart_standby_later(Host& host);
  // Forks the host's standby if its options want one and none is waiting.
  static void refresh_standby(Host& host);
};

}  // namespace mpx::actors::detail
