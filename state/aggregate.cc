#include "state/aggregate.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

namespace kpistream::state {

int64_t ToMicros(double v) { return static_cast<int64_t>(std::llround(v * kMicrosPerUnit)); }
double FromMicros(int64_t micros) { return static_cast<double>(micros) / kMicrosPerUnit; }

void Hll::AddToRegisters(uint64_t h) {
  const size_t idx = h >> (64 - kPrecision);
  const uint64_t rest = (h << kPrecision) | (uint64_t{1} << (kPrecision - 1));
  const uint8_t rank = static_cast<uint8_t>(std::countl_zero(rest) + 1);
  if (rank > regs_[idx]) regs_[idx] = rank;
}

void Hll::ToDense() {
  if (!exact()) return;
  regs_.assign(kRegisters, 0);
  for (uint64_t h : hashes_) AddToRegisters(h);
  hashes_.clear();
  hashes_.shrink_to_fit();
}

std::vector<uint8_t>& Hll::mutable_registers() {
  ToDense();
  return regs_;
}

void Hll::AddHash(uint64_t h) {
  if (!exact()) {
    AddToRegisters(h);
    return;
  }
  const auto it = std::lower_bound(hashes_.begin(), hashes_.end(), h);
  if (it != hashes_.end() && *it == h) return;
  hashes_.insert(it, h);
  if (hashes_.size() > kExactMax) ToDense();
}

void Hll::Merge(const Hll& o) {
  if (o.exact()) {
    if (exact()) {
      std::vector<uint64_t> all;
      all.reserve(hashes_.size() + o.hashes_.size());
      std::set_union(hashes_.begin(), hashes_.end(), o.hashes_.begin(), o.hashes_.end(), std::back_inserter(all));
      hashes_ = std::move(all);
      if (hashes_.size() > kExactMax) ToDense();
      return;
    }
    for (uint64_t h : o.hashes_) AddToRegisters(h);
    return;
  }
  ToDense();
  for (size_t i = 0; i < kRegisters; ++i) {
    if (o.regs_[i] > regs_[i]) regs_[i] = o.regs_[i];
  }
}

double Hll::Estimate() const {
  if (exact()) return static_cast<double>(hashes_.size());
  const double m = static_cast<double>(kRegisters);
  double sum = 0;
  size_t zeros = 0;
  for (uint8_t r : regs_) {
    sum += std::ldexp(1.0, -r);
    if (r == 0) ++zeros;
  }
  const double alpha = 0.7213 / (1.0 + 1.079 / m);
  double e = alpha * m * m / sum;
  // Small-range correction: linear counting is more accurate while many
  // registers are still empty.
  if (e <= 2.5 * m && zeros > 0) {
    e = m * std::log(m / static_cast<double>(zeros));
  }
  return e;
}

uint64_t HashForSketch(std::string_view s) { return XXH3_64bits(s.data(), s.size()); }

namespace {
template <typename T>
void Put(std::string* out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out->append(buf, sizeof(T));
}
template <typename T>
T Get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
constexpr size_t kAggSize = 1 + 8 * 4;
constexpr size_t kHllSize = 1 + Hll::kRegisters;
static_assert(std::endian::native == std::endian::little, "encoding assumes little-endian host");
}  // namespace

std::string EncodeAgg(const Agg& a) {
  std::string out;
  out.reserve(kAggSize);
  out.push_back(static_cast<char>(ValueKind::kAgg));
  Put(&out, a.count);
  Put(&out, a.sum_micros);
  Put(&out, a.min);
  Put(&out, a.max);
  return out;
}

// HLL encodings. Dense: kind + 2^14 registers (exactly kHllSize bytes).
// Sparse, while few registers are set: kind, 'S', count (u16 LE), then per
// set register index (u16 LE) and rank (u8), in index order. Small sketches
// (a few users per group and bucket) are then tens of bytes, not 16 KiB.
constexpr char kSparseTag = 'S';
constexpr size_t kSparseMaxEntries = (kHllSize - 4) / 3 - 1;
// Exact: kind, 'X', count (u16 LE), then each hash (u64 LE), ascending.
// Neither tag is a valid register value (ranks are at most 64), so no
// dense encoding starts like one.
constexpr char kExactTag = 'X';
static_assert(Hll::kExactMax < 65536);

bool IsExactHll(std::string_view in) {
  return in.size() >= 4 && in[1] == kExactTag && in.size() == 4 + 8 * size_t{Get<uint16_t>(in.data() + 2)};
}

std::string EncodeHll(const Hll& h) {
  std::string out;
  if (h.exact()) {
    const auto& hs = h.hashes();
    out.reserve(4 + 8 * hs.size());
    out.push_back(static_cast<char>(ValueKind::kHll));
    out.push_back(kExactTag);
    Put(&out, static_cast<uint16_t>(hs.size()));
    for (uint64_t x : hs) Put(&out, x);
    return out;
  }
  const auto& regs = h.registers();
  size_t n = 0;
  for (uint8_t r : regs) n += r != 0;
  out.push_back(static_cast<char>(ValueKind::kHll));
  if (n <= kSparseMaxEntries) {
    out.reserve(4 + 3 * n);
    out.push_back(kSparseTag);
    Put(&out, static_cast<uint16_t>(n));
    for (size_t i = 0; i < regs.size(); ++i) {
      if (regs[i] == 0) continue;
      Put(&out, static_cast<uint16_t>(i));
      out.push_back(static_cast<char>(regs[i]));
    }
    return out;
  }
  out.reserve(kHllSize);
  out.append(reinterpret_cast<const char*>(regs.data()), Hll::kRegisters);
  return out;
}

namespace {
// Calls fn(index, rank) for every set register of an encoded HLL; false if
// malformed.
template <typename Fn>
bool ForEachRegister(std::string_view in, Fn fn) {
  if (in.size() == kHllSize) {
    for (size_t i = 0; i < Hll::kRegisters; ++i) {
      const auto r = static_cast<uint8_t>(in[i + 1]);
      if (r) fn(i, r);
    }
    return true;
  }
  if (in.size() < 4 || in[1] != kSparseTag) return false;
  const size_t n = Get<uint16_t>(in.data() + 2);
  if (in.size() != 4 + 3 * n) return false;
  for (size_t e = 0; e < n; ++e) {
    const size_t idx = Get<uint16_t>(in.data() + 4 + 3 * e);
    const auto r = static_cast<uint8_t>(in[4 + 3 * e + 2]);
    if (idx >= Hll::kRegisters || r > 64) return false;
    fn(idx, r);
  }
  return true;
}

// Merges an encoded HLL (any form) into *h; false if malformed.
bool MergeHllEncoded(std::string_view in, Hll* h) {
  if (IsExactHll(in)) {
    const size_t n = Get<uint16_t>(in.data() + 2);
    Hll other;
    uint64_t prev = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint64_t x = Get<uint64_t>(in.data() + 4 + 8 * i);
      if (i > 0 && x <= prev) return false;  // not ascending: not ours
      prev = x;
      other.AddHash(x);
    }
    h->Merge(other);
    return true;
  }
  auto& regs = h->mutable_registers();
  return ForEachRegister(in, [&](size_t i, uint8_t r) {
    if (r > regs[i]) regs[i] = r;
  });
}
}  // namespace

