// <mpx/actors.hpp>: actors in worker processes (docs/actors.md).
#pragma once

#include "mpx/actors/actor.hpp"
#include "mpx/actors/actor_ref.hpp"
#include "mpx/actors/behavior.hpp"
#include "mpx/actors/context.hpp"
#include "mpx/actors/errors.hpp"
#include "mpx/actors/host.hpp"
#include "mpx/actors/mailbox_options.hpp"
#include "mpx/actors/messages.hpp"
#include "mpx/actors/monitor.hpp"
#include "mpx/actors/node.hpp"
#include "mpx/actors/registry.hpp"
#include "mpx/actors/response.hpp"
#include "mpx/actors/supervisor.hpp"
