// Declared protobuf sources of the user's own schema: a descriptor set, a
// dynamic message, the mapping's paths through nested messages, and
// Confluent's protobuf framing.
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/timestamp.pb.h>
#include <gtest/gtest.h>

#include "ingest/decoder.h"
#include "ingest/proto_layout.h"
#include "ingest/source_mapping.h"
#include "kpistream/events/v1/events.pb.h"

namespace kpistream::ingest {
namespace {

namespace pb = google::protobuf;

// A team's own click schema: the time as a Timestamp, the kind an enum, the
// campaign in a nested message, the cost in micros.
constexpr char kClickProto[] = R"pb(
  name: "ads/click.proto"
  package: "ads.v1"
  dependency: "google/protobuf/timestamp.proto"
  syntax: "proto3"
  message_type {
    name: "Other"
    field { name: "x" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
  }
  message_type {
    name: "AdEvent"
    field { name: "id" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
    field { name: "at" number: 2 type: TYPE_MESSAGE type_name: ".google.protobuf.Timestamp" label: LABEL_OPTIONAL }
    field { name: "kind" number: 3 type: TYPE_ENUM type_name: ".ads.v1.AdEvent.Kind" label: LABEL_OPTIONAL }
    field { name: "campaign" number: 4 type: TYPE_MESSAGE type_name: ".ads.v1.AdEvent.Campaign" label: LABEL_OPTIONAL }
    field { name: "cost_micros" number: 5 type: TYPE_INT64 label: LABEL_OPTIONAL }
    field { name: "tags" number: 6 type: TYPE_STRING label: LABEL_REPEATED }
    field { name: "raw" number: 7 type: TYPE_BYTES label: LABEL_OPTIONAL }
    nested_type {
      name: "Campaign"
      field { name: "id" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
      field { name: "channel" number: 2 type: TYPE_STRING label: LABEL_OPTIONAL }
    }
    enum_type {
      name: "Kind"
      value { name: "KIND_UNSPECIFIED" number: 0 }
      value { name: "IMPRESSION" number: 1 }
      value { name: "CLICK" number: 2 }
    }
  }
)pb";

std::string DescriptorSet() {
  pb::FileDescriptorSet set;
  pb::Timestamp::descriptor()->file()->CopyTo(set.add_file());
  EXPECT_TRUE(pb::TextFormat::ParseFromString(kClickProto, set.add_file()));
  return set.SerializeAsString();
}

SourceSpec ClickSource() {
  SourceSpec s;
  s.topic = "ads.events";
  s.family = kpi::Family::kCampaign;
  s.format = "protobuf";
  s.descriptor_set = DescriptorSet();
  s.message = "ads.v1.AdEvent";
  s.event_id_field = "id";
  s.event_time.field = "at";
  s.type_field = "kind";
  s.fields["campaign_id"].field = "campaign.id";
  s.fields["channel"].field = "campaign.channel";
  s.fields["channel"].fallback = "unknown";
  s.fields["cost"].field = "cost_micros";
  s.fields["cost"].scale = 1e-6;
  return s;
}

// Records written the way the team's producer would, from the same schema.
class Writer {
 public:
  Writer() {
    pb::FileDescriptorSet set;
    set.ParseFromString(DescriptorSet());
    for (const auto& f : set.file()) pool_.BuildFile(f);
    factory_ = std::make_unique<pb::DynamicMessageFactory>(&pool_);
  }
  std::string Click(const std::string& id, int64_t seconds, int kind, const std::string& campaign,
                    const std::string& channel, int64_t cost_micros) {
    const auto* d = pool_.FindMessageTypeByName("ads.v1.AdEvent");
    std::unique_ptr<pb::Message> m(factory_->GetPrototype(d)->New());
    const auto* r = m->GetReflection();
    r->SetString(m.get(), d->FindFieldByName("id"), id);
    auto* at = r->MutableMessage(m.get(), d->FindFieldByName("at"));
    at->GetReflection()->SetInt64(at, at->GetDescriptor()->FindFieldByName("seconds"), seconds);
    r->SetEnumValue(m.get(), d->FindFieldByName("kind"), kind);
    auto* c = r->MutableMessage(m.get(), d->FindFieldByName("campaign"));
    c->GetReflection()->SetString(c, c->GetDescriptor()->FindFieldByName("id"), campaign);
    if (!channel.empty()) c->GetReflection()->SetString(c, c->GetDescriptor()->FindFieldByName("channel"), channel);
    r->SetInt64(m.get(), d->FindFieldByName("cost_micros"), cost_micros);
    return m->SerializeAsString();
  }

 private:
  pb::DescriptorPool pool_;
  std::unique_ptr<pb::DynamicMessageFactory> factory_;
};

class ProtoSourceTest : public ::testing::Test {
 protected:
  bool Decode(const SourceMapping& m, std::string_view payload) {
    return decoder_.DecodeMapped(m, payload, {.topic = "ads.events", .partition = 0, .offset = 4}, &ev_, &err_);
  }
  Writer writer_;
  Decoder decoder_;
  kpi::EventView ev_;
  DecodeError err_;
};

TEST_F(ProtoSourceTest, AClickDecodesThroughNestedMessagesEnumsAndTimestamps) {
  auto m = SourceMapping::Compile(ClickSource());
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(Decode(**m, writer_.Click("e1", 1764460800, 2, "c-17", "search", 120000))) << err_.detail;
  const auto& e = static_cast<const events::v1::CampaignEvent&>(*ev_.msg);
  EXPECT_EQ(ev_.event_id, "e1");
  EXPECT_EQ(ev_.time_ms, 1764460800000);
  EXPECT_EQ(ev_.type, events::v1::CAMPAIGN_CLICK);
  EXPECT_EQ(e.campaign_id(), "c-17");
  EXPECT_EQ(e.channel(), "search");
  EXPECT_DOUBLE_EQ(e.cost(), 0.12);
  // A proto3 string at its default reads as absent: the default applies.
  ASSERT_TRUE(Decode(**m, writer_.Click("e2", 1764460800, 1, "c-18", "", 0))) << err_.detail;
  EXPECT_EQ(static_cast<const events::v1::CampaignEvent&>(*ev_.msg).channel(), "unknown");
  EXPECT_EQ(ev_.type, events::v1::CAMPAIGN_IMPRESSION);
  // Not a message of the schema.
  EXPECT_FALSE(Decode(**m, std::string("\xff\xff\xff", 3)));
  EXPECT_EQ(err_.reason, RejectReason::kNotDecodable);
  EXPECT_NE(err_.detail.find("ads.v1.AdEvent"), std::string::npos) << err_.detail;
}

TEST_F(ProtoSourceTest, AMappingTheSchemaCannotFillIsAConfigurationError) {
  auto s = ClickSource();
  s.fields["region"].field = "campaign.region";
  auto m = SourceMapping::Compile(s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(
      m.status().message().find("the message ads.v1.AdEvent.Campaign has no field 'region' (fields: id, channel)"),
      std::string::npos)
      << m.status();
  s = ClickSource();
  s.fields["creative"].field = "tags";
  m = SourceMapping::Compile(s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("'tags' is repeated"), std::string::npos) << m.status();
  s = ClickSource();
  s.fields["revenue"].field = "raw";
  m = SourceMapping::Compile(s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("field 'raw' is a protobuf bytes, which cannot convert to a number"),
            std::string::npos)
      << m.status();
  s = ClickSource();
  s.message = "ads.v1.Nope";
  m = SourceMapping::Compile(s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("has no message ads.v1.Nope"), std::string::npos) << m.status();
  s = ClickSource();
  s.descriptor_set = "not a descriptor set";
  EXPECT_FALSE(SourceMapping::Compile(s).ok());
}

TEST(MessageIndexesTest, ConfluentFraming) {
  // [0] is written as a single 0; [1] as count 1 (zig-zag 2), index 1 (2).
  const std::string first("\x00rest", 5), second("\x02\x02rest", 6);
  auto a = SplitMessageIndexes(first);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->first, std::vector<int>{0});
  EXPECT_EQ(a->second, "rest");
  auto b = SplitMessageIndexes(second);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->first, std::vector<int>{1});
  EXPECT_FALSE(SplitMessageIndexes(std::string("\x02", 1)).ok());
  EXPECT_FALSE(SplitMessageIndexes(std::string("\x01", 1)).ok());  // count -1

  // The indexes point into the registered .proto (the writer's), which
  // may order its messages unlike the local descriptor set.
  auto file = ParseProtoText(R"(syntax = "proto3";
package ads.v1;
import "google/protobuf/timestamp.proto";
message AdEvent {
  message Campaign { string id = 1; }
  string id = 1;
  google.protobuf.Timestamp at = 2;
}
message Other { string x = 1; }
)");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(MessageNameAt(**file, {0}), "ads.v1.AdEvent");
  EXPECT_EQ(MessageNameAt(**file, {1}), "ads.v1.Other");
  EXPECT_EQ(MessageNameAt(**file, {0, 0}), "ads.v1.AdEvent.Campaign");
  EXPECT_EQ(MessageNameAt(**file, {7}), std::nullopt);
  EXPECT_EQ(MessageNameAt(**file, {1, 0}), std::nullopt);
  auto bad = ParseProtoText("message {");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("does not parse: 1:"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace kpistream::ingest
