#include "state/aggregate.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

namespace kpistream::state {
namespace {

TEST(AggTest, MergeIsOrderIndependentAndExact) {
  // 0.1 is not representable in binary floating point; fixed-point sums make
  // any interleaving give the same bytes.
  std::vector<double> vals;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10000; ++i) vals.push_back(static_cast<double>(rng() % 100000) / 100.0);
  Agg forward, backward, split_a, split_b;
  for (double v : vals) forward.Add(v, ToMicros(v));
  for (auto it = vals.rbegin(); it != vals.rend(); ++it) backward.Add(*it, ToMicros(*it));
  for (size_t i = 0; i < vals.size(); ++i) (i % 3 ? split_a : split_b).Add(vals[i], ToMicros(vals[i]));
  split_b.Merge(split_a);
  EXPECT_EQ(forward, backward);
  EXPECT_EQ(forward, split_b);
  EXPECT_EQ(EncodeAgg(forward), EncodeAgg(split_b));
  EXPECT_EQ(forward.count, 10000);
}

// A sum past the fixed-point range is marked, never wrapped, and stays
// marked through merges and encoding.
TEST(AggTest, SumOverflowIsStickyNeverWrapped) {
  Agg a;
  for (int i = 0; i < 3; ++i) a.Add(kMaxAbsValue, ToMicros(kMaxAbsValue));  // 2.7e13 > 9.2e12
  EXPECT_TRUE(a.overflowed());
  EXPECT_EQ(a.count, 3);
  Agg b;
  b.Add(-kMaxAbsValue, ToMicros(-kMaxAbsValue));
  b.Merge(a);
  EXPECT_TRUE(b.overflowed());
  Agg decoded;
  ASSERT_TRUE(DecodeAgg(EncodeAgg(b), &decoded));
  EXPECT_TRUE(decoded.overflowed());
  Agg neg;
  for (int i = 0; i < 2; ++i) neg.Add(-kMaxAbsValue, ToMicros(-kMaxAbsValue));
  EXPECT_TRUE(neg.overflowed());
  Agg fine;  // just inside the range
  fine.Add(kMaxAbsValue, ToMicros(kMaxAbsValue));
  fine.Add(-kMaxAbsValue, ToMicros(-kMaxAbsValue));
  fine.Add(kMaxAbsValue, ToMicros(kMaxAbsValue));
  EXPECT_FALSE(fine.overflowed());
  EXPECT_EQ(fine.sum(), kMaxAbsValue);
}

TEST(AggTest, MinMaxAndEmpty) {
  Agg a;
  EXPECT_EQ(a.count, 0);
  a.Add(3.5, ToMicros(3.5));
  a.Add(-1.25, ToMicros(-1.25));
  EXPECT_DOUBLE_EQ(a.min, -1.25);
  EXPECT_DOUBLE_EQ(a.max, 3.5);
  EXPECT_DOUBLE_EQ(a.sum(), 2.25);
  Agg empty;
  a.Merge(empty);
  EXPECT_DOUBLE_EQ(a.min, -1.25);
  EXPECT_EQ(a.count, 2);
}

TEST(AggTest, EncodeDecodeRoundTripAndRejectsGarbage) {
  Agg a;
  a.Add(12.5, ToMicros(12.5));
  Agg b;
  ASSERT_TRUE(DecodeAgg(EncodeAgg(a), &b));
  EXPECT_EQ(a, b);
  EXPECT_FALSE(DecodeAgg("", &b));
  EXPECT_FALSE(DecodeAgg(std::string("\x01short", 6), &b));
  EXPECT_FALSE(KindOf(std::string(10, '\x07')).has_value());
}

TEST(AggTest, MergeEncodedRefusesMixedKinds) {
  Agg a;
  Hll h;
  std::string out;
  EXPECT_FALSE(MergeEncoded(EncodeAgg(a), EncodeHll(h), &out));
  EXPECT_TRUE(MergeEncoded(EncodeAgg(a), EncodeAgg(a), &out));
}

TEST(HllTest, ErrorWithinBoundAtOneMillion) {
  Hll h;
  constexpr int kN = 1000000;
  for (int i = 0; i < kN; ++i) h.AddHash(HashForSketch("user-" + std::to_string(i)));
  const double err = std::abs(h.Estimate() - kN) / kN;
  EXPECT_LT(err, 0.02) << h.Estimate();
}

// Up to kExactMax values a distinct count is exact, as count(DISTINCT) is:
// every count from 1 to kExactMax, over many value sets (HLL's linear
// counting was off by one for ~26 % of 100-value sets).
TEST(HllTest, SmallCardinalitiesAreExact) {
  EXPECT_EQ(Hll().Estimate(), 0);
  for (int set = 0; set < 200; ++set) {
    Hll h;
    for (int i = 0; i < 300; ++i) h.AddHash(HashForSketch(fmt::format("s{}-u{}", set, i % 100)));
    ASSERT_EQ(h.Estimate(), 100) << set;
  }
  Hll h;
  for (size_t i = 0; i < Hll::kExactMax; ++i) {
    h.AddHash(HashForSketch("v" + std::to_string(i)));
    ASSERT_EQ(h.Estimate(), static_cast<double>(i + 1));
  }
  EXPECT_TRUE(h.exact());
  h.AddHash(HashForSketch("one more"));
  EXPECT_FALSE(h.exact());
  EXPECT_NEAR(h.Estimate(), Hll::kExactMax + 1, 0.02 * Hll::kExactMax);
}

// The same values merged in any grouping and order give the same bytes,
// across the exact/dense switch, and register-encoded partials written
// before exact counting still merge.
TEST(HllTest, MergeIsOrderIndependentAcrossTheSwitch) {
  std::vector<Hll> parts(6);
  for (int i = 0; i < 1500; ++i) parts[static_cast<size_t>(i * 7 % 6)].AddHash(HashForSketch("w" + std::to_string(i)));
  for (const auto& p : parts) EXPECT_TRUE(p.exact());
  Hll forward, backward;
  for (const auto& p : parts) forward.Merge(p);
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) backward.Merge(*it);
  EXPECT_FALSE(forward.exact());
  EXPECT_EQ(EncodeHll(forward), EncodeHll(backward));
  std::vector<std::string> enc;
  for (const auto& p : parts) enc.push_back(EncodeHll(p));
  std::vector<std::string_view> views(enc.begin(), enc.end());
  std::string many;
  ASSERT_TRUE(MergeEncodedMany(views, &many));
  EXPECT_EQ(many, EncodeHll(forward));
  // A register-encoded (legacy) partial merged with an exact one.
  Hll legacy = parts[0];
  legacy.mutable_registers();  // now dense
  std::string mixed;
  ASSERT_TRUE(MergeEncoded(EncodeHll(legacy), EncodeHll(parts[1]), &mixed));
  Hll expect = parts[0];
  expect.Merge(parts[1]);
  expect.mutable_registers();
  EXPECT_EQ(mixed, EncodeHll(expect));
  // Garbage in the exact form is refused.
  std::string bad = EncodeHll(parts[2]);
  std::swap_ranges(bad.begin() + 4, bad.begin() + 12, bad.begin() + 12);  // first two hashes: no longer ascending
  Hll out;
  EXPECT_FALSE(DecodeHll(bad, &out));
}