std::optional<ValueKind> KindOf(std::string_view in) {
  if (in.empty()) return std::nullopt;
  const auto k = static_cast<ValueKind>(in[0]);
  if (k == ValueKind::kAgg && in.size() == kAggSize) return k;
  if (k == ValueKind::kHll && (in.size() == kHllSize || (in.size() >= 4 && in[1] == kSparseTag) || IsExactHll(in))) {
    return k;
  }
  if (k == ValueKind::kSketch && in.size() >= 3) return k;
  if (k == ValueKind::kLast && in.size() == 17) return k;
  return std::nullopt;
}

// ---- QuantileSketch ----

namespace {
const double kGamma = (1 + QuantileSketch::kRelativeAccuracy) / (1 - QuantileSketch::kRelativeAccuracy);
const double kLogGamma = std::log(kGamma);
constexpr double kMinPositive = 1e-9;

int32_t BinOf(double v) { return static_cast<int32_t>(std::ceil(std::log(v) / kLogGamma)); }
double ValueOf(int32_t bin) { return 2.0 * std::pow(kGamma, bin) / (kGamma + 1.0); }

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
bool GetVarint(std::string_view in, size_t* pos, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= in.size()) return false;
    const uint8_t b = static_cast<uint8_t>(in[(*pos)++]);
    *v |= uint64_t{b & 0x7fu} << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}
