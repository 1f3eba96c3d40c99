// libFuzzer target: KPI formulas and measure filters. Parsing any text either
// succeeds or fails with a message; evaluation never yields inf or NaN.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kpi/expr.h"
#include "kpi/filter.h"
#include "kpistream/events/v1/events.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto e = kpistream::kpi::ParseExpr(text, [](std::string_view n) -> std::optional<int> {
    if (n == "a") return 0;
    if (n == "b") return 1;
    return std::nullopt;
  });
  if (e.ok()) {
    const auto v =
        kpistream::kpi::Eval(*e, [](int ref, double) -> std::optional<double> { return ref == 0 ? 0.0 : 1e308; });
    if (v && !std::isfinite(*v)) __builtin_trap();
  } else if (e.status().message().empty()) {
    __builtin_trap();
  }
  auto f = kpistream::kpi::Filter::Compile(text, kpistream::kpi::Family::kProduct);
  if (f.ok()) {
    kpistream::events::v1::ProductEvent ev;
    ev.set_plan("pro");
    ev.set_status_code(500);
    (void)f->Matches(ev);
  } else if (f.status().message().empty()) {
    __builtin_trap();
  }
  return 0;
}
