#include "state/aggregate.h"

#include <xxhash.h>

#include <bit>
#include <cmath>
#include <cstring>

namespace kpistream::state {

int64_t ToMicros(double v) { return static_cast<int64_t>(std::llround(v * kMicrosPerUnit)); }
double FromMicros(int64_t micros) { return static_cast<double>(micros) / kMicrosPerUnit; }

void Hll::AddHash(uint64_t h) {
  const size_t idx = h >> (64 - kPrecision);
  const uint64_t rest = (h << kPrecision) | (uint64_t{1} << (kPrecision - 1));
  const uint8_t rank = static_cast<uint8_t>(std::countl_zero(rest) + 1);
  if (rank > regs_[idx]) regs_[idx] = rank;
}

void Hll::Merge(const Hll& o) {
  for (size_t i = 0; i < kRegisters; ++i) {
    if (o.regs_[i] > regs_[i]) regs_[i] = o.regs_[i];
  }
}

double Hll::Estimate() const {
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

std::string EncodeHll(const Hll& h) {
  std::string out;
  out.reserve(kHllSize);
  out.push_back(static_cast<char>(ValueKind::kHll));
  out.append(reinterpret_cast<const char*>(h.registers().data()), Hll::kRegisters);
  return out;
}

std::optional<ValueKind> KindOf(std::string_view in) {
  if (in.empty()) return std::nullopt;
  const auto k = static_cast<ValueKind>(in[0]);
  if (k == ValueKind::kAgg && in.size() == kAggSize) return k;
  if (k == ValueKind::kHll && in.size() == kHllSize) return k;
  return std::nullopt;
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
  std::memcpy(out->mutable_registers().data(), in.data() + 1, Hll::kRegisters);
  return true;
}

bool MergeEncoded(std::string_view a, std::string_view b, std::string* out) {
  const auto ka = KindOf(a);
  if (!ka || ka != KindOf(b)) return false;
  if (*ka == ValueKind::kAgg) {
    Agg x, y;
    DecodeAgg(a, &x);
    DecodeAgg(b, &y);
    x.Merge(y);
    *out = EncodeAgg(x);
    return true;
  }
  // Register-wise max in place, without materialising two sketches.
  out->assign(a.data(), a.size());
  for (size_t i = 1; i < kHllSize; ++i) {
    if (static_cast<uint8_t>(b[i]) > static_cast<uint8_t>((*out)[i])) (*out)[i] = b[i];
  }
  return true;
}

}  // namespace kpistream::state
