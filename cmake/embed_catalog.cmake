# Writes OUT, a C++ file defining DefaultCatalogYaml() with the text of IN.
file(READ ${IN} TEXT)
file(WRITE ${OUT} "// Generated from config/kpis.yaml. Do not edit.\n#include \"kpi/catalog.h\"\nnamespace kpistream::kpi {\nstd::string_view DefaultCatalogYaml() {\n  static constexpr char kText[] = R\"KPIYAML(${TEXT})KPIYAML\";\n  return std::string_view(kText, sizeof(kText) - 1);\n}\n}  // namespace kpistream::kpi\n")
