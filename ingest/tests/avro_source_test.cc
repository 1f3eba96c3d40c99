// Declared Avro sources: bare datums with a schema file, and the Confluent
// wire format's framing.
#include <avro.h>
#include <gtest/gtest.h>

#include "ingest/avro_layout.h"
#include "ingest/decoder.h"
#include "ingest/schema_registry.h"
#include "ingest/source_mapping.h"
#include "kpistream/events/v1/events.pb.h"

namespace kpistream::ingest {
namespace {

using events::v1::CrmEvent;

// A CRM topic as a team might have it: the account under a nullable nested
// record, the stage as an enum, the amount in cents.
constexpr char kDealSchema[] = R"({
  "type": "record", "name": "Deal", "namespace": "com.example.crm",
  "fields": [
    {"name": "deal_id", "type": "string"},
    {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "stage", "type": {"type": "enum", "name": "Stage", "symbols": ["OPEN", "WON", "LOST"]}},
    {"name": "account", "type": ["null", {"type": "record", "name": "Account", "fields": [
      {"name": "id", "type": "string"},
      {"name": "region", "type": ["null", "string"], "default": null}]}], "default": null},
    {"name": "amount_cents", "type": "long"},
    {"name": "rep", "type": ["null", "string"], "default": null},
    {"name": "blob", "type": "bytes", "default": ""}
  ]})";

SourceSpec DealSource() {
  SourceSpec s;
  s.topic = "crm.deals";
  s.family = kpi::Family::kCrm;
  s.format = "avro";
  s.schema_text = kDealSchema;
  s.event_id_field = "deal_id";
  s.event_time.field = "updated_at";
  s.type_field = "stage";
  s.type_values = {{"OPEN", "opportunity_created"}, {"WON", "opportunity_won"}, {"LOST", "opportunity_lost"}};
  s.fields["account_id"].field = "account.id";
  s.fields["account_id"].required = true;
  s.fields["region"].field = "account.region";
  s.fields["region"].fallback = "unknown";
  s.fields["amount"].field = "amount_cents";
  s.fields["amount"].scale = 0.01;
  s.fields["sales_rep"].field = "rep";
  return s;
}

struct Deal {
  std::string id = "d-1";
  int64_t at_ms = 1764460800123;
  int stage = 1;  // WON
  bool account = true;
  std::string account_id = "a-7";
  const char* region = "emea";  // null: the null branch
  int64_t cents = 123456;
  std::string rep = "ana";
};

// Encodes with the Avro C library's writer: the bytes a Java or Python
// producer writes for the same schema.
std::string Encode(const Deal& d) {
  avro_schema_t schema;
  EXPECT_EQ(avro_schema_from_json_length(kDealSchema, sizeof(kDealSchema) - 1, &schema), 0) << avro_strerror();
  avro_value_iface_t* iface = avro_generic_class_from_schema(schema);
  avro_value_t v, f, branch, sub;
  avro_generic_value_new(iface, &v);
  avro_value_get_by_name(&v, "deal_id", &f, nullptr);
  avro_value_set_string_len(&f, d.id.c_str(), d.id.size() + 1);
  avro_value_get_by_name(&v, "updated_at", &f, nullptr);
  avro_value_set_long(&f, d.at_ms);
  avro_value_get_by_name(&v, "stage", &f, nullptr);
  avro_value_set_enum(&f, d.stage);
  avro_value_get_by_name(&v, "account", &f, nullptr);
  if (d.account) {
    avro_value_set_branch(&f, 1, &branch);
    avro_value_get_by_name(&branch, "id", &sub, nullptr);
    avro_value_set_string_len(&sub, d.account_id.c_str(), d.account_id.size() + 1);
    avro_value_get_by_name(&branch, "region", &sub, nullptr);
    avro_value_t rb;
    if (d.region) {
      avro_value_set_branch(&sub, 1, &rb);
      avro_value_set_string(&rb, d.region);
    } else {
      avro_value_set_branch(&sub, 0, &rb);
      avro_value_set_null(&rb);
    }
  } else {
    avro_value_set_branch(&f, 0, &branch);
    avro_value_set_null(&branch);
  }
  avro_value_get_by_name(&v, "amount_cents", &f, nullptr);
  avro_value_set_long(&f, d.cents);
  avro_value_get_by_name(&v, "rep", &f, nullptr);
  avro_value_set_branch(&f, 1, &branch);
  avro_value_set_string_len(&branch, d.rep.c_str(), d.rep.size() + 1);
  avro_value_get_by_name(&v, "blob", &f, nullptr);
  avro_value_set_bytes(&f, const_cast<char*>("x"), 1);
  size_t size = 0;
  avro_value_sizeof(&v, &size);
  std::string out(size, '\0');
  avro_writer_t w = avro_writer_memory(out.data(), static_cast<int64_t>(out.size()));
  EXPECT_EQ(avro_value_write(w, &v), 0) << avro_strerror();
  avro_writer_free(w);
  avro_value_decref(&v);
  avro_value_iface_decref(iface);
  avro_schema_decref(schema);
  return out;
}

