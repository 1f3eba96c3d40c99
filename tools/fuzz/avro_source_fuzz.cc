// libFuzzer target: a declared source's Avro decoder (ingest/avro_layout.h)
// must never crash, hang, leak or allocate without bound on any payload.
// Inputs are either raw payloads, or a valid datum with the input's bytes
// spliced in at a position it names (so mutations reach deep into the
// record: unions, nested records, enums, strings, longs), read under a
// mapping that uses each of them.
//
// Differential: kpid's own reader (AvroDatum) and the Avro C library's
// generic reader (AvroGenericDatum) must accept the same payloads and give
// the same value at every mapped path (but for the depth and item bounds
// only kpid's reader has).
#include <avro.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <cmath>
#include <cstring>

#include "ingest/avro_layout.h"
#include "ingest/decoder.h"
#include "ingest/source_mapping.h"

namespace {

using kpistream::ingest::SourceMapping;
using kpistream::ingest::SourceSpec;

constexpr char kSchema[] = R"({"type": "record", "name": "Deal", "fields": [
  {"name": "id", "type": "string"},
  {"name": "at", "type": "long"},
  {"name": "stage", "type": {"type": "enum", "name": "Stage", "symbols": ["OPEN", "WON", "LOST"]}},
  {"name": "account", "type": ["null", {"type": "record", "name": "Account", "fields": [
    {"name": "id", "type": "string"}, {"name": "region", "type": ["null", "string"]},
    {"name": "tags", "type": {"type": "array", "items": "string"}}]}]},
  {"name": "amount", "type": ["null", "double", "string"]},
  {"name": "month", "type": "int"},
  {"name": "extra", "type": {"type": "map", "values": "long"}},
  {"name": "won", "type": "boolean"},
  {"name": "score", "type": ["null", "float"]},
  {"name": "blob", "type": "bytes"},
  {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}},
  {"name": "parent", "type": ["null", "Deal"]}]})";

std::shared_ptr<const SourceMapping> Mapping() {
  SourceSpec s;
  s.topic = "fuzz";
  s.family = kpistream::kpi::Family::kCrm;
  s.format = "avro";
  s.schema_text = kSchema;
  s.event_id_field = "id";
  s.event_time = {.field = "at", .unit = "ms"};
  s.type_field = "stage";
  s.type_values = {{"OPEN", "opportunity_created"}, {"WON", "opportunity_won"}, {"LOST", "opportunity_lost"}};
  s.fields["account_id"] = {.field = "account.id", .required = true};
  s.fields["region"] = {.field = "account.region", .fallback = "unknown"};
  s.fields["amount"] = {.field = "amount", .scale = 0.01};
  s.fields["cohort_month"] = {.field = "month"};
  s.fields["sales_rep"] = {.field = "won"};
  s.fields["score"] = {.field = "score"};
  s.fields["segment"] = {.field = "parent.account.region"};
  s.fields["opportunity_id"] = {.field = "parent.id"};
  s.fields["mrr_delta"] = {.field = "parent.parent.amount"};
  auto m = SourceMapping::Compile(s);
  if (!m.ok()) {
    fprintf(stderr, "%s\n", std::string(m.status().message()).c_str());
    __builtin_trap();
  }
  return *m;
}

