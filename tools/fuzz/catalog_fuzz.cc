// libFuzzer target: the KPI-file parser (YAML, measures, filters, formulas,
// windows, targets) must return a catalog or an error with a location, and
// never crash on any text.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kpi/catalog.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto cat = kpistream::kpi::ParseCatalog(text, "fuzz.yaml");
  if (!cat.ok() && cat.status().message().empty()) __builtin_trap();
  if (cat.ok()) {
    for (const auto& k : cat->kpis) {
      if (k.windows.empty()) __builtin_trap();
    }
  }
  return 0;
}
