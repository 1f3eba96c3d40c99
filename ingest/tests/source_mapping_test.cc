#include "ingest/source_mapping.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "ingest/decoder.h"
#include "kpistream/events/v1/events.pb.h"

namespace kpistream::ingest {
namespace {

using events::v1::CampaignEvent;
using events::v1::CrmEvent;
using events::v1::ProductEvent;

// The issue's own example: {"ts": 1764460800123, "cid": "c-17",
// "cost_micros": 120000, "kind": "click"} on ads.events.
SourceSpec FlatClicks() {
  SourceSpec s;
  s.topic = "ads.events";
  s.family = kpi::Family::kCampaign;
  s.event_time.field = "ts";
  s.type_field = "kind";
  s.fields["campaign_id"].field = "cid";
  s.fields["cost"].field = "cost_micros";
  s.fields["cost"].scale = 1e-6;
  s.fields["channel"].field = "meta.channel";
  s.fields["channel"].fallback = "unknown";
  s.fields["region"].constant = "emea";
  return s;
}

class SourceMappingTest : public ::testing::Test {
 protected:
  std::shared_ptr<const SourceMapping> Compile(const SourceSpec& s) {
    auto m = SourceMapping::Compile(s);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *m : nullptr;
  }
  // Decodes; on failure the error is in err_.
  bool Decode(const SourceMapping& m, std::string_view json, int64_t offset = 7, int64_t ts_ms = -1) {
    return decoder_.DecodeMapped(
        m, json, {.topic = "ads.events", .partition = 3, .offset = offset, .timestamp_ms = ts_ms}, &ev_, &err_);
  }
  Decoder decoder_;
  kpi::EventView ev_;
  DecodeError err_;
};

TEST_F(SourceMappingTest, TheIssuesFlatClickDecodes) {
  auto m = Compile(FlatClicks());
  ASSERT_TRUE(Decode(*m, R"({"ts": 1764460800123, "cid": "c-17", "cost_micros": 120000, "kind": "click"})"))
      << err_.detail;
  const auto& e = static_cast<const CampaignEvent&>(*ev_.msg);
  EXPECT_EQ(ev_.family, kpi::Family::kCampaign);
  EXPECT_EQ(ev_.type, events::v1::CAMPAIGN_CLICK);
  EXPECT_EQ(ev_.time_ms, 1764460800123);
  EXPECT_EQ(ev_.event_id, "ads.events/3/7");  // derived: topic/partition/offset
  EXPECT_EQ(e.campaign_id(), "c-17");
  EXPECT_DOUBLE_EQ(e.cost(), 0.12);
  EXPECT_EQ(e.channel(), "unknown");  // the default
  EXPECT_EQ(e.region(), "emea");      // the constant
}

TEST_F(SourceMappingTest, NestedPathsTimeFormatsAndValueMaps) {
  SourceSpec s;
  s.topic = "app.track";
  s.family = kpi::Family::kProduct;
  s.event_id_field = "messageId";
  s.event_time.field = "timestamp";  // rfc3339 by default for strings
  s.type_field = "event";
  s.type_values = {{"Feature Used", "feature_used"}, {"API Request", "PRODUCT_API_CALL"}};
  s.fields["account_id"].field = "context.groupId";
  s.fields["user_id"].field = "userId";
  s.fields["feature"].field = "properties.feature";
  s.fields["latency_ms"].field = "properties.latency.seconds";
  s.fields["latency_ms"].scale = 1000;
  s.fields["status_code"].field = "properties.status";
  auto m = Compile(s);
  ASSERT_TRUE(Decode(*m, R"({"messageId": "m-1", "timestamp": "2026-11-30T10:00:01.250+01:00", "event": "API Request",
      "userId": 42, "context": {"groupId": "acme"},
      "properties": {"latency": {"seconds": 0.125}, "status": "503"}})"))
      << err_.detail;
  const auto& e = static_cast<const ProductEvent&>(*ev_.msg);
  EXPECT_EQ(ev_.type, events::v1::PRODUCT_API_CALL);
  EXPECT_EQ(ev_.event_id, "m-1");
  EXPECT_EQ(ev_.time_ms, 1796029201250);  // 2026-11-30T09:00:01.250Z
  EXPECT_EQ(e.user_id(), "42");           // a number as text
  EXPECT_EQ(e.account_id(), "acme");
  EXPECT_DOUBLE_EQ(e.latency_ms(), 125);
  EXPECT_EQ(e.status_code(), 503);  // a numeric string
  EXPECT_EQ(e.feature(), "");       // absent, optional
  // A value the map does not name.
  EXPECT_FALSE(Decode(*m, R"({"messageId": "m-2", "timestamp": "2026-11-30T10:00:01Z", "event": "Signed Out"})"));
  EXPECT_EQ(err_.reason, RejectReason::kUnknownType);
  EXPECT_NE(err_.detail.find("'Signed Out'"), std::string::npos) << err_.detail;
}

// One pass per object (JsonPaths): a key given twice counts as its last
// value, at every depth, for a nested object too; and a step that is not an
// object leaves everything under it absent.
TEST_F(SourceMappingTest, ARepeatedKeyCountsAsItsLastValue) {
  SourceSpec s;
  s.topic = "app.track";
  s.family = kpi::Family::kProduct;
  s.event_id_field = "messageId";
  s.event_time.field = "timestamp";
  s.type_constant = "feature_used";
  s.fields["account_id"].field = "context.groupId";
  s.fields["feature"].field = "properties.feature";
  s.fields["plan"].field = "context.plan.name";
  auto m = Compile(s);
  ASSERT_TRUE(Decode(*m, R"({"messageId": "m-1", "timestamp": "2026-11-30T10:00:01Z", "messageId": "m-2",
      "context": {"groupId": "first", "plan": {"name": "pro"}}, "context": {"groupId": "last"},
      "properties": {"feature": "a", "feature": "b"}})"))
      << err_.detail;
  const auto& e = static_cast<const ProductEvent&>(*ev_.msg);
  EXPECT_EQ(ev_.event_id, "m-2");
  EXPECT_EQ(e.account_id(), "last");
  EXPECT_EQ(e.plan(), "");  // the last context has no plan
  EXPECT_EQ(e.feature(), "b");
  ASSERT_TRUE(Decode(*m, R"({"messageId": "m-3", "timestamp": "2026-11-30T10:00:01Z", "context": "flat",
      "properties": [1, 2]})"))
      << err_.detail;
  EXPECT_EQ(static_cast<const ProductEvent&>(*ev_.msg).account_id(), "");
}

TEST_F(SourceMappingTest, TimeUnitsCustomFormatsAndTheRecordTimestamp) {
  SourceSpec s = FlatClicks();
  for (const auto& [unit, value] :
       std::vector<std::pair<std::string, std::string>>{{"s", "1764460800.123"},
                                                        {"ms", "1764460800123"},
                                                        {"us", "1764460800123000"},
                                                        {"ns", "\"1764460800123000000\""}}) {
    s.event_time.unit = unit;
    auto m = Compile(s);
    ASSERT_TRUE(Decode(*m, R"({"kind": "click", "ts": )" + value + "}")) << unit << ": " << err_.detail;
    EXPECT_EQ(ev_.time_ms, 1764460800123) << unit;
  }
  s.event_time = {.field = "when", .format = "%Y-%m-%d %H:%M:%S"};
  auto custom = Compile(s);
  ASSERT_TRUE(Decode(*custom, R"({"kind": "click", "when": "2025-11-30 00:00:00"})")) << err_.detail;
  EXPECT_EQ(ev_.time_ms, 1764460800000);
  EXPECT_FALSE(Decode(*custom, R"({"kind": "click", "when": "30/11/2025"})"));
  EXPECT_EQ(err_.reason, RejectReason::kBadTimestamp);
  EXPECT_NE(err_.detail.find("'when'"), std::string::npos) << err_.detail;
  s.event_time = {.record_timestamp = true};
  auto record = Compile(s);
  ASSERT_TRUE(Decode(*record, R"({"kind": "click"})", 7, 1764460800999)) << err_.detail;
  EXPECT_EQ(ev_.time_ms, 1764460800999);
  EXPECT_FALSE(Decode(*record, R"({"kind": "click"})", 7, -1));
  EXPECT_EQ(err_.reason, RejectReason::kMissingField);
}

TEST_F(SourceMappingTest, ARecordThatBreaksItsMappingIsRejectedNamingTheField) {
  SourceSpec s = FlatClicks();
  s.fields["campaign_id"].required = true;
  auto m = Compile(s);
  struct Case {
    const char* json;
    RejectReason reason;
    const char* names;
  };
  for (const auto& c : std::vector<Case>{
           {R"({"ts": 1764460800123, "kind": "click"})", RejectReason::kMissingField, "'cid'"},
           {R"({"ts": 1764460800123, "kind": "click", "cid": "c", "cost_micros": "lots"})", RejectReason::kBadValue,
            "'cost_micros'"},
           {R"({"ts": 1764460800123, "kind": "click", "cid": {"id": 1}})", RejectReason::kBadValue, "'cid'"},
           {R"({"ts": "yesterday", "kind": "click", "cid": "c"})", RejectReason::kBadTimestamp, "'ts'"},
           {R"({"kind": "click", "cid": "c"})", RejectReason::kMissingField, "'ts'"},
           {R"({"ts": 1764460800123, "cid": "c"})", RejectReason::kUnknownType, "'kind'"},
           {R"({"ts": 1764460800123, "kind": "click", "cid": "c", "cost_micros": 1e300})", RejectReason::kBadValue,
            "cost"},
           {R"({"ts": 17644608, "kind": "click", "cid": "c"})", RejectReason::kBadTimestamp, "event_time"},
           {R"({"ts": 1764460800123, "kind": "click", "cid": "c")", RejectReason::kBadJson, "JSON"},
           {R"([1, 2])", RejectReason::kBadJson, "array"},
           {"", RejectReason::kEmpty, "payload"},
       }) {
    EXPECT_FALSE(Decode(*m, c.json)) << c.json;
    EXPECT_EQ(err_.reason, c.reason) << c.json << ": " << err_.detail;
    EXPECT_NE(err_.detail.find(c.names), std::string::npos) << c.json << ": " << err_.detail;
  }
  // Deeper than any event: refused by the parser's depth bound.
  std::string deep = R"({"ts": 1764460800123, "kind": "click", "x": )";
  for (int i = 0; i < 100; ++i) deep += "[";
  for (int i = 0; i < 100; ++i) deep += "]";
  deep += "}";
  EXPECT_FALSE(Decode(*m, deep));
  EXPECT_EQ(err_.reason, RejectReason::kBadJson);
}

TEST_F(SourceMappingTest, TimeTargetsAndInt32Ranges) {
  SourceSpec s;
  s.topic = "crm.deals";
  s.family = kpi::Family::kCrm;
  s.event_id_field = "id";
  s.event_time = {.field = "closed_at", .unit = "s"};
  s.type_constant = "opportunity_won";
  s.fields["origin_time"].time = {.field = "created_at", .unit = "s"};
  s.fields["origin_time"].field = "created_at";
  s.fields["amount"].field = "amount";
  s.fields["cohort_month"].field = "month";
  auto m = Compile(s);
  ASSERT_TRUE(Decode(*m, R"({"id": 9, "closed_at": 1764460800, "created_at": 1761868800, "amount": 5000, "month": 3})"))
      << err_.detail;
  const auto& e = static_cast<const CrmEvent&>(*ev_.msg);
  EXPECT_EQ(ev_.type, events::v1::CRM_OPPORTUNITY_WON);
  EXPECT_EQ(e.origin_time().seconds(), 1761868800);
  EXPECT_EQ(e.cohort_month(), 3);
  EXPECT_FALSE(Decode(*m, R"({"id": 9, "closed_at": 1764460800, "month": 3.5})"));
  EXPECT_EQ(err_.reason, RejectReason::kBadValue);
  EXPECT_FALSE(Decode(*m, R"({"id": 9, "closed_at": 1764460800, "month": 1e12})"));
  EXPECT_EQ(err_.reason, RejectReason::kBadValue);
}

// Found in review: each of these once read wrong, overflowed or refused a
// valid mapping.
TEST_F(SourceMappingTest, TimeEdges) {
  SourceSpec s = FlatClicks();
  // A format of all digits is the format's, not a number of `unit`
  // (absl's %Y takes every digit it sees: %E4Y takes four).
  s.event_time = {.field = "when", .format = "%E4Y%m%d%H%M%S"};
  auto digits = Compile(s);
  ASSERT_TRUE(Decode(*digits, R"({"kind": "click", "when": "20251130000001"})")) << err_.detail;
  EXPECT_EQ(ev_.time_ms, 1764460801000);
  // absl reads "infinite-future" as a time: out of range, never overflowed.
  s.event_time = {.field = "ts"};
  auto rfc = Compile(s);
  for (const char* v : {"infinite-future", "infinite-past", "missing"}) {
    EXPECT_FALSE(Decode(*rfc, fmt::format(R"({{"kind": "click", "ts": "{}"}})", v))) << v;
    EXPECT_EQ(err_.reason, RejectReason::kBadTimestamp) << v << ": " << err_.detail;  // "missing" is a bad value
  }
  // A record timestamp beyond any millisecond arithmetic.
  s.event_time = {.record_timestamp = true};
  auto record = Compile(s);
  EXPECT_FALSE(Decode(*record, R"({"kind": "click"})", 7, INT64_MAX));
  EXPECT_EQ(err_.reason, RejectReason::kBadTimestamp);
  // A time target from the record timestamp compiles and reads it.
  SourceSpec crm;
  crm.topic = "crm";
  crm.family = kpi::Family::kCrm;
  crm.event_time = {.field = "at", .unit = "s"};
  crm.type_constant = "trial_converted";
  crm.fields["origin_time"].time = {.record_timestamp = true};
  auto origin = Compile(crm);
  ASSERT_NE(origin, nullptr);
  ASSERT_TRUE(Decode(*origin, R"({"at": 1764460900})", 7, 1764460800000)) << err_.detail;
  EXPECT_EQ(static_cast<const CrmEvent&>(*ev_.msg).origin_time().seconds(), 1764460800);
  // origin_time "infinite-future" from a field: refused, named.
  crm.fields["origin_time"].time = {.field = "started"};
  auto started = Compile(crm);
  EXPECT_FALSE(Decode(*started, R"({"at": 1764460900, "started": "infinite-future"})"));
  EXPECT_EQ(err_.reason, RejectReason::kBadTimestamp);
  EXPECT_NE(err_.detail.find("origin_time"), std::string::npos) << err_.detail;
}

TEST_F(SourceMappingTest, NumbersPastSixtyFourBitsDoNotLoseTheRecord) {
  auto m = Compile(FlatClicks());
  ASSERT_TRUE(Decode(*m, R"({"ts": 1764460800123, "cid": "c-17", "cost_micros": 120000, "kind": "click",
                              "trace": 123456789012345678901234567890})"))
      << err_.detail;
  EXPECT_EQ(static_cast<const CampaignEvent&>(*ev_.msg).campaign_id(), "c-17");
  ASSERT_TRUE(Decode(*m, R"({"ts": 1764460800123, "cid": 123456789012345678901234567890, "kind": "click"})"))
      << err_.detail;
  EXPECT_FALSE(Decode(
      *m, R"({"ts": 1764460800123, "cid": "c", "kind": "click", "x": 1e, "y": 123456789012345678901234567890})"));
  EXPECT_EQ(err_.reason, RejectReason::kBadJson);
}

TEST(SourceMappingCompileTest, WhatCannotBeMappedIsSaid) {
  SourceSpec s = FlatClicks();
  s.fields["cpc"].field = "x";
  auto m = SourceMapping::Compile(s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("campaign events have no field 'cpc'"), std::string::npos) << m.status();
  s = FlatClicks();
  s.format = "csv";
  EXPECT_NE(SourceMapping::Compile(s).status().message().find("unknown format 'csv' (supported: json, avro, protobuf)"),
            std::string::npos);
  s = FlatClicks();
  s.type_values = {{"clk", "tap"}};
  EXPECT_NE(SourceMapping::Compile(s).status().message().find("'tap' is not a campaign event type"), std::string::npos);
  s = FlatClicks();
  s.event_time.unit = "minutes";
  EXPECT_FALSE(SourceMapping::Compile(s).ok());
  // Numeric constants and defaults are checked once, not per record.
  s = FlatClicks();
  s.fields["revenue"].constant = "12,5";
  EXPECT_NE(SourceMapping::Compile(s).status().message().find("'12,5' is not a number"), std::string::npos);
  SourceSpec p;
  p.topic = "p";
  p.family = kpi::Family::kProduct;
  p.event_time.field = "ts";
  p.type_constant = "api_call";
  p.fields["status_code"] = {.field = "s", .fallback = "n/a"};
  EXPECT_FALSE(SourceMapping::Compile(p).ok());
  p.fields["status_code"] = {.field = "s", .fallback = "2.5"};
  EXPECT_NE(SourceMapping::Compile(p).status().message().find("whole number"), std::string::npos);
  EXPECT_EQ(*ResolveTypeName(kpi::Family::kCrm, "TRIAL_STARTED"), events::v1::CRM_TRIAL_STARTED);
  EXPECT_EQ(*ResolveTypeName(kpi::Family::kCrm, "crm_trial_started"), events::v1::CRM_TRIAL_STARTED);
}

}  // namespace
}  // namespace kpistream::ingest
