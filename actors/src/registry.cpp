// Actor types by name (see mpx/actors/registry.hpp).
#include "mpx/actors/registry.hpp"

#include <map>
#include <mutex>

#include "mpx/logging.hpp"

namespace mpx::actors::detail {

namespace {
struct Registry {
  std::mutex mutex;
  std::map<std::string, ActorType, std::less<>> types;
};
Registry& registry() {
  static Registry* instance = new Registry;  // used during static initialisation; never destroyed
  return *instance;
}
}  // namespace

bool register_actor_type(ActorType type) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  if (r.types.count(type.name)) {
    get_logger()->error("mpx actors: actor type '{}' is registered twice; the second registration is ignored",
                        type.name);
    return false;
  }
  std::string name = type.name;
  r.types.emplace(std::move(name), std::move(type));
  return true;
}

const ActorType* find_actor_type(std::string_view name) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  auto it = r.types.find(name);
  return it == r.types.end() ? nullptr : &it->second;
}

const ActorType& check_spawn(const std::string& type, std::uint64_t args_tag, std::string_view args_type_name) {
  const ActorType* t = find_actor_type(type);
  if (!t)
    throw UnknownActorType("mpx actors: no actor type named '" + type +
                           "' is registered (MPX_REGISTER_ACTOR / MPX_REGISTER_ACTOR_CLASS)");
  if (t->args_tag != args_tag)
    throw ActorError("mpx actors: actor type '" + type + "' takes arguments " + t->args_type_name +
                     ", the spawn passed " + (args_type_name.empty() ? "other types" : std::string(args_type_name)));
  return *t;
}

}  // namespace mpx::actors::detail
