#include "state/aggregate.h"

#include <gtest/gtest.h>

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

TEST(HllTest, SmallCardinalitiesAreNearlyExact) {
  Hll h;
  for (int i = 0; i < 1000; ++i) h.AddHash(HashForSketch("u" + std::to_string(i % 100)));
  EXPECT_NEAR(h.Estimate(), 100, 1.0);
  EXPECT_EQ(Hll().Estimate(), 0);
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
