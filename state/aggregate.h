// Mergeable partial aggregates: the values stored per (measure, partition,
// bucket, group key). Every type here is associative and commutative under
// Merge, so partials from any partitions, buckets or replays-free batches can
// be combined in any order with bit-identical results.
//
// Thread-safety: plain values; no shared state.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kpistream::state {

// Sums are kept in fixed point (1e-6 of the unit) so that addition is exact,
// associative and independent of arrival order: replaying the same events in
// any partition interleaving yields the same bytes. Range: +-9.2e12 units.
inline constexpr double kMicrosPerUnit = 1e6;
inline constexpr double kMaxAbsValue = 9.0e12;

// Converts a value to micro-units. REQUIRES: finite and |v| <= kMaxAbsValue.
int64_t ToMicros(double v);
double FromMicros(int64_t micros);

// count / sum / min / max; average = sum / count.
struct Agg {
  int64_t count = 0;
  int64_t sum_micros = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();

  void Add(double v, int64_t v_micros) {
    ++count;
    sum_micros += v_micros;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  void Merge(const Agg& o) {
    count += o.count;
    sum_micros += o.sum_micros;
    if (o.min < min) min = o.min;
    if (o.max > max) max = o.max;
  }
  double sum() const { return FromMicros(sum_micros); }
  bool operator==(const Agg&) const = default;
};

// HyperLogLog distinct-count sketch, dense, 2^14 registers (standard error
// ~0.81 %). Merge = register-wise max. Hashes must come from HashForSketch so
// that sketches built by different processes merge.
class Hll {
 public:
  static constexpr int kPrecision = 14;
  static constexpr size_t kRegisters = size_t{1} << kPrecision;

  Hll() : regs_(kRegisters, 0) {}
  void AddHash(uint64_t h);
  void Merge(const Hll& o);
  double Estimate() const;
  const std::vector<uint8_t>& registers() const { return regs_; }
  std::vector<uint8_t>& mutable_registers() { return regs_; }
  bool operator==(const Hll&) const = default;

 private:
  std::vector<uint8_t> regs_;
};

// Stable 64-bit hash (XXH3, seed 0): identical across processes and builds.
uint64_t HashForSketch(std::string_view s);

// A stored partial: either an Agg or an Hll.
enum class ValueKind : uint8_t { kAgg = 1, kHll = 2 };

// Wire encoding (little-endian, fixed width; no size_t):
//   kAgg: kind(1) count(8) sum_micros(8) min(8) max(8)  = 33 bytes
//   kHll: kind(1) registers(2^14)
std::string EncodeAgg(const Agg& a);
std::string EncodeHll(const Hll& h);
// Returns false on malformed input.
bool DecodeAgg(std::string_view in, Agg* out);
bool DecodeHll(std::string_view in, Hll* out);
std::optional<ValueKind> KindOf(std::string_view in);

// Merges two encoded partials of the same kind into *out. Returns false if the
// kinds differ or either is malformed.
bool MergeEncoded(std::string_view a, std::string_view b, std::string* out);

}  // namespace kpistream::state