class AvroSourceTest : public ::testing::Test {
 protected:
  bool Decode(const SourceMapping& m, std::string_view payload) {
    return decoder_.DecodeMapped(m, payload, {.topic = "crm.deals", .partition = 0, .offset = 9}, &ev_, &err_);
  }
  Decoder decoder_;
  kpi::EventView ev_;
  DecodeError err_;
};

TEST_F(AvroSourceTest, ADealDecodesThroughNestedRecordsUnionsAndEnums) {
  auto m = SourceMapping::Compile(DealSource());
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(Decode(**m, Encode({}))) << err_.detail;
  const auto& e = static_cast<const CrmEvent&>(*ev_.msg);
  EXPECT_EQ(ev_.event_id, "d-1");
  EXPECT_EQ(ev_.time_ms, 1764460800123);
  EXPECT_EQ(ev_.type, events::v1::CRM_OPPORTUNITY_WON);
  EXPECT_EQ(e.account_id(), "a-7");
  EXPECT_EQ(e.region(), "emea");
  EXPECT_DOUBLE_EQ(e.amount(), 1234.56);
  EXPECT_EQ(e.sales_rep(), "ana");
  // The decoder reuses its datum: a second record reads its own values.
  Deal lost;
  lost.id = "d-2";
  lost.stage = 2;
  lost.region = nullptr;  // null branch: the default
  ASSERT_TRUE(Decode(**m, Encode(lost))) << err_.detail;
  EXPECT_EQ(ev_.type, events::v1::CRM_OPPORTUNITY_LOST);
  EXPECT_EQ(static_cast<const CrmEvent&>(*ev_.msg).region(), "unknown");
}

TEST_F(AvroSourceTest, RecordsThatBreakTheMappingSayWhy) {
  auto m = SourceMapping::Compile(DealSource());
  ASSERT_TRUE(m.ok()) << m.status();
  Deal no_account;
  no_account.account = false;  // a required field under a null record
  EXPECT_FALSE(Decode(**m, Encode(no_account)));
  EXPECT_EQ(err_.reason, RejectReason::kMissingField);
  EXPECT_NE(err_.detail.find("account.id"), std::string::npos) << err_.detail;

  const std::string good = Encode({});
  EXPECT_FALSE(Decode(**m, good.substr(0, good.size() - 3)));  // truncated
  EXPECT_EQ(err_.reason, RejectReason::kNotDecodable) << err_.detail;
  EXPECT_FALSE(Decode(**m, good + "zz"));  // trailing bytes
  EXPECT_EQ(err_.reason, RejectReason::kNotDecodable);
  EXPECT_NE(err_.detail.find("left over"), std::string::npos) << err_.detail;

  Deal bad_utf8;
  bad_utf8.account_id = "a-\xff\xfe";
  EXPECT_FALSE(Decode(**m, Encode(bad_utf8)));
  EXPECT_EQ(err_.reason, RejectReason::kBadValue);
  EXPECT_NE(err_.detail.find("UTF-8"), std::string::npos) << err_.detail;

  // A hostile length prefix (a string of 2^62 bytes) fails the record, not
  // the process.
  std::string huge = "\xfe\xff\xff\xff\xff\xff\xff\xff\x7f";
  EXPECT_FALSE(Decode(**m, huge));
  EXPECT_EQ(err_.reason, RejectReason::kNotDecodable);
}