TEST(HllTest, MergeEqualsUnion) {
  Hll a, b, both;
  for (int i = 0; i < 50000; ++i) {
    const auto hsh = HashForSketch("x" + std::to_string(i));
    (i % 2 ? a : b).AddHash(hsh);
    both.AddHash(hsh);
  }
  a.Merge(b);
  EXPECT_EQ(a, both);
  std::string merged;
  Hll c, d;
  for (int i = 0; i < 100; ++i) c.AddHash(HashForSketch("y" + std::to_string(i)));
  ASSERT_TRUE(MergeEncoded(EncodeHll(c), EncodeHll(d), &merged));
  Hll back;
  ASSERT_TRUE(DecodeHll(merged, &back));
  EXPECT_EQ(back, c);
}

}  // namespace
}  // namespace kpistream::state

namespace kpistream::state {
namespace {

TEST(QuantileSketchTest, RelativeErrorWithinOnePercent) {
  QuantileSketch s;
  std::vector<double> vals;
  std::mt19937_64 rng(3);
  std::lognormal_distribution<double> dist(5.0, 1.2);  // latency-like
  for (int i = 0; i < 200000; ++i) {
    vals.push_back(dist(rng));
    s.Add(vals.back());
  }
  std::sort(vals.begin(), vals.end());
  for (double q : {0.5, 0.9, 0.95, 0.99, 0.999}) {
    const double exact = vals[static_cast<size_t>(q * (vals.size() - 1))];
    const double est = *s.Quantile(q);
    EXPECT_LE(std::abs(est - exact) / exact, 0.01) << "q=" << q;
  }
}

TEST(QuantileSketchTest, MergeEncodeAndEdgeValues) {
  QuantileSketch a, b, all;
  for (int i = 1; i <= 1000; ++i) {
    const double v = i % 10 == 0 ? -i : (i % 7 == 0 ? 0 : i);
    (i % 2 ? a : b).Add(v);
    all.Add(v);
  }
  a.Merge(b);
  EXPECT_EQ(a, all);
  std::string enc;
  all.EncodeTo(&enc);
  QuantileSketch back;
  ASSERT_TRUE(back.DecodeFrom(enc));
  EXPECT_EQ(back, all);
  EXPECT_EQ(back.count(), 1000u);
  EXPECT_LT(*all.Quantile(0), -900);
  EXPECT_FALSE(QuantileSketch().Quantile(0.5).has_value());
  EXPECT_FALSE(back.DecodeFrom(enc.substr(0, enc.size() - 1)));
  // Merging encoded partials through the store's merge path.
  std::string e1, e2, merged;
  QuantileSketch x, y;
  x.Add(10);
  y.Add(20);
  x.EncodeTo(&e1);
  y.EncodeTo(&e2);
  ASSERT_TRUE(MergeEncoded(e1, e2, &merged));
  QuantileSketch m;
  ASSERT_TRUE(m.DecodeFrom(merged));
  EXPECT_EQ(m.count(), 2u);
}

TEST(QuantileSketchTest, BinsStayBounded) {
  QuantileSketch s;
  for (int i = -300; i < 300; ++i) s.Add(std::pow(10.0, i / 10.0));  // 60 decades
  std::string enc;
  s.EncodeTo(&enc);
  EXPECT_LT(enc.size(), 4 * QuantileSketch::kMaxBins + 16);
  EXPECT_NEAR(*s.Quantile(0.99) / std::pow(10.0, 29.3), 1.0, 0.02);
}

TEST(LastTest, LatestEventTimeWinsRegardlessOfOrder) {
  Partial a(ValueKind::kLast), b(ValueKind::kLast);
  a.last.Add(100, 1.5);
  a.last.Add(300, 7);
  b.last.Add(200, 9);
  b.last.Add(300, 6);
  Partial ab(ValueKind::kLast), ba(ValueKind::kLast);
  ASSERT_TRUE(ab.MergeEncoded(a.Encode()));
  ASSERT_TRUE(ab.MergeEncoded(b.Encode()));
  ASSERT_TRUE(ba.MergeEncoded(b.Encode()));
  ASSERT_TRUE(ba.MergeEncoded(a.Encode()));
  EXPECT_EQ(ab.last, ba.last);
  EXPECT_EQ(ab.last.value, 7);
  EXPECT_FALSE(ab.MergeEncoded(EncodeAgg(Agg())));
}

}  // namespace
}  // namespace kpistream::state

