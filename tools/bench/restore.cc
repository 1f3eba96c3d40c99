// Changelog restore rate against state size (issue 20): for each size,
// writes that many keys of one partition's state to a fresh changelog
// topic on a real broker (in transactions of 50,000 records, as commits
// would), then restores it into an empty store exactly as a new owner does
// (ingest::RestoreInto), and prints one JSON line per size:
//   {"keys":N,"bytes":B,"write_s":..,"restore_s":..,"keys_per_s":..,"mb_per_s":..}
// Keys are fine-bucket partials of a three-dimension measure (the shape of
// the default catalog's campaign measures), values encoded count/sum
// partials: bytes per key as in a real changelog.
//
//   kpistream_restore_bench --brokers HOST:PORT --keys 100000,1000000
#include <fmt/format.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "ingest/changelog.h"
#include "kpi/catalog.h"
#include "state/aggregate.h"
#include "state/keys.h"
#include "state/store.h"

using namespace kpistream;

int main(int argc, char** argv) {
  CLI::App app{"changelog restore rate against state size, on a real broker"};
  std::string brokers;
  std::vector<uint64_t> sizes;
  std::string dir = std::filesystem::temp_directory_path().string();
  app.add_option("--brokers", brokers, "bootstrap servers")->required();
  app.add_option("--keys", sizes, "state sizes in keys")->delimiter(',')->required();
  app.add_option("--dir", dir, "where the stores go")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto catalog = kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "kpis.yaml");
  if (!catalog.ok()) return fmt::print(stderr, "{}\n", catalog.status().ToString()), 1;
  for (const uint64_t keys : sizes) {
    const std::string run = fmt::format("{}/kpistream-restore-bench-{}-{}", dir, ::getpid(), keys);
    std::filesystem::remove_all(run);
    std::filesystem::create_directories(run);
    auto open = [&](const char* name) {
      state::StoreOptions o;
      o.path = run + "/" + name;
      return state::Store::Open(o);
    };
    auto writer_store = open("writer");
    auto reader_store = open("reader");
    if (!writer_store.ok() || !reader_store.ok()) return fmt::print(stderr, "cannot open stores in {}\n", run), 1;
    auto writer_ids = kpi::BindStateIds(*catalog, writer_store->get());
    auto reader_ids = kpi::BindStateIds(*catalog, reader_store->get());
    if (!writer_ids.ok() || !reader_ids.ok()) return fmt::print(stderr, "binding ids failed\n"), 1;
    ingest::EngineOptions options;
    options.brokers = brokers;
    options.group_id = fmt::format("restore-bench-{}", ::getpid());
    auto changelog = ingest::Changelog::Create(options);
    if (!changelog.ok()) return fmt::print(stderr, "{}\n", changelog.status().ToString()), 1;
    const std::string topic = ingest::ChangelogTopic(options.group_id, fmt::format("s{}", keys));
    if (auto st = (*changelog)->EnsureTopic(topic, 1); !st.ok()) return fmt::print(stderr, "{}\n", st.ToString()), 1;

    // The first campaign measure grouped by three dimensions.
    size_t measure = 0;
    while (measure < catalog->measures.size() && catalog->measures[measure].group_by.size() < 3) ++measure;
    ingest::ChangelogCodec writer(*catalog, *writer_ids, writer_store->get());
    ingest::ChangelogCodec reader(*catalog, *reader_ids, reader_store->get());
    const uint64_t source = state::SourceId(1, 0);
    std::string portable;
    uint64_t bytes = 0;
    int64_t end = 0;
    const auto w0 = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < keys;) {
      if (auto st = (*changelog)->Begin(); !st.ok()) return fmt::print(stderr, "{}\n", st.ToString()), 1;
      for (uint64_t n = 0; n < 50000 && i < keys; ++n, ++i) {
        std::string group;
        state::AppendGroupValue(&group, i % 3 == 0 ? "search" : i % 3 == 1 ? "social" : "display");
        state::AppendGroupValue(&group, fmt::format("campaign-{}", (i / 3) % 5000));
        state::AppendGroupValue(&group, fmt::format("region-{}", (i / 15000) % 20));
        const int64_t bucket = 1764460800 + static_cast<int64_t>(i / 300000) * 300;
        state::Agg a;
        a.count = static_cast<int64_t>(i % 1000) + 1;
        a.sum_micros = static_cast<int64_t>(i) * 1000;
        const std::string value = state::EncodeAgg(a);
        writer.Encode(state::Keyspace::kAgg,
                      state::AggKey(state::Tier::kFine, writer_ids->measures[measure], source, bucket, group),
                      &portable);
        bytes += portable.size() + value.size();
        if (auto st = (*changelog)->Add(topic, 0, portable, value); !st.ok()) {
          return fmt::print(stderr, "{}\n", st.ToString()), 1;
        }
      }
      rd_kafka_topic_partition_list_t* none = rd_kafka_topic_partition_list_new(0);
      // No input offsets: a bench has no consumer group to fence with.
      auto committed = (*changelog)->Commit(nullptr, none);
      rd_kafka_topic_partition_list_destroy(none);
      if (!committed.ok()) return fmt::print(stderr, "{}\n", committed.status().ToString()), 1;
      end = committed->at({topic, 0});
    }
    // The coordinator writes the commit markers after commit returns: wait
    // until the last transaction is readable (kpid waits for the same
    // through the group's stable offsets).
    for (;;) {
      auto bounds = (*changelog)->Bounds(topic, 0);
      if (!bounds.ok()) return fmt::print(stderr, "{}\n", bounds.status().ToString()), 1;
      if (bounds->second >= end) break;
      usleep(10000);
    }
    const double write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();

    const auto r0 = std::chrono::steady_clock::now();
    auto restored = ingest::RestoreInto(**changelog, reader, reader_store->get(), topic, 0, 0, state::SourceId(9, 0));
    const double restore_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count();
    if (!restored.ok()) return fmt::print(stderr, "{}\n", restored.status().ToString()), 1;
    if (restored->records != keys) {
      return fmt::print(stderr, "restored {} records of {}\n", restored->records, keys), 1;
    }
    fmt::print(
        "{{\"keys\":{},\"bytes\":{},\"write_s\":{:.3f},\"restore_s\":{:.3f},\"keys_per_s\":{:.0f},"
        "\"mb_per_s\":{:.1f}}}\n",
        keys, bytes, write_s, restore_s, keys / restore_s, bytes / restore_s / 1e6);
    std::fflush(stdout);
    changelog->reset();
    writer_store->reset();
    reader_store->reset();
    std::filesystem::remove_all(run);
  }
  return 0;
}
