#include "ingest/topic_match.h"

#include <gtest/gtest.h>

#include "ingest/engine.h"

namespace kpistream::ingest {
namespace {

TEST(TopicMatcherTest, ANamedTopicWinsThenTheFirstMatchingPattern) {
  const std::vector<TopicBinding> b = {
      {"^ads\\..*", kpi::Family::kCampaign},
      {"ads.crm", kpi::Family::kCrm},
      {"^ads\\.(eu|us)$", kpi::Family::kProduct},
      {"^.*", kpi::Family::kProduct},
  };
  auto m = TopicMatcher::Create(b, "ads.dlq");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)->has_patterns());
  EXPECT_EQ((*m)->Find("ads.crm"), &b[1]);
  EXPECT_EQ((*m)->Find("ads.eu"), &b[0]);  // the first pattern in config order
  EXPECT_EQ((*m)->Find("ads.eu"), &b[0]);  // and again, from the cache
  EXPECT_EQ((*m)->Find("web.events"), &b[3]);
  // Patterns are searched, anchored only where they say so.
  EXPECT_EQ((*m)->Find("xads.eu"), &b[3]);
  // The dead-letter topic and Kafka's internal topics are never an input.
  EXPECT_EQ((*m)->Find("ads.dlq"), nullptr);
  EXPECT_EQ((*m)->Find("__consumer_offsets"), nullptr);
  EXPECT_EQ((*m)->Find("__transaction_state"), nullptr);
}

TEST(TopicMatcherTest, WithoutPatternsOnlyNamesMatch) {
  const std::vector<TopicBinding> b = {{"kpi.campaign", kpi::Family::kCampaign}};
  auto m = TopicMatcher::Create(b, "kpi.dlq");
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE((*m)->has_patterns());
  EXPECT_EQ((*m)->Find("kpi.campaign"), &b[0]);
  EXPECT_EQ((*m)->Find("kpi.campaignx"), nullptr);
}

TEST(TopicMatcherTest, ABadPatternIsAnError) {
  const std::vector<TopicBinding> b = {{"^ads.(", kpi::Family::kCampaign}};
  auto m = TopicMatcher::Create(b, "dlq");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("^ads.("), std::string_view::npos) << m.status();
}

TEST(CheckTopicTest, NamesKafkaRefusesAndPatternsThatDoNotCompile) {
  EXPECT_EQ(CheckTopic("ads.events_v1-eu"), std::nullopt);
  EXPECT_EQ(CheckTopic("^ads\\..*"), std::nullopt);
  ASSERT_TRUE(CheckTopic(""));
  ASSERT_TRUE(CheckTopic("ads events"));
  EXPECT_NE(CheckTopic("ads events")->find("a pattern starts with '^'"), std::string::npos);
  EXPECT_TRUE(CheckTopic(".."));
  EXPECT_TRUE(CheckTopic(std::string(250, 'a')));
  EXPECT_EQ(CheckTopic(std::string(249, 'a')), std::nullopt);
  ASSERT_TRUE(CheckTopic("^ads[")) << "an unclosed bracket";
  EXPECT_NE(CheckTopic("^ads[")->find("not a POSIX extended regular expression"), std::string::npos);
}

TEST(ExactTopicRegexTest, MatchesTheNameOnly) {
  EXPECT_EQ(ExactTopicRegex("kpi.dlq"), "^kpi\\.dlq$");
  const std::vector<TopicBinding> b = {{ExactTopicRegex("kpi.dlq"), kpi::Family::kCampaign}};
  auto m = TopicMatcher::Create(b, "");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->Find("kpi.dlq"), &b[0]);
  EXPECT_EQ((*m)->Find("kpiXdlq"), nullptr);
  EXPECT_EQ((*m)->Find("kpi.dlq2"), nullptr);
}

}  // namespace

TEST(TopicMatcherTest, APatternNeverReadsTheGroupsChangelogs) {
  const std::vector<TopicBinding> b = {{"^.*", kpi::Family::kCampaign}};
  auto m = TopicMatcher::Create(b, "kpi.dlq", "kpistream");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->Find("kpistream.pp.campaign.changelog"), nullptr);
  EXPECT_EQ((*m)->Find("pp.campaign"), &b[0]);
  // Another group's changelog, or a user topic named like one, is a topic.
  EXPECT_EQ((*m)->Find("other.pp.campaign.changelog"), &b[0]);
}

}  // namespace kpistream::ingest
