// Mergeable partial aggregates: the values stored per (measure, partition,
// bucket, group key). Every type here is associative and commutative under
// Merge, so partials from any partitions, buckets or replays-free batches can
// be combined in any order with bit-identical results.
//
// Thread-safety: plain values; no shared state.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
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
//
// A sum whose running total leaves the fixed-point range (|sum| > 9.2e12
// units, e.g. bytes over a month) is never wrapped into a wrong number: it
// becomes kSumOverflow for good (sticky through merges and encoding), and
// the query layer answers OUT_OF_RANGE for it.
struct Agg {
  static constexpr int64_t kSumOverflow = std::numeric_limits<int64_t>::min();

  int64_t count = 0;
  int64_t sum_micros = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();

  void Add(double v, int64_t v_micros) {
    ++count;
    AddMicros(v_micros);
    if (v < min) min = v;
    if (v > max) max = v;
  }
  void Merge(const Agg& o) {
    count += o.count;
    if (o.overflowed()) {
      sum_micros = kSumOverflow;
    } else {
      AddMicros(o.sum_micros);
    }
    if (o.min < min) min = o.min;
    if (o.max > max) max = o.max;
  }
  bool overflowed() const { return sum_micros == kSumOverflow; }
  double sum() const { return FromMicros(sum_micros); }  // REQUIRES: !overflowed()
  bool operator==(const Agg&) const = default;

 private:
  void AddMicros(int64_t v) {
    if (overflowed()) return;
    if (__builtin_add_overflow(sum_micros, v, &sum_micros) || sum_micros == kSumOverflow) sum_micros = kSumOverflow;
  }
};

// Distinct count: exact while small, then a HyperLogLog sketch.
//
// Up to kExactMax distinct values it keeps their 64-bit hashes, sorted, and
// counts them exactly (collisions of 64-bit hashes are negligible below
// billions): a daily-active count of 100 reads 100, as a SQL
// count(DISTINCT) would. Past kExactMax it turns into a dense HyperLogLog
// with 2^14 registers (standard error ~0.81 %; Flajolet et al. 2007, with
// linear counting for small ranges). The switch is decided by the union of
// the hashes alone, so Merge stays associative and commutative: any merge
// order of the same partials gives the same state, bit for bit. Hashes must
// come from HashForSketch so that sketches built by different processes
// merge.
class Hll {
 public:
  static constexpr int kPrecision = 14;
  static constexpr size_t kRegisters = size_t{1} << kPrecision;
  static constexpr size_t kExactMax = 1024;

  void AddHash(uint64_t h);
  void Merge(const Hll& o);
  // Exact: the number of values; dense: the HLL estimate.
  double Estimate() const;
  bool exact() const { return regs_.empty(); }
  // Exact form: the values' hashes, sorted, unique.
  const std::vector<uint64_t>& hashes() const { return hashes_; }
  // Dense form (converts an exact one): the registers, for decoding and
  // merging register-encoded partials.
  std::vector<uint8_t>& mutable_registers();
  const std::vector<uint8_t>& registers() const { return regs_; }  // empty while exact
  bool operator==(const Hll&) const = default;

 private:
  void ToDense();
  void AddToRegisters(uint64_t h);
  std::vector<uint64_t> hashes_;  // while exact
  std::vector<uint8_t> regs_;     // once dense (kRegisters)
};

// Stable 64-bit hash (XXH3, seed 0): identical across processes and builds.
uint64_t HashForSketch(std::string_view s);

// DDSketch-style quantile sketch: logarithmic bins with relative accuracy
// kRelativeAccuracy (every quantile estimate is within 1 % of a value that
// is really at that rank). Mergeable by adding bin counts; encodes
// deterministically (sorted bins). Bins beyond kMaxBins collapse the lowest
// ones, keeping high quantiles exact to the bound.
class QuantileSketch {
 public:
  static constexpr double kRelativeAccuracy = 0.01;
  static constexpr size_t kMaxBins = 2048;

  void Add(double v);
  void Merge(const QuantileSketch& o);
  // q in [0, 1]; nullopt when empty.
  std::optional<double> Quantile(double q) const;
  uint64_t count() const { return count_; }
  bool operator==(const QuantileSketch&) const = default;

  void EncodeTo(std::string* out) const;
  bool DecodeFrom(std::string_view in);

 private:
  void Collapse(std::map<int32_t, uint64_t>* bins);
  std::map<int32_t, uint64_t> pos_;  // bin index -> count, for v > 0
  std::map<int32_t, uint64_t> neg_;  // for -v, v < 0
  uint64_t zeros_ = 0;
  uint64_t count_ = 0;
};

// The last value by event time (ties: the larger value, so the result does
// not depend on arrival order).
struct Last {
  int64_t time_ms = std::numeric_limits<int64_t>::min();
  double value = 0;
  void Add(int64_t t, double v) {
    if (t > time_ms || (t == time_ms && v > value)) {
      time_ms = t;
      value = v;
    }
  }
  void Merge(const Last& o) { Add(o.time_ms, o.value); }
  bool empty() const { return time_ms == std::numeric_limits<int64_t>::min(); }
  bool operator==(const Last&) const = default;
};

// A stored partial: one of these kinds.
enum class ValueKind : uint8_t { kAgg = 1, kHll = 2, kSketch = 3, kLast = 4 };

// An in-memory partial of any kind (only the member of its kind is used).
struct Partial {
  ValueKind kind = ValueKind::kAgg;
  Agg agg;  // kAgg; also counts events for every kind
  std::unique_ptr<Hll> hll;
  std::unique_ptr<QuantileSketch> sketch;
  Last last;

  explicit Partial(ValueKind k = ValueKind::kAgg);
  std::string Encode() const;
  // Merges an encoded partial of the same kind; false if malformed.
  bool MergeEncoded(std::string_view enc);
  void Merge(const Partial& o);
};

// Wire encoding (little-endian, fixed width; no size_t):
//   kAgg: kind(1) count(8) sum_micros(8) min(8) max(8)  = 33 bytes
//   kHll: kind(1) registers(2^14); or kind(1) 'S' n(u16) n x (index(u16)
//         rank(u8)) while few registers are set; or, exact, kind(1) 'X'
//         n(u16) n x hash(u64), sorted
std::string EncodeAgg(const Agg& a);
std::string EncodeHll(const Hll& h);
// Returns false on malformed input.
bool DecodeAgg(std::string_view in, Agg* out);
bool DecodeHll(std::string_view in, Hll* out);
std::optional<ValueKind> KindOf(std::string_view in);

// Merges two encoded partials of the same kind into *out. Returns false if the
// kinds differ or either is malformed.
bool MergeEncoded(std::string_view a, std::string_view b, std::string* out);
// Merges any number (>= 1) of encoded partials of one kind into *out: each is
// decoded once and the result encoded once. Merging them two at a time
// instead re-encodes every intermediate result, which for HLLs is a 16 KiB
// register scan per operand. Returns false if the kinds differ or any is
// malformed.
bool MergeEncodedMany(std::span<const std::string_view> parts, std::string* out);

}  // namespace kpistream::state
