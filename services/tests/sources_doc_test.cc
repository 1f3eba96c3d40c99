// docs/SOURCES.md stays true: each worked mapping there is a valid source
// in kpid.yaml, and the sample record shown above it decodes through it
// (an Avro source: the schema shown above it fills every mapped path, with
// types that convert).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "ingest/avro_layout.h"
#include "ingest/decoder.h"
#include "services/config.h"

namespace kpistream::services {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(SourcesDocTest, EveryWorkedMappingLoadsAndDecodesItsSample) {
  const std::string doc = Slurp(std::string(KPISTREAM_SOURCE_DIR) + "/docs/SOURCES.md");
  ASSERT_FALSE(doc.empty());
  // Each worked example: a ```json block (the record), then a ```yaml
  // block that is one list entry under kafka.sources.
  int checked = 0;
  for (size_t at = doc.find("```json\n"); at != std::string::npos; at = doc.find("```json\n", at)) {
    const size_t record_start = at + 8, record_end = doc.find("```", record_start);
    ASSERT_NE(record_end, std::string::npos);
    at = record_end + 3;
    const size_t yaml = doc.find_first_not_of(" \n", at);
    if (doc.compare(yaml, 8, "```yaml\n") != 0 || doc.compare(yaml + 8, 12, "    - topic:") != 0) continue;
    const size_t source_end = doc.find("```", yaml + 8);
    const std::string record = doc.substr(record_start, record_end - record_start);
    const std::string source = doc.substr(yaml + 8, source_end - yaml - 8);
    const std::string path = ::testing::TempDir() + "/sources-doc.yaml";
    std::ofstream(path) << "kafka:\n  brokers: localhost:9092\n  sources:\n" << source;
    auto config = LoadKpidConfig(path);
    ASSERT_TRUE(config.ok()) << config.status() << "\n" << source;
    ASSERT_EQ(config->engine.topics.size(), 1u);
    const auto& mapping = *config->engine.topics[0].mapping;
    if (mapping.spec().format == "avro") {
      auto layout = ingest::AvroLayout::Compile(mapping, record, /*strict=*/true);
      EXPECT_TRUE(layout.ok()) << layout.status() << "\n" << source;
      ++checked;
      continue;
    }
    ingest::Decoder decoder;
    kpi::EventView ev;
    ingest::DecodeError err;
    EXPECT_TRUE(decoder.DecodeMapped(mapping, record, {.topic = mapping.spec().topic, .offset = 1}, &ev, &err))
        << err.detail << "\n"
        << record;
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

}  // namespace
}  // namespace kpistream::services
