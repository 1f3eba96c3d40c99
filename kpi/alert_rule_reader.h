// Reads one alert rule of the KPI file's `alerts:` section (the syntax is
// in docs/ALERTS.md) into the catalog, recording every error in the reader.
// Internal to the catalog reader.
//
// Thread-safety: not thread-safe (writes *cat and the reader).
#pragma once

#include "kpi/catalog.h"
#include "kpi/yaml_reader.h"

namespace kpistream::kpi {

// REQUIRES: cat's KPIs are read (rules refer to them by name).
void ReadAlertRule(YamlReader* y, const YAML::Node& key_node, const YAML::Node& def, Catalog* cat);

}  // namespace kpistream::kpi