uint64_t ZigZag(int32_t v) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(v)) << 1) ^ static_cast<uint64_t>(v >> 31);
}
int32_t UnZigZag(uint64_t v) { return static_cast<int32_t>((v >> 1) ^ (~(v & 1) + 1)); }

void EncodeBins(const std::map<int32_t, uint64_t>& bins, std::string* out) {
  PutVarint(out, bins.size());
  for (const auto& [b, c] : bins) {
    PutVarint(out, ZigZag(b));
    PutVarint(out, c);
  }
}
bool DecodeBins(std::string_view in, size_t* pos, std::map<int32_t, uint64_t>* bins, uint64_t* total) {
  uint64_t n;
  if (!GetVarint(in, pos, &n) || n > 1'000'000) return false;
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t b, c;
    if (!GetVarint(in, pos, &b) || !GetVarint(in, pos, &c)) return false;
    (*bins)[UnZigZag(b)] += c;
    *total += c;
  }
  return true;
}
}  // namespace

void QuantileSketch::Collapse(std::map<int32_t, uint64_t>* bins) {
  while (bins->size() > kMaxBins) {
    auto first = bins->begin();
    auto second = std::next(first);
    second->second += first->second;
    bins->erase(first);
  }
}

void QuantileSketch::Add(double v) {
  ++count_;
  if (v > kMinPositive) {
    ++pos_[BinOf(v)];
    if (pos_.size() > kMaxBins) Collapse(&pos_);
  } else if (v < -kMinPositive) {
    ++neg_[BinOf(-v)];
    if (neg_.size() > kMaxBins) Collapse(&neg_);
  } else {
    ++zeros_;
  }
}

void QuantileSketch::Merge(const QuantileSketch& o) {
  for (const auto& [b, c] : o.pos_) pos_[b] += c;
  for (const auto& [b, c] : o.neg_) neg_[b] += c;
  zeros_ += o.zeros_;
  count_ += o.count_;
  Collapse(&pos_);
  Collapse(&neg_);
}

std::optional<double> QuantileSketch::Quantile(double q) const {
  if (count_ == 0 || !(q >= 0 && q <= 1)) return std::nullopt;
  const double rank = q * static_cast<double>(count_ - 1);
  double seen = 0;
  for (auto it = neg_.rbegin(); it != neg_.rend(); ++it) {
    seen += static_cast<double>(it->second);
    if (seen > rank) return -ValueOf(it->first);
  }
  seen += static_cast<double>(zeros_);
  if (seen > rank) return 0.0;
  for (const auto& [b, c] : pos_) {
    seen += static_cast<double>(c);
    if (seen > rank) return ValueOf(b);
  }
  return pos_.empty() ? 0.0 : ValueOf(pos_.rbegin()->first);
}

void QuantileSketch::EncodeTo(std::string* out) const {
  out->push_back(static_cast<char>(ValueKind::kSketch));
  PutVarint(out, zeros_);
  EncodeBins(pos_, out);
  EncodeBins(neg_, out);
}

