// mpx/actors/registry.hpp: actor types registered by name, so that any
// process of the tree can spawn them.
//
//     mpx::actors::Behavior adder(mpx::actors::Context& self);          // function-based
//     MPX_REGISTER_ACTOR(adder);                                         // type name "adder"
//     mpx::actors::Behavior scaler(mpx::actors::Context& self, int k);  // with constructor arguments
//     MPX_REGISTER_ACTOR(scaler);
//     MPX_REGISTER_ACTOR_CLASS(Counter, int);                            // class-based (actor.hpp)
//
// Contract
// - Register at namespace scope: registration runs during static
//   initialisation, before main, so every process of the program (forked or
//   started by the fork server) knows every type. A duplicate name is logged
//   and ignored.
// - Constructor arguments must be serializable; spawn passes them encoded
//   and checks their types against the registration at the caller: a
//   mismatch is an ActorError there, at once (string literals count as
//   std::string). An unknown type name is UnknownActorType, at once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "mpx/actors/actor.hpp"
#include "mpx/actors/behavior.hpp"
#include "mpx/actors/context.hpp"
#include "mpx/forkserver.hpp"
#include "mpx/serialization.hpp"

namespace mpx::actors::detail {

// What a factory builds: the behaviour, and the object it may belong to.
struct Instance {
  Behavior behavior;
  std::shared_ptr<void> object;
};

struct ActorType {
  std::string name;
  std::uint64_t args_tag;
  std::string args_type_name;
  Instance (*make)(Context&, std::span<const std::byte> args);
};

bool register_actor_type(ActorType type);
// nullptr when not registered.
const ActorType* find_actor_type(std::string_view name);
// Throws UnknownActorType / ActorError (argument types) for a bad spawn.
const ActorType& check_spawn(const std::string& type, std::uint64_t args_tag, std::string_view args_type_name);

template <class F>
struct FactoryTraits;
template <class... P>
struct FactoryTraits<Behavior (*)(Context&, P...)> {
  using Arguments = std::tuple<std::decay_t<P>...>;
};

template <auto Function>
Instance make_function_actor(Context& self, std::span<const std::byte> args) {
  using Arguments = typename FactoryTraits<decltype(Function)>::Arguments;
  auto values = mpx::decode<Arguments>(args);
  return Instance{std::apply([&](auto&... a) { return Function(self, a...); }, values), nullptr};
}

template <class C, class... P>
Instance make_class_actor(Context& self, std::span<const std::byte> args) {
  auto values = mpx::decode<std::tuple<P...>>(args);
  auto object = std::apply([&](auto&... a) { return std::make_shared<C>(self, a...); }, values);
  Behavior behavior = object->behavior();
  return Instance{std::move(behavior), std::move(object)};
}

template <auto Function>
bool register_actor_function(const char* name) {
  using Arguments = typename FactoryTraits<decltype(Function)>::Arguments;
  return register_actor_type(ActorType{name, mpx::type_tag<Arguments>(), std::string(mpx::type_name<Arguments>()),
                                       &make_function_actor<Function>});
}

template <class C, class... P>
bool register_actor_class(const char* name) {
  static_assert(std::is_base_of_v<Actor, C>, "MPX_REGISTER_ACTOR_CLASS: the class must derive from mpx::actors::Actor");
  using Arguments = std::tuple<std::decay_t<P>...>;
  return register_actor_type(ActorType{name, mpx::type_tag<Arguments>(), std::string(mpx::type_name<Arguments>()),
                                       &make_class_actor<C, std::decay_t<P>...>});
}

}  // namespace mpx::actors::detail

#define MPX_REGISTER_ACTOR(function)                                                           \
  [[maybe_unused]] static const bool MPX_DETAIL_CONCAT(mpx_registered_actor_, __LINE__) = \
      ::mpx::actors::detail::register_actor_function<&function>(#function)

#define MPX_REGISTER_ACTOR_CLASS(Class, ...)                                                         \
  [[maybe_unused]] static const bool MPX_DETAIL_CONCAT(mpx_registered_actor_class_, __LINE__) = \
      ::mpx::actors::detail::register_actor_class<Class __VA_OPT__(, ) __VA_ARGS__>(#Class)
