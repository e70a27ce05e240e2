// Placeholder until the codec lands.
namespace mpx::detail {}