// Avro's zig-zag varint (the specification's "Binary Encoding").
std::string Long(int64_t n) {
  uint64_t z = (static_cast<uint64_t>(n) << 1) ^ static_cast<uint64_t>(n >> 63);
  std::string out;
  while (z >= 0x80) {
    out += static_cast<char>((z & 0x7f) | 0x80);
    z >>= 7;
  }
  out += static_cast<char>(z);
  return out;
}

// Where the Avro C library (1.11.1) trusts the bytes, the decoder does
// not: found by tools/fuzz/avro_source_fuzz.
TEST_F(AvroSourceTest, WhatTheLibraryDoesNotCheckIsChecked) {
  auto m = SourceMapping::Compile(DealSource());
  ASSERT_TRUE(m.ok()) << m.status();
  // An enum index past the symbols (the library returned a wild pointer).
  const std::string head = Long(3) + "d-1" + Long(1764460800123);
  EXPECT_FALSE(Decode(**m, head + Long(7) + Long(0) + Long(0) + Long(0) + Long(0)));
  EXPECT_EQ(err_.reason, RejectReason::kUnknownType);
  EXPECT_NE(err_.detail.find("enum index out of range"), std::string::npos) << err_.detail;
  // A string declared 1,000 bytes long with 3 there: the library leaked
  // the 1,001 bytes it allocated (LeakSanitizer in the ASan build).
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(Decode(**m, Long(1000) + "abc"));
    EXPECT_EQ(err_.reason, RejectReason::kNotDecodable);
  }
  // And the datum reads good records after bad ones.
  ASSERT_TRUE(Decode(**m, Encode({}))) << err_.detail;
  EXPECT_EQ(ev_.event_id, "d-1");
}

// kpid's own reader (AvroDatum) against the library's generic one: the
// same values at every path, and the bounds only kpid's reader has.
TEST_F(AvroSourceTest, TheOwnReaderGivesTheLibrarysValuesAndBoundsWhatTheLibraryDoesNot) {
  auto m = SourceMapping::Compile(DealSource());
  ASSERT_TRUE(m.ok()) << m.status();
  const auto& layout = (*m)->avro_layout();
  AvroDatum own(layout);
  AvroGenericDatum library(layout);
  Deal no_region;
  no_region.region = nullptr;
  Deal no_account;
  no_account.account = false;
  for (const auto& d : {Deal{}, no_region, no_account}) {
    const std::string payload = Encode(d);
    std::string why;
    ASSERT_TRUE(own.Read(payload, &why)) << why;
    ASSERT_TRUE(library.Read(payload, &why)) << why;
    for (int slot = 0; slot < static_cast<int>(layout->slot_count()); ++slot) {
      const auto x = own.At(slot), y = library.At(slot);
      EXPECT_EQ(x.kind, y.kind) << slot;
      EXPECT_EQ(x.text, y.text) << slot;
      EXPECT_EQ(x.i, y.i) << slot;
      EXPECT_EQ(x.type_name, y.type_name) << slot;
    }
  }

  // A recursive schema: paths through it, and a chain deeper than 64
  // levels refused (the library would recurse as deep as the bytes say).
  SourceSpec chain;
  chain.topic = "t";
  chain.family = kpi::Family::kCrm;
  chain.format = "avro";
  chain.schema_text = R"({"type": "record", "name": "Node", "fields": [
      {"name": "id", "type": "string"}, {"name": "next", "type": ["null", "Node"]}]})";
  chain.event_id_field = "next.next.id";
  chain.event_time.record_timestamp = true;
  chain.type_constant = "lead";
  auto cm = SourceMapping::Compile(chain);
  ASSERT_TRUE(cm.ok()) << cm.status();
  auto datum = [](int depth) {
    std::string out;
    for (int i = 0; i < depth; ++i) out += Long(2) + "n" + std::to_string(i % 10) + Long(1);
    return out + Long(2) + "ok" + Long(0);
  };
  AvroDatum c(cm.value()->avro_layout());
  std::string why;
  const std::string two = datum(2);  // values view the payload
  ASSERT_TRUE(c.Read(two, &why)) << why;
  EXPECT_EQ(c.At(cm.value()->paths().at(0).path->slot).text, "ok");
  EXPECT_FALSE(c.Read(datum(40), &why));
  EXPECT_NE(why.find("nested more than 64 levels"), std::string::npos) << why;

  // Ten million zero-byte items in six bytes: refused at once.
  SourceSpec nulls = chain;
  nulls.schema_text = R"({"type": "record", "name": "N", "fields": [
      {"name": "id", "type": "string"}, {"name": "pad", "type": {"type": "array", "items": "null"}}]})";
  nulls.event_id_field = "id";
  auto nm = SourceMapping::Compile(nulls);
  ASSERT_TRUE(nm.ok()) << nm.status();
  AvroDatum n(nm.value()->avro_layout());
  EXPECT_FALSE(n.Read(Long(1) + "a" + Long(10000000) + Long(0), &why));
  EXPECT_NE(why.find("more values than"), std::string::npos) << why;
  ASSERT_TRUE(n.Read(Long(1) + "a" + Long(3) + Long(0), &why)) << why;
}

