// <mpx/mpx.hpp>: everything mpx offers, in one include.
#pragma once

#include "mpx/error.hpp"
