#include "ingest/rfc3339.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "absl/time/time.h"

namespace kpistream::ingest {
namespace {

TEST(Rfc3339Test, ReadsTheCommonSpelling) {
  auto t = ParseCommonRfc3339("2026-11-30T16:39:04.123Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->seconds, 1796056744);
  EXPECT_EQ(t->nanos, 123000000);
  t = ParseCommonRfc3339("2026-11-30T22:09:04+05:30");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->seconds, 1796056744);
  EXPECT_EQ(t->nanos, 0);
  t = ParseCommonRfc3339("1969-12-31T23:59:59.999999999Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->seconds, -1);
  EXPECT_EQ(t->nanos, 999999999);
  // Left to absl: lower case, a leap second, ten fraction digits, a day
  // the month lacks, no offset, a space for T.
  for (const char* other : {"2026-11-30t16:39:04Z", "2026-11-30T16:39:04z", "2016-12-31T23:59:60Z",
                            "2026-11-30T16:39:04.1234567890Z", "2026-02-30T00:00:00Z", "2026-11-30T16:39:04",
                            "2026-11-30 16:39:04Z", "2026-11-30T16:39:04.Z", "+2026-11-30T16:39:04Z"}) {
    EXPECT_FALSE(ParseCommonRfc3339(other)) << other;
  }
}

// For every input it takes, the same instant as absl::ParseTime (which
// declared sources fall back to): random strings near the form.
TEST(Rfc3339Test, AgreesWithAbslWhereverItAnswers) {
  std::mt19937_64 rng(7);
  const std::string alphabet = "0123456789-:T.Z+zt ";
  int answered = 0;
  for (int i = 0; i < 300000; ++i) {
    std::string s = absl::FormatTime("%Y-%m-%d%ET%H:%M:%E*S%Ez",
                                     absl::FromUnixNanos(static_cast<int64_t>(rng() % (int64_t{1} << 62))),
                                     absl::FixedTimeZone(static_cast<int>(rng() % 100000) - 50000));
    if (rng() % 8 == 0) s.back() = 'Z';
    for (int m = static_cast<int>(rng() % 3); m > 0; --m) {
      const size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0:
          s[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          s.erase(at, 1);
          break;
        default:
          s.insert(at, 1, alphabet[rng() % alphabet.size()]);
      }
    }
    absl::Time want;
    std::string why;
    const bool ok = absl::ParseTime(absl::RFC3339_full, s, &want, &why);
    const auto got = ParseCommonRfc3339(s);
    if (!got) continue;
    ++answered;
    ASSERT_TRUE(ok) << s << " read here, refused by absl: " << why;
    EXPECT_EQ(absl::FromUnixSeconds(got->seconds) + absl::Nanoseconds(got->nanos), want) << s;
  }
  EXPECT_GT(answered, 100000);
}

}  // namespace
}  // namespace kpistream::ingest
