#include "state/keys.h"

namespace kpistream::state {

void PutU32BE(std::string* out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64BE(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t GetU32BE(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint64_t GetU64BE(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::string SeriesPrefix(Tier tier, uint32_t measure_id, uint64_t source) {
  std::string k;
  k.reserve(kAggKeyFixedSize + 16);
  k.push_back(static_cast<char>(tier));
  PutU32BE(&k, measure_id);
  PutU64BE(&k, source);
  return k;
}

std::string AggKey(Tier tier, uint32_t measure_id, uint64_t source, int64_t bucket, std::string_view group_key) {
  std::string k = SeriesPrefix(tier, measure_id, source);
  PutU64BE(&k, FlipSign(bucket));
  k.append(group_key);
  return k;
}

bool ParseAggKey(std::string_view key, AggKeyParts* out) {
  if (key.size() < kAggKeyFixedSize) return false;
  const uint8_t tier = static_cast<uint8_t>(key[0]);
  if (tier > static_cast<uint8_t>(Tier::kDay)) return false;
  out->tier = static_cast<Tier>(tier);
  out->measure_id = GetU32BE(key.data() + 1);
  out->source = GetU64BE(key.data() + 5);
  out->bucket = UnflipSign(GetU64BE(key.data() + 13));
  out->group_key = key.substr(kAggKeyFixedSize);
  return true;
}

std::string OffsetKey(uint64_t source) {
  std::string k;
  PutU64BE(&k, source);
  return k;
}

std::string KeptValueKey(uint64_t source, uint32_t dimension_id, std::string_view value) {
  std::string k = "V";
  PutU64BE(&k, source);
  PutU32BE(&k, dimension_id);
  k.append(value);
  return k;
}

std::string KeptCountPrefix(uint64_t source) {
  std::string k = "N";
  PutU64BE(&k, source);
  return k;
}

std::string KeptCountKey(uint64_t source, uint32_t dimension_id) {
  std::string k = KeptCountPrefix(source);
  PutU32BE(&k, dimension_id);
  return k;
}

std::string EventIdKey(uint64_t source, std::string_view event_id) {
  std::string k;
  k.reserve(8 + event_id.size());
  PutU64BE(&k, source);
  k.append(event_id);
  return k;
}

bool ParseOffsetKey(std::string_view key, uint64_t* source) {
  if (key.size() != 8) return false;
  *source = GetU64BE(key.data());
  return true;
}

void AppendGroupValue(std::string* group_key, std::string_view value) {
  uint64_t n = value.size();
  while (n >= 0x80) {
    group_key->push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  group_key->push_back(static_cast<char>(n));
  group_key->append(value);
}

bool SplitGroupKey(std::string_view group_key, std::vector<std::string_view>* values) {
  values->clear();
  size_t i = 0;
  while (i < group_key.size()) {
    uint64_t n = 0;
    int shift = 0;
    while (true) {
      if (i >= group_key.size() || shift > 35) return false;
      const uint8_t b = static_cast<uint8_t>(group_key[i++]);
      n |= uint64_t{b & 0x7fu} << shift;
      if (!(b & 0x80)) break;
      shift += 7;
    }
    if (n > group_key.size() - i) return false;
    values->push_back(group_key.substr(i, n));
    i += n;
  }
  return true;
}

}  // namespace kpistream::state
