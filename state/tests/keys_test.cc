#include "state/keys.h"

#include <gtest/gtest.h>

namespace kpistream::state {
namespace {

TEST(KeysTest, AggKeyRoundTrip) {
  std::string g;
  AppendGroupValue(&g, "search");
  AppendGroupValue(&g, "");
  AppendGroupValue(&g, std::string(300, 'x'));
  const auto key = AggKey(Tier::kHour, 42, SourceId(3, 17), -3600, g);
  AggKeyParts p;
  ASSERT_TRUE(ParseAggKey(key, &p));
  EXPECT_EQ(p.tier, Tier::kHour);
  EXPECT_EQ(p.measure_id, 42u);
  EXPECT_EQ(StreamOf(p.source), 3u);
  EXPECT_EQ(PartitionOf(p.source), 17);
  EXPECT_EQ(p.bucket, -3600);
  std::vector<std::string_view> vals;
  ASSERT_TRUE(SplitGroupKey(p.group_key, &vals));
  ASSERT_EQ(vals.size(), 3u);
  EXPECT_EQ(vals[0], "search");
  EXPECT_EQ(vals[1], "");
  EXPECT_EQ(vals[2].size(), 300u);
}

TEST(KeysTest, ByteOrderIsTimeOrder) {
  const int64_t buckets[] = {-86400, -60, 0, 60, 1700000000, 4102444800};
  for (size_t i = 1; i < std::size(buckets); ++i) {
    EXPECT_LT(AggKey(Tier::kFine, 1, 1, buckets[i - 1], "zzz"), AggKey(Tier::kFine, 1, 1, buckets[i], ""));
  }
  // Series are contiguous: every key of measure 1 sorts before measure 2.
  EXPECT_LT(AggKey(Tier::kFine, 1, SourceId(9, 9), 4102444800, "z"), AggKey(Tier::kFine, 2, 0, -1, ""));
}

TEST(KeysTest, MalformedInputsAreRejected) {
  AggKeyParts p;
  EXPECT_FALSE(ParseAggKey("short", &p));
  std::string bad_tier = AggKey(Tier::kFine, 1, 1, 0, "");
  bad_tier[0] = 9;
  EXPECT_FALSE(ParseAggKey(bad_tier, &p));
  std::vector<std::string_view> vals;
  EXPECT_FALSE(SplitGroupKey(std::string("\x05"
                                         "ab",
                                         3),
                             &vals));
  EXPECT_FALSE(SplitGroupKey(std::string("\xff\xff\xff\xff\xff\xff", 6), &vals));
  uint64_t src;
  EXPECT_FALSE(ParseOffsetKey("1234567", &src));
  EXPECT_TRUE(ParseOffsetKey(OffsetKey(SourceId(1, 2)), &src));
  EXPECT_EQ(src, SourceId(1, 2));
}

}  // namespace
}  // namespace kpistream::state
