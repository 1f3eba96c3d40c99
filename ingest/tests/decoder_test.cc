#include "ingest/decoder.h"

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "kpistream/events/v1/events.pb.h"

namespace kpistream::ingest {
namespace {

using events::v1::CampaignEvent;

CampaignEvent Click() {
  CampaignEvent e;
  e.set_event_id("e1");
  e.mutable_event_time()->set_seconds(1763881200);
  e.mutable_event_time()->set_nanos(5000000);
  e.set_type(events::v1::CAMPAIGN_CLICK);
  e.set_channel("search");
  return e;
}

class DecoderTest : public ::testing::Test {
 protected:
  void SetUp() override { SilenceProtobufLogging(); }
  bool Decode(std::string_view payload, PayloadFormat f = PayloadFormat::kAuto) {
    return dec_.Decode(kpi::Family::kCampaign, payload, f, &ev_, &err_);
  }
  Decoder dec_;
  kpi::EventView ev_;
  DecodeError err_;
};

TEST_F(DecoderTest, ProtobufRoundTrip) {
  ASSERT_TRUE(Decode(Click().SerializeAsString())) << err_.detail;
  EXPECT_EQ(ev_.type, events::v1::CAMPAIGN_CLICK);
  EXPECT_EQ(ev_.time_ms, 1763881200005);
  EXPECT_EQ(ev_.family, kpi::Family::kCampaign);
}

TEST_F(DecoderTest, JsonUsesProto3Mapping) {
  ASSERT_TRUE(Decode(R"({"eventId":"e1","eventTime":"2025-11-23T07:00:00Z","type":"CAMPAIGN_CLICK",
                         "channel":"search","futureField":1})"))
      << err_.detail;
  EXPECT_EQ(ev_.type, events::v1::CAMPAIGN_CLICK);
  EXPECT_EQ(ev_.time_ms, 1763881200000);
}

// Read as protobuf's JSON parser reads them (tools/fuzz/decoder_fuzz checks
// the two against each other).
TEST_F(DecoderTest, JsonFollowsProtobufsParser) {
  const std::string head = R"({"eventId":"e1","eventTime":"2025-11-23T07:00:00Z",)";
  ASSERT_TRUE(Decode(head + R"("type":"2","cost":"0x10"})")) << err_.detail;  // an enum number as a string; strtod
  EXPECT_EQ(ev_.type, events::v1::CAMPAIGN_CLICK);
  EXPECT_DOUBLE_EQ(static_cast<const events::v1::CampaignEvent&>(*ev_.msg).cost(), 16);
  ASSERT_TRUE(Decode(head + R"("type":2.0,"channel":"a","channel":"b"})")) << err_.detail;  // the last key counts
  EXPECT_EQ(static_cast<const events::v1::CampaignEvent&>(*ev_.msg).channel(), "b");
  EXPECT_FALSE(Decode(head + R"("type":"CAMPAIGN_CLICK","cost":" 5"})"));
  EXPECT_EQ(err_.reason, RejectReason::kBadJson);
  // RFC 8259 numbers past 64 bits (simdjson cannot hold them) in a field a
  // newer producer added: the event is read, not dead-lettered.
  ASSERT_TRUE(Decode(head + R"("type":"CAMPAIGN_CLICK","newField":100000000000000000000000})")) << err_.detail;
  // ... and in a known field it is a value out of range.
  EXPECT_FALSE(Decode(head + R"("type":"CAMPAIGN_CLICK","cost":100000000000000000000000})"));
  EXPECT_EQ(err_.reason, RejectReason::kBadValue);
}

TEST_F(DecoderTest, GarbageIsNotDecodable) {
  EXPECT_FALSE(Decode(std::string("\xff\xff\xff\xff\x0f\x01", 6)));
  EXPECT_EQ(err_.reason, RejectReason::kNotDecodable);
}

TEST_F(DecoderTest, TruncatedProtobufIsRejected) {
  const auto bytes = Click().SerializeAsString();
  EXPECT_FALSE(Decode(std::string_view(bytes).substr(0, bytes.size() - 3)));
  EXPECT_TRUE(err_.reason == RejectReason::kNotDecodable || err_.reason == RejectReason::kMissingField ||
              err_.reason == RejectReason::kUnknownType)
      << RejectReasonName(err_.reason);
}

TEST_F(DecoderTest, JsonWithWrongTypesIsBadJson) {
  EXPECT_FALSE(Decode(R"({"eventId":"e1","eventTime":"2025-11-23T07:00:00Z","type":"CAMPAIGN_CLICK","cost":"lots"})"));
  EXPECT_EQ(err_.reason, RejectReason::kBadJson);
  EXPECT_FALSE(Decode(R"({"eventId":)"));
  EXPECT_EQ(err_.reason, RejectReason::kBadJson);
}

TEST_F(DecoderTest, UnknownTypeIsRejected) {
  EXPECT_FALSE(Decode(R"({"eventId":"e1","eventTime":"2025-11-23T07:00:00Z","type":"CAMPAIGN_TELEPORT"})"));
  EXPECT_EQ(err_.reason, RejectReason::kUnknownType);
  auto e = Click();
  e.set_type(static_cast<events::v1::CampaignEventType>(99));
  EXPECT_FALSE(Decode(e.SerializeAsString()));
  EXPECT_EQ(err_.reason, RejectReason::kUnknownType);
  e.set_type(events::v1::CAMPAIGN_EVENT_TYPE_UNSPECIFIED);
  EXPECT_FALSE(Decode(e.SerializeAsString()));
  EXPECT_EQ(err_.reason, RejectReason::kUnknownType);
}

TEST_F(DecoderTest, MissingFieldsAndAbsurdValues) {
  auto e = Click();
  e.clear_event_id();
  EXPECT_FALSE(Decode(e.SerializeAsString()));
  EXPECT_EQ(err_.reason, RejectReason::kMissingField);
  e = Click();
  e.clear_event_time();
  EXPECT_FALSE(Decode(e.SerializeAsString()));
  EXPECT_EQ(err_.reason, RejectReason::kMissingField);
  e = Click();
  e.mutable_event_time()->set_seconds(10);
  EXPECT_FALSE(Decode(e.SerializeAsString()));
  EXPECT_EQ(err_.reason, RejectReason::kBadTimestamp);
  e = Click();
  e.set_cost(std::numeric_limits<double>::quiet_NaN());
  EXPECT_FALSE(Decode(e.SerializeAsString()));
  EXPECT_EQ(err_.reason, RejectReason::kBadValue);
  e.set_cost(1e300);
  EXPECT_FALSE(Decode(e.SerializeAsString()));
  EXPECT_EQ(err_.reason, RejectReason::kBadValue);
}

TEST_F(DecoderTest, OversizedIsRejectedBeforeParsing) {
  Decoder small({.max_payload_bytes = 10});
  EXPECT_FALSE(small.Decode(kpi::Family::kCampaign, std::string(11, 'x'), PayloadFormat::kAuto, &ev_, &err_));
  EXPECT_EQ(err_.reason, RejectReason::kOversized);
}

TEST_F(DecoderTest, DeeplyNestedJsonIsRejectedBeforeParsing) {
  const std::string head = R"({"eventId":"e1","eventTime":"2025-11-23T07:00:00Z","type":"CAMPAIGN_CLICK","x":)";
  // 64 levels (the object itself is one) decode; the unknown field is ignored.
  EXPECT_TRUE(Decode(head + std::string(63, '[') + std::string(63, ']') + "}")) << err_.detail;
  EXPECT_FALSE(Decode(head + std::string(64, '[') + std::string(64, ']') + "}"));
  EXPECT_EQ(err_.reason, RejectReason::kBadJson);
  EXPECT_EQ(err_.detail, "JSON nested more than 64 levels deep");
  // 100 000 levels: rejected without recursing (this must not overflow the
  // stack, under ASan too).
  EXPECT_FALSE(Decode(head + std::string(100000, '[') + std::string(100000, ']') + "}"));
  EXPECT_EQ(err_.reason, RejectReason::kBadJson);
  // Brackets inside strings, escaped quotes included, do not count.
  EXPECT_TRUE(Decode(R"({"eventId":"e\"[[[[","eventTime":"2025-11-23T07:00:00Z","type":"CAMPAIGN_CLICK","channel":")" +
                     std::string(100, '[') + R"("})"))
      << err_.detail;
}

TEST_F(DecoderTest, ForcedFormatIsHonoured) {
  EXPECT_FALSE(Decode(Click().SerializeAsString(), PayloadFormat::kJson));
  EXPECT_EQ(err_.reason, RejectReason::kBadJson);
}

}  // namespace
}  // namespace kpistream::ingest