TEST_F(AvroSourceTest, AMappingTheSchemaCannotFillIsAConfigurationError) {
  auto s = DealSource();
  s.fields["plan"].field = "account.plan";
  auto m = SourceMapping::Compile(s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("has no field 'plan' (fields: id, region)"), std::string::npos) << m.status();

  s = DealSource();
  s.fields["amount"].field = "blob";  // bytes: no number
  m = SourceMapping::Compile(s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("field 'blob' is an Avro bytes, which cannot convert to a number"),
            std::string::npos)
      << m.status();

  s = DealSource();
  s.fields["segment"].field = "rep.name";  // a step into a string
  m = SourceMapping::Compile(s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("not a record"), std::string::npos) << m.status();

  s = DealSource();
  s.schema_text = R"({"type": "record", "name": "X", "fields": [ {"name": "a"}]})";
  m = SourceMapping::Compile(s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("not an Avro schema"), std::string::npos) << m.status();

  s = DealSource();
  s.schema_text.clear();
  m = SourceMapping::Compile(s);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("schema_file, or schema_registry"), std::string::npos) << m.status();
}

TEST(ConfluentFrameTest, SplitsMagicByteAndSchemaId) {
  const std::string rec("\x00\x00\x00\x01\x02payload", 12);
  auto f = SplitConfluentFrame(rec);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->first, 258);
  EXPECT_EQ(f->second, "payload");
  EXPECT_FALSE(SplitConfluentFrame(std::string("\x00\x00\x01", 3)).ok());
  auto bad = SplitConfluentFrame(std::string("\x01\x00\x00\x00\x01x", 6));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("magic byte is 1"), std::string::npos) << bad.status();
}

TEST(SchemaRegistryClientTest, CredentialsNeverReachMessages) {
  EXPECT_EQ(RedactedUrl("https://u:p@ss@h:8081/apis/ccompat/v7"), "https://***@h:8081/apis/ccompat/v7");
  EXPECT_EQ(RedactedUrl("https://u:pa/ss@h"), "https://***@h");
  EXPECT_EQ(RedactedUrl("http://registry:8081"), "http://registry:8081");
  EXPECT_EQ(RedactedUrl("http://registry:8081/x?a=b@c"), "http://registry:8081/x?a=b@c");
}

TEST(SchemaRegistryClientTest, AnUnreachableRegistryIsUnavailableAndBacksOff) {
  // Port 9 on loopback: nothing listens (connection refused at once).
  SchemaRegistryClient c({.url = "http://127.0.0.1:9", .timeout_ms = 2000, .initial_backoff_ms = 60000});
  auto a = c.Lookup(1);
  ASSERT_FALSE(a.ok());
  EXPECT_TRUE(absl::IsUnavailable(a.status())) << a.status();
  auto b = c.Lookup(1);  // within the backoff: not asked again
  EXPECT_TRUE(absl::IsUnavailable(b.status()));
  EXPECT_EQ(c.fetches(), 1);
}

TEST_F(AvroSourceTest, RegistryDownMeansRetryNeverADeadLetter) {
  auto s = DealSource();
  s.schema_text.clear();
  s.registry.url = "http://127.0.0.1:9";
  auto m = SourceMapping::Compile(s);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(Decode(**m, std::string("\x00\x00\x00\x00\x05", 5) + Encode({})));
  EXPECT_TRUE(err_.retry) << err_.detail;
  EXPECT_FALSE(Decode(**m, "\x07rest"));  // no Confluent frame: the record's fault
  EXPECT_FALSE(err_.retry);
  EXPECT_EQ(err_.reason, RejectReason::kNotDecodable);
}

}  // namespace
}  // namespace kpistream::ingest