bool QuantileSketch::DecodeFrom(std::string_view in) {
  *this = QuantileSketch();
  if (KindOf(in) != ValueKind::kSketch) return false;
  size_t pos = 1;
  uint64_t total = 0;
  if (!GetVarint(in, &pos, &zeros_)) return false;
  total = zeros_;
  if (!DecodeBins(in, &pos, &pos_, &total) || !DecodeBins(in, &pos, &neg_, &total)) return false;
  count_ = total;
  return pos == in.size();
}

// ---- Partial ----

Partial::Partial(ValueKind k) : kind(k) {
  if (k == ValueKind::kHll) hll = std::make_unique<Hll>();
  if (k == ValueKind::kSketch) sketch = std::make_unique<QuantileSketch>();
}

std::string Partial::Encode() const {
  switch (kind) {
    case ValueKind::kAgg:
      return EncodeAgg(agg);
    case ValueKind::kHll:
      return EncodeHll(*hll);
    case ValueKind::kSketch: {
      std::string out;
      sketch->EncodeTo(&out);
      return out;
    }
    case ValueKind::kLast: {
      std::string out;
      out.push_back(static_cast<char>(ValueKind::kLast));
      Put(&out, last.time_ms);
      Put(&out, last.value);
      return out;
    }
  }
  return {};
}

void Partial::Merge(const Partial& o) {
  agg.Merge(o.agg);
  if (hll && o.hll) hll->Merge(*o.hll);
  if (sketch && o.sketch) sketch->Merge(*o.sketch);
  last.Merge(o.last);
}

bool Partial::MergeEncoded(std::string_view enc) {
  const auto k = KindOf(enc);
  if (!k || *k != kind) return false;
  switch (kind) {
    case ValueKind::kAgg: {
      Agg a;
      DecodeAgg(enc, &a);
      agg.Merge(a);
      return true;
    }
    case ValueKind::kHll:
      return MergeHllEncoded(enc, hll.get());
    case ValueKind::kSketch: {
      QuantileSketch s;
      if (!s.DecodeFrom(enc)) return false;
      sketch->Merge(s);
      return true;
    }
    case ValueKind::kLast: {
      Last l;
      l.time_ms = Get<int64_t>(enc.data() + 1);
      l.value = Get<double>(enc.data() + 9);
      last.Merge(l);
      return true;
    }
  }
  return false;
}

bool DecodeAgg(std::string_view in, Agg* out) {
  if (KindOf(in) != ValueKind::kAgg) return false;
  const char* p = in.data() + 1;
  out->count = Get<int64_t>(p);
  out->sum_micros = Get<int64_t>(p + 8);
  out->min = Get<double>(p + 16);
  out->max = Get<double>(p + 24);
  return true;
}

bool DecodeHll(std::string_view in, Hll* out) {
  if (KindOf(in) != ValueKind::kHll) return false;
  *out = Hll();
  return MergeHllEncoded(in, out);
}

bool MergeEncoded(std::string_view a, std::string_view b, std::string* out) {
  const auto ka = KindOf(a);
  if (!ka || ka != KindOf(b)) return false;
  if (*ka == ValueKind::kHll && a.size() == kHllSize && b.size() == kHllSize) {
    // Both dense: register-wise max in place.
    out->assign(a.data(), a.size());
    for (size_t i = 1; i < kHllSize; ++i) {
      if (static_cast<uint8_t>(b[i]) > static_cast<uint8_t>((*out)[i])) (*out)[i] = b[i];
    }
    return true;
  }
  Partial p(*ka);
  if (!p.MergeEncoded(a) || !p.MergeEncoded(b)) return false;
  *out = p.Encode();
  return true;
}

bool MergeEncodedMany(std::span<const std::string_view> parts, std::string* out) {
  if (parts.empty()) return false;
  const auto kind = KindOf(parts.front());
  if (!kind) return false;
  if (parts.size() == 1) {
    out->assign(parts.front().data(), parts.front().size());
    return true;
  }
  Partial p(*kind);
  for (const auto part : parts) {
    if (!p.MergeEncoded(part)) return false;
  }
  *out = p.Encode();
  return true;
}

}  // namespace kpistream::state
