// The alert leader (services/alert_leader.h) on a real broker, in process:
// two replicas' leaders over their own stores. One leads and the other
// follows its writes (tombstones included); a leader fenced by a newer
// producer of the shared transactional id steps down at once and, still
// holding the election, leads again after its back-off; a graceful stop
// hands the lead over with everything written.
#include "services/alert_leader.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "ingest/changelog.h"
#include "tests/harness.h"

namespace kpistream::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Node {
  std::unique_ptr<state::Store> store;
  std::unique_ptr<services::AlertLeader> leader;
  std::atomic<int> followed{0}, led{0}, lost{0};
};

bool WaitFor(const std::function<bool()>& cond, std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!cond() && Clock::now() < deadline) std::this_thread::sleep_for(50ms);
  return cond();
}

std::map<std::string, std::string> Alerts(const state::Store& store) {
  std::map<std::string, std::string> out;
  EXPECT_TRUE(store
                  .ScanAlerts("I/", [&](std::string_view k,
                                        std::string_view v) { out.emplace(std::string(k), std::string(v)); })
                  .ok());
  return out;
}

TEST(AlertLeaderIT, OneLeadsOthersFollowAFencedLeaderStepsDownAndAStopHandsOver) {
  TempDir dir("alert-leader");
  KafkaBroker broker(dir.path());
  ASSERT_TRUE(broker.ok()) << broker.error();
  ingest::EngineOptions kafka;
  kafka.brokers = broker.bootstrap();
  kafka.group_id = "leader-it";
  kafka.changelog = true;
  auto open = [&](Node& n, const std::string& name) {
    auto store = state::Store::Open({.path = dir.path() + "/" + name});
    ASSERT_TRUE(store.ok()) << store.status();
    n.store = std::move(*store);
    auto leader = services::AlertLeader::Start(
        kafka, n.store.get(),
        {.followed = [&n] { ++n.followed; }, .leading = [&n](bool on) { ++(on ? n.led : n.lost); }});
    ASSERT_TRUE(leader.ok()) << leader.status();
    n.leader = std::move(*leader);
  };
  Node a, b;
  open(a, "a");
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(WaitFor([&] { return a.leader->leader(); }, 60s)) << "the only replica never led";
  open(b, "b");
  ASSERT_FALSE(HasFatalFailure());
  std::this_thread::sleep_for(2s);
  EXPECT_TRUE(a.leader->leader());
  EXPECT_FALSE(b.leader->leader()) << "two leaders";
  EXPECT_EQ(b.leader->Replicate({{"I/b", "from a follower"}}).code(), absl::StatusCode::kFailedPrecondition);

  // The leader's writes reach the follower's store, a deletion included.
  ASSERT_TRUE(a.leader->Replicate({{"I/x", "one"}, {"I/y", "two"}}).ok());
  ASSERT_TRUE(a.leader->Replicate({{"I/y", std::nullopt}}).ok());
  EXPECT_EQ(Alerts(*a.store), (std::map<std::string, std::string>{{"I/x", "one"}}));
  ASSERT_TRUE(WaitFor([&] { return Alerts(*b.store) == std::map<std::string, std::string>{{"I/x", "one"}}; }, 20s));
  EXPECT_GT(b.followed.load(), 0);

  // A newer producer of the shared id fences the leader: its next write
  // fails, it stops leading at once, and nothing of that write is kept.
  {
    auto fencer = ingest::Changelog::Create(kafka, "." + std::string(services::kAlertStateTopic), 10000, true);
    ASSERT_TRUE(fencer.ok()) << fencer.status();
  }
  const auto fenced = a.leader->Replicate({{"I/z", "never"}});
  EXPECT_EQ(fenced.code(), absl::StatusCode::kFailedPrecondition) << fenced;
  EXPECT_FALSE(a.leader->leader());
  ASSERT_TRUE(WaitFor([&] { return a.lost.load() == 1; }, 10s));
  EXPECT_EQ(Alerts(*a.store).count("I/z"), 0u);
  // It still holds the election's partition: after its back-off it leads
  // again (fencing the fencer) and writes.
  ASSERT_TRUE(WaitFor([&] { return a.leader->leader(); }, 30s));
  EXPECT_EQ(a.led.load(), 2);
  EXPECT_FALSE(b.leader->leader());
  ASSERT_TRUE(a.leader->Replicate({{"I/w", "four"}}).ok());

  // A graceful stop hands the lead over at once, with every write.
  const auto stopped_at = Clock::now();
  a.leader->Stop();
  ASSERT_TRUE(WaitFor([&] { return b.leader->leader(); }, 30s));
  std::printf("[ measure  ] lead handed over %.1f s after a graceful stop\n",
              std::chrono::duration<double>(Clock::now() - stopped_at).count());
  EXPECT_EQ(Alerts(*b.store), (std::map<std::string, std::string>{{"I/w", "four"}, {"I/x", "one"}}));
  ASSERT_TRUE(b.leader->Replicate({{"I/v", "five"}}).ok());
  b.leader->Stop();
}

}  // namespace
}  // namespace kpistream::testing
