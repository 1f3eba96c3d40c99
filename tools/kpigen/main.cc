// kpigen: produces realistic campaign, product-usage and CRM events to Kafka,
// deterministic for a seed, and can write the exact KPI values they produce.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <fstream>
#include <thread>

#include "gen/generator.h"
#include "gen/kafka_sink.h"
#include "gen/scenario.h"
#include "gen/user_shapes.h"
#include "ingest/decoder.h"
#include "ingest/schema_registry.h"
#include "ingest/topic_match.h"
#include "kpi/catalog.h"

using namespace kpistream;

int main(int argc, char** argv) {
  CLI::App app{"kpigen: synthetic KPI events to Kafka, with ground truth"};
  std::string brokers, topic_prefix = "kpi.", format = "protobuf", truth_path, catalog_path, span = "1h";
  uint64_t count = 100000, seed = 1, bad_every = 0;
  int campaigns = 40;
  double rate = 0;
  int partitions = 0;
  int64_t start_time = -1;
  bool live = false;
  app.add_option("--brokers", brokers, "Kafka bootstrap servers (omit for a dry run that only writes --truth)");
  app.add_option("--topic-prefix", topic_prefix, "topics are <prefix>campaign, <prefix>product, <prefix>crm")
      ->capture_default_str();
  app.add_option("--count", count, "number of records")->capture_default_str();
  app.add_option("--rate", rate, "records per second (0 = as fast as possible)")->capture_default_str();
  app.add_option("--seed", seed, "random seed; same seed, same records")->capture_default_str();
  app.add_option("--format", format,
                 "protobuf | json | mixed (the project's schema), or flat-json | nested-json | avro (users' own "
                 "shapes: read them with kpid's kafka.sources, as printed by --print-source; avro registers its "
                 "schemas in --schema-registry and writes the Confluent wire format)")
      ->check(CLI::IsMember({"protobuf", "json", "mixed", "flat-json", "nested-json", "avro"}))
      ->capture_default_str();
  app.add_option("--start-time", start_time, "first event time, unix seconds (default: now - span)");
  app.add_option("--span", span, "event times are spread over this duration")->capture_default_str();
  app.add_flag("--live", live, "stamp events with the wall clock instead");
  app.add_option("--bad-every", bad_every,
                 "make every Nth record a hostile one (14 kinds: garbage, truncated, wrong JSON type, unknown "
                 "type, NaN/Inf/huge values, 1970/2200 timestamps, invalid UTF-8, 100k-deep JSON, missing id, "
                 "unknown enum number)");
  app.add_option("--campaigns", campaigns,
                 "distinct campaign ids events draw from (a group-by dimension of the campaign measures; raise it "
                 "for a cardinality explosion)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 30));
  app.add_option("--partitions", partitions, "create the topics with this many partitions first");
  app.add_option("--truth", truth_path, "write the expected KPI values here");
  app.add_option("--catalog", catalog_path, "KPI file for --truth (default: the built-in catalog)");
  int64_t truth_end = -1;
  std::vector<std::string> truth_windows = {"all"};
  app.add_option("--truth-end", truth_end, "--truth windows end here, unix seconds (default: start + span)");
  app.add_option("--truth-windows", truth_windows, "--truth evaluates every KPI over these windows")
      ->delimiter(',')
      ->capture_default_str();
  std::string scenario;
  double from_day = 0, to_day = 1e9;
  app.add_option("--scenario", scenario,
                 "emit a scripted story instead of random events (churn-spike: see tools/kpigen/scenario.h); "
                 "--start-time is its day 0")
      ->check(CLI::IsMember({"churn-spike"}));
  app.add_option("--from-day", from_day, "--scenario: emit events from this day of the story (inclusive)");
  app.add_option("--to-day", to_day, "--scenario: ... to this day (exclusive)");
  std::string registry_url;
  app.add_option("--schema-registry", registry_url,
                 "--format avro: the schema registry's Confluent-compatible base URL (e.g. "
                 "http://127.0.0.1:8080/apis/ccompat/v7); each family's schema is registered under <topic>-value");
  int split_topics = 1;
  app.add_option("--split-topics", split_topics,
                 "spread each family over this many topics, <prefix><family>.0 .. .N-1, record by record (with "
                 "--print-source: one source per family reading them all through a topic pattern)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  bool print_source = false;
  app.add_flag("--print-source", print_source,
               "with --format flat-json, nested-json or avro: print the kafka.sources entries that make kpid read "
               "these topics, and exit");
  CLI11_PARSE(app, argc, argv);
  if (print_source) {
    if (format != "flat-json" && format != "nested-json" && format != "avro") {
      fmt::print(stderr, "kpigen: --print-source needs --format flat-json, nested-json or avro\n");
      return 2;
    }
    const auto shape = format == "flat-json"     ? gen::UserShape::kFlat
                       : format == "nested-json" ? gen::UserShape::kNested
                                                 : gen::UserShape::kAvro;
    fmt::print("  sources:\n");
    for (const auto f : {kpi::Family::kCampaign, kpi::Family::kProduct, kpi::Family::kCrm}) {
      const std::string topic = topic_prefix + std::string(kpi::FamilyName(f));
      // A pattern reading <topic>.0 .. <topic>.N-1 (and any later ones).
      std::string pattern = ingest::ExactTopicRegex(topic);
      pattern.pop_back();  // its '$'
      pattern += "\\.[0-9]+$";
      fmt::print("{}", gen::SourceYaml(gen::SourceSpecFor(f, shape, split_topics > 1 ? pattern : topic, registry_url)));
    }
    return 0;
  }
  ingest::SilenceProtobufLogging();  // hostile records (invalid UTF-8) make protobuf log per record

  auto span_s = kpi::ParseDuration(span);
  if (!span_s.ok()) {
    fmt::print(stderr, "kpigen: --span: {}\n", std::string(span_s.status().message()));
    return 2;
  }
  absl::StatusOr<kpi::Catalog> catalog = catalog_path.empty()
                                             ? kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "config/kpis.yaml")
                                             : kpi::LoadCatalogFile(catalog_path);
  if (!catalog.ok()) {
    fmt::print(stderr, "kpigen: {}\n", std::string(catalog.status().message()));
    return 2;
  }
  const int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  gen::GenOptions opts;
  opts.seed = seed;
  opts.count = count;
  opts.span_ms = *span_s * 1000;
  opts.start_ms = (start_time >= 0 ? start_time : now_s - *span_s) * 1000;
  opts.live = live;
  opts.bad_every = bad_every;
  opts.campaigns = campaigns;
  opts.format = format == "json"          ? gen::Format::kJson
                : format == "mixed"       ? gen::Format::kMixed
                : format == "flat-json"   ? gen::Format::kFlatJson
                : format == "nested-json" ? gen::Format::kNestedJson
                : format == "avro"        ? gen::Format::kAvro
                                          : gen::Format::kProtobuf;
  if (opts.format == gen::Format::kAvro) {
    if (registry_url.empty()) {
      fmt::print(stderr, "kpigen: --format avro needs --schema-registry\n");
      return 2;
    }
    ingest::SchemaRegistryClient registry({.url = registry_url});
    for (const auto f : {kpi::Family::kCampaign, kpi::Family::kProduct, kpi::Family::kCrm}) {
      auto id = registry.Register(fmt::format("{}{}-value", topic_prefix, kpi::FamilyName(f)), gen::AvroSchemaFor(f));
      if (!id.ok()) {
        fmt::print(stderr, "kpigen: {}\n", std::string(id.status().message()));
        return 1;
      }
      opts.avro_schema_ids[static_cast<int>(f)] = *id;
    }
  }

  std::unique_ptr<gen::KafkaSink> sink;
  // topics[family][k]: the family's k-th topic (one unless --split-topics).
  std::vector<std::string> topics[3];
  std::vector<std::string> all_topics;
  for (const auto f : {kpi::Family::kCampaign, kpi::Family::kProduct, kpi::Family::kCrm}) {
    const std::string base = topic_prefix + std::string(kpi::FamilyName(f));
    for (int k = 0; k < split_topics; ++k) {
      topics[static_cast<int>(f)].push_back(split_topics > 1 ? fmt::format("{}.{}", base, k) : base);
      all_topics.push_back(topics[static_cast<int>(f)].back());
    }
  }
  uint64_t produced_count = 0;
  auto topic_for = [&](kpi::Family f) -> const std::string& {
    const auto& t = topics[static_cast<int>(f)];
    return t[produced_count++ % t.size()];
  };
  if (!brokers.empty()) {
    auto s = gen::KafkaSink::Open(brokers);
    if (!s.ok()) {
      fmt::print(stderr, "kpigen: {}\n", std::string(s.status().message()));
      return 1;
    }
    sink = std::move(*s);
    if (partitions > 0) {
      if (auto st = sink->CreateTopics(all_topics, partitions); !st.ok()) {
        fmt::print(stderr, "kpigen: {}\n", std::string(st.message()));
        return 1;
      }
    }
  }

  if (!scenario.empty()) {
    if (!sink || start_time < 0) {
      fmt::print(stderr, "kpigen: --scenario needs --brokers and --start-time\n");
      return 2;
    }
    absl::Status produced = absl::OkStatus();
    uint64_t n = 0;
    auto st = gen::EmitScenario(scenario, start_time, from_day, to_day, [&](const gen::Record& rec) {
      if (!produced.ok()) return;
      produced = sink->Produce(topic_for(rec.family), rec.key, rec.payload);
      ++n;
    });
    if (st.ok()) st = produced;
    if (st.ok()) st = sink->Flush(120000);
    if (!st.ok()) {
      fmt::print(stderr, "kpigen: {}\n", std::string(st.message()));
      return 1;
    }
    fmt::print(stderr, "kpigen: scenario {} days [{}, {}): {} records\n", scenario, from_day, to_day, n);
    return 0;
  }

  gen::Generator g(opts);
  gen::Truth truth(*catalog, truth_end >= 0 ? truth_end : opts.start_ms / 1000 + *span_s, truth_windows);
  gen::Record r;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < count; ++i) {
    g.Next(&r);
    if (!truth_path.empty()) truth.Add(r);
    if (sink) {
      if (auto st = sink->Produce(topic_for(r.family), r.key, r.payload); !st.ok()) {
        fmt::print(stderr, "kpigen: {}\n", std::string(st.message()));
        return 1;
      }
    }
    if (rate > 0) {
      const auto due = t0 + std::chrono::duration<double>(static_cast<double>(i + 1) / rate);
      std::this_thread::sleep_until(due);
    }
  }
  if (sink) {
    if (auto st = sink->Flush(120000); !st.ok()) {
      fmt::print(stderr, "kpigen: {}\n", std::string(st.message()));
      return 1;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(stderr, "kpigen: {} records in {:.2f} s ({:.0f}/s)\n", count, secs, static_cast<double>(count) / secs);
  if (!truth_path.empty()) {
    std::ofstream out(truth_path);
    out << truth.Render();
    if (!out) {
      fmt::print(stderr, "kpigen: cannot write {}\n", truth_path);
      return 1;
    }
  }
  return 0;
}
