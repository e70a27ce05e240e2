// The registries of update functions and custom types (mpx/manager_registry.hpp).
#include <map>
#include <mutex>

#include "mpx/manager_registry.hpp"

namespace mpx::detail::manager {

namespace {
struct Registry {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<const UpdateFn>> updates;
  std::map<std::string, std::shared_ptr<const TypeEntry>> types;
};
Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: static registrations may outlive main
  return *r;
}
}  // namespace

void register_update(const std::string& name, UpdateFn fn) {
  auto& r = registry();
  std::lock_guard g(r.mutex);
  r.updates[name] = std::make_shared<const UpdateFn>(std::move(fn));
}

std::shared_ptr<const UpdateFn> find_update(const std::string& name) {
  auto& r = registry();
  std::lock_guard g(r.mutex);
  auto it = r.updates.find(name);
  return it == r.updates.end() ? nullptr : it->second;
}

void edit_type(const std::string& name, const std::function<void(TypeEntry&)>& edit) {
  auto& r = registry();
  std::lock_guard g(r.mutex);
  auto& slot = r.types[name];
  auto copy = slot ? std::make_shared<TypeEntry>(*slot) : std::make_shared<TypeEntry>();
  edit(*copy);
  slot = std::move(copy);
}

std::shared_ptr<const TypeEntry> find_type(const std::string& name) {
  auto& r = registry();
  std::lock_guard g(r.mutex);
  auto it = r.types.find(name);
  return it == r.types.end() ? nullptr : it->second;
}

}  // namespace mpx::detail::manager
