// Cluster-wide answers (scale-out, docs/SCALE_OUT.md "Cluster-wide
// answers"): a PartialSource over every replica's owned partitions. A
// snapshot opens one PartialsService stream per peer (services/
// partials_service.h), each a consistent read of that peer's state, and
// reads this replica's own snapshot; partials are merged by the query
// layer exactly as local ones are (every partial is mergeable).
//
// Each partition is answered for once:
//   - every replica reports the partitions it owns and has restored, with
//     their next offsets; a partition two replicas both report (one has
//     just been assigned it, the other not yet told) is read from the one
//     further ahead, this replica on a tie;
//   - partitions that some replica knows of (Kafka's metadata) and none
//     reports are missing; while any are, the snapshot is taken again every
//     100 ms, up to max_wait_ms (a rebalance moving them), and the answer
//     then lists what is still missing (KpiAnswer::missing_partitions).
//     A missing set already waited out within the last 10 s is not waited
//     for again: a replica that is gone stays gone until its session
//     times out, and answers must not all take max_wait_ms meanwhile.
//   - a peer that does not open its snapshot within open_timeout_ms is
//     left out (its partitions are then missing, unless another replica
//     reports them); one that goes away after opening fails the answer
//     with UNAVAILABLE, and QueryService evaluates it again on a new
//     snapshot. A peer's refusal (another catalog: FAILED_PRECONDITION; a
//     read too large: RESOURCE_EXHAUSTED) and DEADLINE_EXCEEDED are the
//     answer's error, not retried.
//   - so a snapshot takes at most max_wait_ms + open_timeout_ms + 100 ms
//     to open, and its reads at most read_timeout_ms per peer.
//
// Consistency: each replica's part is one commit of that replica; the
// parts are read at nearly the same time, not at one cluster-wide instant
// (there is none). Positions name the replica that answered for each
// partition (the consistency token). Sequence() is the local store's: a
// peer's commit is seen at this replica's next commit or at the next
// second (QueryService's cache), whichever is first; so a cached answer
// (or a BatchGetKpis mixing cached and fresh ones) may lag a peer by up to
// that.
//
// Thread-safety: the source and its snapshots are safe from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kpi/catalog.h"
#include "query/partial_source.h"

namespace kpistream::services {

struct ClusterOptions {
  // Every replica's gRPC address, "host:port" (this one's may be listed:
  // a peer that reports this replica's id is skipped), and/or a DNS name
  // "name:port" whose every address is a replica (a headless Service),
  // resolved again at most every 5 s.
  std::vector<std::string> peers;
  std::string peers_dns;
  std::string replica_id;  // this replica's id (its group.instance.id); REQUIRED
  int64_t open_timeout_ms = 1000;
  int64_t read_timeout_ms = 30000;  // one answer's reads from one peer (its stream's deadline)
  int64_t max_wait_ms = 2000;       // for partitions no replica reports
  // TLS to peers: the CA that signed their certificates (empty: plaintext),
  // this replica's client certificate for peers that require one, and the
  // name to check in their certificates (empty: the address's host).
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;
  // A file holding the bearer token sent to peers (scope read); empty: none.
  std::string token_file;
};

class ClusterPartialSource final : public query::PartialSource {
 public:
  // INVALID_ARGUMENT: no peers, no replica id, or TLS/token files that
  // cannot be read. REQUIRES: local, catalog and ids outlive the source.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ClusterPartialSource>> Create(const ClusterOptions& options,
                                                                                    const query::PartialSource& local,
                                                                                    const kpi::Catalog& catalog,
                                                                                    const kpi::StateIds& ids);
  ~ClusterPartialSource() override;

  uint64_t Sequence() const override;
  absl::StatusOr<std::unique_ptr<query::PartialSnapshot>> Snapshot() const override;

  // The newest event time (ms since the epoch) of the partitions any
  // replica reports, of the topics `topic_filter` accepts (null: all): the
  // alert rules' event-time clock and their absence and freshness checks
  // with replicas. Read from a snapshot at most 500 ms old. 0: none.
  int64_t NewestEventMs(const std::function<bool(const std::string& topic)>& topic_filter) const;

  struct Stats {
    std::atomic<uint64_t> snapshots{0};
    std::atomic<uint64_t> peer_reads{0};     // peer streams opened
    std::atomic<uint64_t> peer_failures{0};  // peers left out or failed mid-answer
    std::atomic<uint64_t> waits{0};          // snapshots taken again for missing partitions
    std::atomic<uint64_t> incomplete{0};     // snapshots that ended with partitions missing
  };
  const Stats& stats() const;

  struct Rep;  // cluster.cc's; its snapshots read it

 private:
  explicit ClusterPartialSource(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace kpistream::services
