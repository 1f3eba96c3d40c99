#include "gen/generator.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "ingest/decoder.h"
#include "kpistream/events/v1/events.pb.h"

namespace kpistream::gen {
namespace {

GenOptions Opts() {
  GenOptions o;
  o.seed = 42;
  o.count = 20000;
  o.start_ms = 1763856000000;
  o.format = Format::kMixed;
  o.bad_every = 7;
  return o;
}

TEST(GeneratorTest, SameSeedSameRecords) {
  Generator a(Opts()), b(Opts());
  Record ra, rb;
  for (int i = 0; i < 2000; ++i) {
    a.Next(&ra);
    b.Next(&rb);
    ASSERT_EQ(ra.payload, rb.payload);
    ASSERT_EQ(ra.key, rb.key);
  }
  auto o = Opts();
  o.seed = 43;
  Generator c(o);
  c.Next(&rb);
  Generator d(Opts());
  d.Next(&ra);
  EXPECT_NE(ra.payload, rb.payload);
}

TEST(GeneratorTest, DecoderAgreesWithEveryRecord) {
  ingest::SilenceProtobufLogging();
  Generator g(Opts());
  ingest::Decoder dec;
  Record r;
  std::string previous_good;
  int bad = 0, families[3] = {0, 0, 0};
  for (int i = 0; i < 20000; ++i) {
    g.Next(&r);
    kpi::EventView ev;
    ingest::DecodeError err;
    const bool ok = dec.Decode(r.family, r.payload, ingest::PayloadFormat::kAuto, &ev, &err);
    if (r.bad && r.bad_kind == BadKind::kDuplicate) {
      // A valid event: the engine, not the decoder, knows it was applied.
      ++bad;
      ASSERT_TRUE(ok) << err.detail;
      ASSERT_EQ(r.payload, previous_good);
      continue;
    }
    if (!r.bad) previous_good = r.payload;
    if (r.bad) {
      ++bad;
      ASSERT_FALSE(ok) << "bad record kind " << static_cast<int>(r.bad_kind) << " decoded";
      ASSERT_EQ(err.reason, ExpectedReason(r.bad_kind)) << err.detail;
    } else {
      ASSERT_TRUE(ok) << err.detail;
      ASSERT_EQ(ev.time_ms, r.time_ms);
      ASSERT_EQ(ev.type, r.type);
      ++families[static_cast<int>(r.family)];
    }
  }
  EXPECT_EQ(bad, 20000 / 7);
  for (int f : families) EXPECT_GT(f, 2000);
}

TEST(GeneratorTest, TruthCountsEveryRecord) {
  auto cat = kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "kpis.yaml");
  ASSERT_TRUE(cat.ok());
  Truth t(*cat, 1763856000 + 3600, {"all", "10m"});
  Generator g(Opts());
  Record r;
  for (int i = 0; i < 700; ++i) {
    g.Next(&r);
    t.Add(r);
  }
  const auto text = t.Render();
  EXPECT_NE(text.find("records 700\ngood 600\n"), std::string::npos) << text;
  // 100 bad records cycle through the 15 kinds (the first ten get 7).
  for (const char* want : {"rejected not_decodable 21\n", "rejected bad_json 19\n", "rejected bad_value 21\n",
                           "rejected bad_timestamp 14\n", "rejected unknown_type 13\n", "rejected missing_field 6\n",
                           "rejected duplicate 6\n"}) {
    EXPECT_NE(text.find(want), std::string::npos) << want << text;
  }
  EXPECT_NE(text.find("kpi ctr all "), std::string::npos);
  EXPECT_NE(text.find("kpi ctr 10m "), std::string::npos);
  EXPECT_NE(text.find(" exact\n"), std::string::npos);
}

// The CRM journeys: every conversion concludes an earlier start at most
// once, and the truth's trial_to_paid is the cohort rate computed here from
// the records alone.
TEST(GeneratorTest, TrialToPaidIsTheCohortRateOfTheTrialsStartedInTheWindow) {
  auto cat = kpi::ParseCatalog(kpi::DefaultCatalogYaml(), "kpis.yaml");
  ASSERT_TRUE(cat.ok());
  GenOptions o = Opts();
  o.bad_every = 0;
  o.count = 60000;
  o.span_ms = 6 * 3600 * 1000;
  const int64_t end_s = o.start_ms / 1000 + 6 * 3600;
  Truth truth(*cat, end_s, {"1h"});
  Generator g(o);
  Record r;
  int64_t started = 0, converted = 0;
  std::map<int64_t, int> open;  // trials started and not yet converted, by start time
  for (uint64_t i = 0; i < o.count; ++i) {
    g.Next(&r);
    truth.Add(r);
    if (r.family != kpi::Family::kCrm) continue;
    const auto& e = static_cast<const events::v1::CrmEvent&>(*r.event);
    const int64_t t = e.event_time().seconds();
    if (e.type() == events::v1::CRM_TRIAL_STARTED) {
      ++open[t * 1000 + e.event_time().nanos() / 1000000];
      started += t >= end_s - 3600;
    }
    if (e.type() == events::v1::CRM_TRIAL_CONVERTED) {
      ASSERT_TRUE(e.has_origin_time());
      const int64_t origin = e.origin_time().seconds() * 1000 + e.origin_time().nanos() / 1000000;
      ASSERT_LE(origin, r.time_ms);
      if (origin != r.time_ms) {
        // A conversion concludes a trial that started, at most once.
        ASSERT_GT(open[origin]--, 0) << "a conversion of a trial that never started, or converted twice";
      }
      converted += origin / 1000 >= end_s - 3600 && origin / 1000 < end_s;
    }
  }
  ASSERT_GT(started, 50);
  const auto text = truth.Render();
  const auto at = text.find("kpi trial_to_paid 1h ");
  ASSERT_NE(at, std::string::npos);
  const double value = std::stod(text.substr(at + std::strlen("kpi trial_to_paid 1h ")));
  EXPECT_DOUBLE_EQ(value, static_cast<double>(converted) / static_cast<double>(started) * 100);
  EXPECT_LT(value, 100);
}

}  // namespace
}  // namespace kpistream::gen
