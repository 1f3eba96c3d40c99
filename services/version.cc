#include "services/version.h"

#include <fmt/format.h>

namespace kpistream::services {

std::string VersionString() { return fmt::format("{} (revision {})", Version(), Revision()); }

}  // namespace kpistream::services