// A valid datum of kSchema, written with the Avro C library.
std::string Seed() {
  avro_schema_t schema;
  if (avro_schema_from_json_length(kSchema, sizeof(kSchema) - 1, &schema) != 0) __builtin_trap();
  avro_value_iface_t* iface = avro_generic_class_from_schema(schema);
  avro_value_t v, f, b, sub, item;
  avro_generic_value_new(iface, &v);
  avro_value_get_by_name(&v, "id", &f, nullptr);
  avro_value_set_string(&f, "deal-1");
  avro_value_get_by_name(&v, "at", &f, nullptr);
  avro_value_set_long(&f, 1764460800123);
  avro_value_get_by_name(&v, "stage", &f, nullptr);
  avro_value_set_enum(&f, 1);
  avro_value_get_by_name(&v, "account", &f, nullptr);
  avro_value_set_branch(&f, 1, &b);
  avro_value_get_by_name(&b, "id", &sub, nullptr);
  avro_value_set_string(&sub, "acct-9");
  avro_value_get_by_name(&b, "region", &sub, nullptr);
  avro_value_set_branch(&sub, 1, &item);
  avro_value_set_string(&item, "emea");
  avro_value_get_by_name(&b, "tags", &sub, nullptr);
  avro_value_append(&sub, &item, nullptr);
  avro_value_set_string(&item, "vip");
  avro_value_get_by_name(&v, "amount", &f, nullptr);
  avro_value_set_branch(&f, 1, &b);
  avro_value_set_double(&b, 1234.5);
  avro_value_get_by_name(&v, "month", &f, nullptr);
  avro_value_set_int(&f, 3);
  avro_value_get_by_name(&v, "extra", &f, nullptr);
  avro_value_add(&f, "k", &item, nullptr, nullptr);
  avro_value_set_long(&item, 7);
  avro_value_get_by_name(&v, "won", &f, nullptr);
  avro_value_set_boolean(&f, 1);
  avro_value_get_by_name(&v, "score", &f, nullptr);
  avro_value_set_branch(&f, 1, &b);
  avro_value_set_float(&b, 0.5f);
  avro_value_get_by_name(&v, "blob", &f, nullptr);
  avro_value_set_bytes(&f, const_cast<char*>("xyz"), 3);
  avro_value_get_by_name(&v, "hash", &f, nullptr);
  avro_value_set_fixed(&f, const_cast<char*>("abcd"), 4);
  avro_value_get_by_name(&v, "parent", &f, nullptr);
  avro_value_set_branch(&f, 0, &b);
  size_t size = 0;
  avro_value_sizeof(&v, &size);
  std::string out(size, '\0');
  avro_writer_t w = avro_writer_memory(out.data(), static_cast<int64_t>(size));
  if (avro_value_write(w, &v) != 0) __builtin_trap();
  avro_writer_free(w);
  avro_value_decref(&v);
  avro_value_iface_decref(iface);
  avro_schema_decref(schema);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::shared_ptr<const SourceMapping> mapping = Mapping();
  static const std::string seed = Seed();
  static kpistream::ingest::Decoder decoder;
  if (size < 2) return 0;
  std::string payload;
  if (data[0] & 1) {
    // Splice: bytes 2.. overwrite the valid datum from position data[1],
    // and the result is cut to the datum's length plus data[0] >> 1 - 64.
    payload = seed;
    const size_t at = data[1] % (seed.size() + 1);
    payload.replace(at, std::min(size - 2, payload.size() - at), reinterpret_cast<const char*>(data + 2), size - 2);
    const long keep = static_cast<long>(seed.size()) + (data[0] >> 1) - 64;
    if (keep >= 0 && static_cast<size_t>(keep) < payload.size()) payload.resize(keep);
  } else {
    payload.assign(reinterpret_cast<const char*>(data + 1), size - 1);
  }
  {
    static kpistream::ingest::AvroDatum own(mapping->avro_layout());
    static kpistream::ingest::AvroGenericDatum library(mapping->avro_layout());
    std::string why_own, why_library;
    const bool a = own.Read(payload, &why_own);
    const bool b = library.Read(payload, &why_library);
    // Where kpid's reader refuses by design what the library would read
    // (a datum nested past 64 levels, or millions of zero-byte items), it
    // says so; nothing else may differ.
    const bool by_design = !a && (why_own.find("nested more than") != std::string::npos ||
                                  why_own.find("more values than") != std::string::npos);
    if (a != b && !by_design) {
      fprintf(stderr, "readers disagree: own %d (%s), library %d (%s)\n", a, why_own.c_str(), b, why_library.c_str());
      __builtin_trap();
    }
    if (a) {
      for (int slot = 0; slot < static_cast<int>(mapping->avro_layout()->slot_count()); ++slot) {
        const auto x = own.At(slot), y = library.At(slot);
        const bool same_d = x.d == y.d || (std::isnan(x.d) && std::isnan(y.d));
        if (x.kind != y.kind || x.text != y.text || x.i != y.i || !same_d || x.b != y.b || x.type_name != y.type_name) {
          fprintf(stderr, "slot %d: own kind %d '%s' %ld %g (%s), library kind %d '%s' %ld %g (%s)\n", slot,
                  static_cast<int>(x.kind), std::string(x.text).c_str(), x.i, x.d, std::string(x.type_name).c_str(),
                  static_cast<int>(y.kind), std::string(y.text).c_str(), y.i, y.d, std::string(y.type_name).c_str());
          __builtin_trap();
        }
      }
    }
  }
  kpistream::kpi::EventView ev;
  kpistream::ingest::DecodeError err;
  if (decoder.DecodeMapped(*mapping, payload, {.topic = "fuzz", .partition = 1, .offset = 2}, &ev, &err)) {
    if (ev.msg == nullptr || ev.type == 0 || ev.event_id.empty()) __builtin_trap();
  } else if (err.detail.empty() || err.retry) {
    __builtin_trap();  // every rejection says why; nothing here waits on a registry
  }
  return 0;
}
