// kpid's version (the CMake project version, VERSION) and the git revision
// it was built from ("-dirty" when built with uncommitted changes).
//
// Thread-safety: constants.
#pragma once

#include <string>
#include <string_view>

namespace kpistream::services {

std::string_view Version();
std::string_view Revision();
// "0.2.0 (revision 1a2b3c4d5e6f)".
std::string VersionString();

}  // namespace kpistream::services