namespace kpistream::state {
namespace {

TEST(HllTest, SmallSketchesEncodeSparselyAndMergeWithDenseOnes) {
  Hll small, big;
  for (int i = 0; i < 7; ++i) small.AddHash(HashForSketch("feature-" + std::to_string(i)));
  for (int i = 0; i < 100000; ++i) big.AddHash(HashForSketch("u" + std::to_string(i)));
  const auto es = EncodeHll(small), eb = EncodeHll(big);
  EXPECT_EQ(es.size(), 4 + 8 * 7u);  // exact: a hash per value
  EXPECT_EQ(eb.size(), 1 + Hll::kRegisters);
  Hll back;
  ASSERT_TRUE(DecodeHll(es, &back));
  EXPECT_EQ(back, small);
  std::string merged;
  ASSERT_TRUE(MergeEncoded(es, eb, &merged));
  Hll m, want = big;
  want.Merge(small);
  ASSERT_TRUE(DecodeHll(merged, &m));
  EXPECT_EQ(m, want);
  ASSERT_TRUE(MergeEncoded(es, es, &merged));
  EXPECT_EQ(merged, es);
  EXPECT_FALSE(DecodeHll(es.substr(0, es.size() - 1), &back));
}

}  // namespace
}  // namespace kpistream::state

namespace kpistream::state {
namespace {

// The store's merge operator folds all of a key's operands at once; that
// must give the same bytes as merging them two at a time, for every kind.
TEST(MergeEncodedManyTest, EqualsPairwiseFoldForEveryKind) {
  std::mt19937_64 rng(11);
  for (const auto kind : {ValueKind::kAgg, ValueKind::kHll, ValueKind::kSketch, ValueKind::kLast}) {
    std::vector<std::string> encoded;
    for (int op = 0; op < 9; ++op) {
      Partial p(kind);
      // Operand 4 is a dense HLL, the others sparse.
      const int n = op == 4 ? 20000 : 1 + static_cast<int>(rng() % 50);
      for (int i = 0; i < n; ++i) {
        const double v = static_cast<double>(rng() % 100000) / 100.0;
        p.agg.Add(v, ToMicros(v));
        if (p.hll) p.hll->AddHash(rng());
        if (p.sketch) p.sketch->Add(v);
        p.last.Add(static_cast<int64_t>(rng() % 1000), v);
      }
      encoded.push_back(p.Encode());
    }
    std::string folded = encoded[0];
    for (size_t i = 1; i < encoded.size(); ++i) {
      std::string next;
      ASSERT_TRUE(MergeEncoded(folded, encoded[i], &next));
      folded = std::move(next);
    }
    const std::vector<std::string_view> parts(encoded.begin(), encoded.end());
    std::string all;
    ASSERT_TRUE(MergeEncodedMany(parts, &all));
    EXPECT_EQ(all, folded) << "kind " << static_cast<int>(kind);
    ASSERT_TRUE(MergeEncodedMany(std::span(parts).first(1), &all));
    EXPECT_EQ(all, encoded[0]);
  }
  const std::string agg = EncodeAgg(Agg()), hll = EncodeHll(Hll());
  const std::vector<std::string_view> mixed{agg, hll};
  std::string out;
  EXPECT_FALSE(MergeEncodedMany(mixed, &out));
  const std::vector<std::string_view> truncated{hll, std::string_view(hll).substr(0, 3)};
  EXPECT_FALSE(MergeEncodedMany(truncated, &out));
  EXPECT_FALSE(MergeEncodedMany({}, &out));
}

}  // namespace
}  // namespace kpistream::state
