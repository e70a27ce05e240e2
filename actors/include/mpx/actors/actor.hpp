// mpx/actors/actor.hpp: the base of class-based actors, which keep state in
// members.
//
//     class Counter : public mpx::actors::Actor {
//      public:
//       Counter(mpx::actors::Context& self, int start) : Actor(self), n_(start) {}
//       mpx::actors::Behavior behavior() override {
//         return { [this](const Inc&) { return ++n_; } };
//       }
//      private:
//       int n_;
//     };
//     MPX_REGISTER_ACTOR_CLASS(Counter, int);   // the constructor's argument types after Context&
//
// The object is built in the host process when the actor is spawned and
// destroyed when it stops; behavior() is called once, right after the
// constructor. Handlers run one at a time, so members need no locking.
#pragma once

#include "mpx/actors/behavior.hpp"
#include "mpx/actors/context.hpp"

namespace mpx::actors {

class Actor {
 public:
  explicit Actor(Context& self) : self_(self) {}
  Actor(const Actor&) = delete;
  Actor& operator=(const Actor&) = delete;
  virtual ~Actor() = default;
  virtual Behavior behavior() = 0;

 protected:
  [[nodiscard]] Context& self() const { return self_; }

 private:
  Context& self_;
};

}  // namespace mpx::actors
