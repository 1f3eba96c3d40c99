#include "services/cluster.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "kpistream/internal/v1/partials.grpc.pb.h"

namespace kpistream::services {

namespace iv1 = kpistream::internal::v1;
using Clock = std::chrono::steady_clock;
using Interval = std::pair<int64_t, int64_t>;  // [begin, end)

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  if (!in || !(ss << in.rdbuf())) {
    return absl::InvalidArgumentError(fmt::format("cluster: cannot read {} {}", what, path));
  }
  return ss.str();
}

// Sorted, disjoint, adjacent ones joined.
std::vector<Interval> Union(std::vector<Interval> v) {
  std::sort(v.begin(), v.end());
  std::vector<Interval> out;
  for (const auto& i : v) {
    if (i.first >= i.second) continue;
    if (!out.empty() && i.first <= out.back().second) {
      out.back().second = std::max(out.back().second, i.second);
    } else {
      out.push_back(i);
    }
  }
  return out;
}

// The parts of `want` (a union) that `have` (a union) does not cover.
std::vector<Interval> Subtract(const std::vector<Interval>& want, const std::vector<Interval>& have) {
  std::vector<Interval> out;
  for (auto [b, e] : want) {
    for (const auto& [hb, he] : have) {
      if (he <= b || hb >= e) continue;
      if (hb > b) out.emplace_back(b, hb);
      b = std::max(b, he);
      if (b >= e) break;
    }
    if (b < e) out.emplace_back(b, e);
  }
  return out;
}

using Stream = grpc::ClientReaderWriter<iv1::PartialsRequest, iv1::PartialsResponse>;

// One peer's part of a snapshot: its open stream and what was read.
struct PeerPart {
  std::string address;
  std::unique_ptr<grpc::ClientContext> ctx;
  std::unique_ptr<Stream> stream;
  iv1::SnapshotOpened opened;
  absl::Status open_status = absl::UnavailableError("not opened");
  bool cancelled = false;               // not opened within open_timeout_ms: left out
  std::vector<std::string> partitions;  // the ones this peer answers for
  struct Entry {
    int64_t bucket;
    std::string group_key;
    std::string value;
  };
  // (measure id, tier) -> partials by bucket, and the buckets read so far.
  std::map<std::pair<uint32_t, int>, std::vector<Entry>> read;
  std::map<std::pair<uint32_t, int>, std::vector<Interval>> covered;
  bool failed = false;

  // Every read is done (or failed): cancelling ends the peer's side at
  // once, without a round trip, whatever state it is in.
  void Close() {
    if (!stream) return;
    ctx->TryCancel();
    (void)stream->Finish();
    stream.reset();
  }
};

}  // namespace

struct ClusterPartialSource::Rep {
  ClusterOptions options;
  const query::PartialSource* local = nullptr;
  const kpi::Catalog* catalog = nullptr;
  std::unordered_map<uint32_t, size_t> measure_index;  // state id -> catalog index
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::string token;
  mutable Stats stats;

  mutable std::mutex mu;
  mutable std::map<std::string, std::shared_ptr<grpc::Channel>> channels;
  mutable std::set<std::string> self_addresses;  // addresses that answered with this replica's id
  mutable std::vector<std::string> dns_addresses;
  mutable Clock::time_point dns_resolved{};  // when the resolve of dns_addresses began
  // NewestEventMs's last read: (topic, newest event ms) per partition.
  mutable std::mutex newest_mu;
  mutable std::vector<std::pair<std::string, int64_t>> newest;
  mutable Clock::time_point newest_at{};
  // The last missing set waited out, and when (ClusterPartialSource's doc).
  mutable std::set<std::string> waited_missing;
  mutable Clock::time_point waited_at{};

  std::shared_ptr<grpc::Channel> ChannelTo(const std::string& address) const {
    std::lock_guard<std::mutex> l(mu);
    auto& ch = channels[address];
    if (!ch) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(64 << 20);
      // A peer that restarts is read again within a second, not after
      // gRPC's default reconnect backoff (up to 120 s), during which every
      // answer would list its partitions as missing.
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
      if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
      ch = grpc::CreateCustomChannel(address, credentials, args);
    }
    return ch;
  }

  std::vector<std::string> Addresses() const {
    std::vector<std::string> out = options.peers;
    if (!options.peers_dns.empty()) {
      bool stale;
      {
        std::lock_guard<std::mutex> l(mu);
        stale = dns_resolved == Clock::time_point{} || Clock::now() - dns_resolved > std::chrono::seconds(5);
      }
      // Resolved outside the lock: a slow resolver holds up this call only.
      // Concurrent calls may each resolve; only an answer that began after
      // the published one's is kept, so an older one never wins.
      std::optional<std::vector<std::string>> fresh;
      const Clock::time_point began = Clock::now();
      if (stale) fresh = Resolve(options.peers_dns);
      std::lock_guard<std::mutex> l(mu);
      if (fresh && began > dns_resolved) {
        std::sort(fresh->begin(), fresh->end());
        // A pod's address may now be another pod's: learn who is who again.
        if (*fresh != dns_addresses) self_addresses.clear();
        dns_addresses = std::move(*fresh);
        dns_resolved = began;
      }
      out.insert(out.end(), dns_addresses.begin(), dns_addresses.end());
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    std::lock_guard<std::mutex> l(mu);
    std::erase_if(out, [&](const std::string& a) { return self_addresses.count(a) > 0; });
    return out;
  }

  // Every address of "name:port" (none when it does not resolve: the
  // answer then lists the partitions nobody reported).
  static std::vector<std::string> Resolve(const std::string& name_port) {
    const auto colon = name_port.rfind(':');
    if (colon == std::string::npos) return {};
    const std::string host = name_port.substr(0, colon), port = name_port.substr(colon + 1);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) return {};
    std::vector<std::string> out;
    for (auto* a = res; a; a = a->ai_next) {
      char buf[INET6_ADDRSTRLEN] = {};
      if (a->ai_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, buf, sizeof buf);
        out.push_back(fmt::format("{}:{}", buf, port));
      } else if (a->ai_family == AF_INET6) {
        inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, buf, sizeof buf);
        out.push_back(fmt::format("[{}]:{}", buf, port));
      }
    }
    freeaddrinfo(res);
    return out;
  }

  // Opens the stream and reads the peer's positions.
  // REQUIRES: peer->ctx set (Snapshot cancels it from another thread).
  void Open(PeerPart* peer) const {
    iv1::PartialsService::Stub stub(ChannelTo(peer->address));
    peer->stream = stub.Snapshot(peer->ctx.get());
    iv1::PartialsRequest req;
    req.mutable_open();
    iv1::PartialsResponse resp;
    const bool read = peer->stream->Write(req) && peer->stream->Read(&resp);
    if (!read || !resp.has_opened()) {
      peer->failed = true;
      if (read) peer->ctx->TryCancel();  // still open: Finish would wait for the deadline
      const auto st = peer->stream->Finish();
      peer->stream.reset();
      peer->open_status = absl::UnavailableError(
          fmt::format("replica at {} did not open a snapshot: {}", peer->address, st.error_message()));
      return;
    }
    peer->opened = std::move(*resp.mutable_opened());
    peer->open_status = absl::OkStatus();
  }
};

namespace {

class ClusterSnapshot final : public query::PartialSnapshot {
 public:
  ClusterSnapshot(const ClusterPartialSource::Rep& rep, std::unique_ptr<query::PartialSnapshot> local,
                  std::vector<std::unique_ptr<PeerPart>> peers)
      : rep_(rep), local_(std::move(local)), peers_(std::move(peers)) {}
  ~ClusterSnapshot() override {
    for (auto& p : peers_) p->Close();
  }

  // Decides who answers for each partition; returns the missing ones.
  void Assign() {
    struct Claim {
      int who = -1;  // -1: this replica; else index into peers_
      query::PartitionPosition pos;
    };
    std::map<std::string, Claim> chosen;
    std::set<std::string> known(local_->missing().begin(), local_->missing().end());
    for (const auto& p : local_->positions()) {
      if (p.partition.empty()) continue;
      query::PartitionPosition pos = p;
      pos.owner = rep_.options.replica_id;
      chosen[p.partition] = {-1, pos};
    }
    for (size_t i = 0; i < peers_.size(); ++i) {
      const auto& o = peers_[i]->opened;
      known.insert(o.missing_partitions().begin(), o.missing_partitions().end());
      for (const auto& p : o.positions()) {
        auto it = chosen.find(p.partition());
        if (it != chosen.end() && it->second.pos.next_offset >= p.next_offset()) continue;
        chosen[p.partition()] = {static_cast<int>(i),
                                 {0, p.next_offset(), p.newest_event_ms(), p.partition(), o.replica()}};
      }
    }
    for (auto& [name, claim] : chosen) {
      known.erase(name);
      if (claim.who < 0) {
        local_partitions_.push_back(name);
      } else {
        peers_[static_cast<size_t>(claim.who)]->partitions.push_back(name);
      }
      positions_.push_back(std::move(claim.pos));
    }
    missing_.assign(known.begin(), known.end());
  }

  uint64_t sequence() const override { return local_->sequence(); }
  const std::vector<query::PartitionPosition>& positions() const override { return positions_; }
  const std::vector<std::string>& missing() const override { return missing_; }

  absl::Status Prefetch(const std::vector<query::MeasurePieces>& reads) const override {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& peer : peers_) {
      if (peer->partitions.empty()) continue;
      if (auto st = Fetch(peer.get(), reads); !st.ok()) return st;
    }
    return absl::OkStatus();
  }

  absl::Status Collect(uint32_t measure_id, const std::vector<kpi::WindowPiece>& pieces,
                       const query::PartialVisitor& visit) const override {
    bool bad = false;
    auto scan = [&](int64_t, std::string_view gk, std::string_view enc) {
      if (!bad && !visit(gk, enc)) bad = true;
    };
    if (!local_partitions_.empty()) {
      for (const auto& piece : pieces) {
        if (auto st = local_->ScanPartitions(local_partitions_, piece.tier, measure_id, piece.begin, piece.end, scan);
            !st.ok()) {
          return st;
        }
        if (bad) return absl::DataLossError(fmt::format("malformed partial of measure id {}", measure_id));
      }
    }
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& peer : peers_) {
      if (peer->partitions.empty()) continue;
      if (auto st = Fetch(peer.get(), {{measure_id, pieces}}); !st.ok()) return st;
      for (const auto& piece : pieces) {
        auto it = peer->read.find({measure_id, static_cast<int>(piece.tier)});
        if (it == peer->read.end()) continue;
        const auto& entries = it->second;
        auto e = std::lower_bound(entries.begin(), entries.end(), piece.begin,
                                  [](const PeerPart::Entry& x, int64_t b) { return x.bucket < b; });
        for (; e != entries.end() && e->bucket < piece.end; ++e) scan(e->bucket, e->group_key, e->value);
        if (bad) {
          return absl::DataLossError(
              fmt::format("malformed partial of measure id {} from replica at {}", measure_id, peer->address));
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  // Reads from the peer whatever of `reads` it has not read yet, in one
  // round trip. REQUIRES: mu_ held.
  absl::Status Fetch(PeerPart* peer, const std::vector<query::MeasurePieces>& reads) const {
    if (peer->failed) return absl::UnavailableError(fmt::format("replica at {} failed mid-answer", peer->address));
    std::map<std::pair<uint32_t, int>, std::vector<Interval>> want;
    for (const auto& r : reads) {
      for (const auto& p : r.pieces) want[{r.measure_id, static_cast<int>(p.tier)}].emplace_back(p.begin, p.end);
    }
    iv1::PartialsRequest req;
    auto* rp = req.mutable_read();
    for (const auto& name : peer->partitions) rp->add_partitions(name);
    std::vector<std::pair<uint32_t, int>> keys;  // per (measure, tier) requested: its ReadPartials.measures index
    std::map<uint32_t, int> measure_at;
    // (measure, tier) -> the buckets this read adds, marked read once it
    // has arrived whole.
    std::vector<std::pair<std::pair<uint32_t, int>, std::vector<Interval>>> adding;
    for (auto& [key, ranges] : want) {
      auto unread = Subtract(Union(std::move(ranges)), peer->covered[key]);
      if (unread.empty()) continue;
      auto mi = rep_.measure_index.find(key.first);
      if (mi == rep_.measure_index.end()) return absl::InternalError(fmt::format("no measure id {}", key.first));
      auto [at, fresh] = measure_at.try_emplace(key.first, rp->measures_size());
      if (fresh) {
        const auto& def = rep_.catalog->measures[mi->second];
        auto* m = rp->add_measures();
        m->set_name(def.name);
        m->set_shape(kpi::MeasureShape(def));
        keys.push_back(key);
      }
      auto* m = rp->mutable_measures(at->second);
      for (const auto& [b, e] : unread) {
        auto* r = m->add_ranges();
        r->set_tier(static_cast<uint32_t>(key.second));
        r->set_begin(b);
        r->set_end(e);
      }
      adding.emplace_back(key, std::move(unread));
    }
    if (rp->measures_size() == 0) return absl::OkStatus();
    std::vector<uint32_t> ids(measure_at.size());
    for (const auto& [id, at] : measure_at) ids[static_cast<size_t>(at)] = id;
    std::set<std::pair<uint32_t, int>> touched;
    // still_open: the peer sent something it should not have; Finish alone
    // would then wait for it until the deadline. Otherwise the stream has
    // ended, and Finish returns the peer's own status.
    auto fail = [&](const char* what, bool still_open = false) {
      peer->failed = true;
      if (still_open) peer->ctx->TryCancel();
      const auto st = peer->stream->Finish();
      peer->stream.reset();
      rep_.stats.peer_failures.fetch_add(1, std::memory_order_relaxed);
      const auto code = static_cast<absl::StatusCode>(st.error_code());
      // UNAVAILABLE (retried on a new snapshot) only for a peer that went
      // away; its refusals, and a deadline that passed, are the answer's.
      const bool theirs = code == absl::StatusCode::kFailedPrecondition || code == absl::StatusCode::kInvalidArgument ||
                          code == absl::StatusCode::kDataLoss || code == absl::StatusCode::kResourceExhausted ||
                          code == absl::StatusCode::kDeadlineExceeded;
      const std::string msg =
          fmt::format("replica at {} ({}): {}: {}", peer->address, peer->opened.replica(), what, st.error_message());
      return theirs ? absl::Status(code, msg) : absl::UnavailableError(msg);
    };
    if (!peer->stream->Write(req)) return fail("the read could not be sent");
    iv1::PartialsResponse resp;
    while (true) {
      if (!peer->stream->Read(&resp)) return fail("the read was cut short");
      if (!resp.has_chunk()) return fail("an answer that is not partials", true);
      for (auto& p : *resp.mutable_chunk()->mutable_partials()) {
        if (p.measure() >= ids.size()) return fail("a partial of a measure not asked for", true);
        const std::pair<uint32_t, int> key{ids[p.measure()], static_cast<int>(p.tier())};
        peer->read[key].push_back({p.bucket(), std::move(*p.mutable_group_key()), std::move(*p.mutable_value())});
        touched.insert(key);
      }
      if (resp.chunk().last()) break;
    }
    for (auto& [key, unread] : adding) {
      auto& cov = peer->covered[key];
      cov.insert(cov.end(), unread.begin(), unread.end());
      cov = Union(std::move(cov));
    }
    for (const auto& key : touched) {
      auto& v = peer->read[key];
      std::stable_sort(v.begin(), v.end(),
                       [](const PeerPart::Entry& a, const PeerPart::Entry& b) { return a.bucket < b.bucket; });
    }
    return absl::OkStatus();
  }

  const ClusterPartialSource::Rep& rep_;
  std::unique_ptr<query::PartialSnapshot> local_;
  std::vector<std::unique_ptr<PeerPart>> peers_;
  std::vector<std::string> local_partitions_;
  std::vector<query::PartitionPosition> positions_;
  std::vector<std::string> missing_;
  mutable std::mutex mu_;  // peers' streams and what they read
};

}  // namespace

ClusterPartialSource::ClusterPartialSource(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
ClusterPartialSource::~ClusterPartialSource() = default;

absl::StatusOr<std::unique_ptr<ClusterPartialSource>> ClusterPartialSource::Create(const ClusterOptions& options,
                                                                                   const query::PartialSource& local,
                                                                                   const kpi::Catalog& catalog,
                                                                                   const kpi::StateIds& ids) {
  if (options.peers.empty() && options.peers_dns.empty()) {
    return absl::InvalidArgumentError("cluster: no peers (cluster.peers or cluster.peers_dns)");
  }
  if (options.replica_id.empty()) return absl::InvalidArgumentError("cluster: this replica has no id");
  auto rep = std::make_unique<Rep>();
  rep->options = options;
  rep->local = &local;
  rep->catalog = &catalog;
  for (size_t i = 0; i < ids.measures.size(); ++i) rep->measure_index[ids.measures[i]] = i;
  if (options.tls_ca_file.empty()) {
    rep->credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    auto ca = ReadFile(options.tls_ca_file, "tls_ca_file");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = std::move(*ca);
    if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
      auto cert = ReadFile(options.tls_cert_file, "tls_cert_file");
      if (!cert.ok()) return cert.status();
      auto key = ReadFile(options.tls_key_file, "tls_key_file");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = std::move(*cert);
      ssl.pem_private_key = std::move(*key);
    }
    rep->credentials = grpc::SslCredentials(ssl);
  }
  if (!options.token_file.empty()) {
    auto token = ReadFile(options.token_file, "token_file");
    if (!token.ok()) return token.status();
    std::string t = std::move(*token);
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
    if (t.empty()) return absl::InvalidArgumentError(fmt::format("cluster: {} is empty", options.token_file));
    rep->token = std::move(t);
  }
  return std::unique_ptr<ClusterPartialSource>(new ClusterPartialSource(std::move(rep)));
}

uint64_t ClusterPartialSource::Sequence() const { return rep_->local->Sequence(); }

const ClusterPartialSource::Stats& ClusterPartialSource::stats() const { return rep_->stats; }

int64_t ClusterPartialSource::NewestEventMs(const std::function<bool(const std::string& topic)>& topic_filter) const {
  std::lock_guard<std::mutex> l(rep_->newest_mu);
  if (rep_->newest_at == Clock::time_point{} || Clock::now() - rep_->newest_at > std::chrono::milliseconds(500)) {
    auto snap = Snapshot();
    if (snap.ok()) {
      rep_->newest.clear();
      for (const auto& p : (*snap)->positions()) {
        rep_->newest.emplace_back(p.partition.substr(0, p.partition.rfind('[')), p.newest_event_ms);
      }
      rep_->newest_at = Clock::now();
    }
  }
  int64_t out = 0;
  for (const auto& [topic, ms] : rep_->newest) {
    if (ms > out && (!topic_filter || topic_filter(topic))) out = ms;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<query::PartialSnapshot>> ClusterPartialSource::Snapshot() const {
  const Rep& rep = *rep_;
  rep.stats.snapshots.fetch_add(1, std::memory_order_relaxed);
  const auto wait_until = Clock::now() + std::chrono::milliseconds(rep.options.max_wait_ms);
  while (true) {
    std::vector<std::unique_ptr<PeerPart>> peers;
    for (const auto& address : rep.Addresses()) {
      auto peer = std::make_unique<PeerPart>();
      peer->address = address;
      peer->ctx = std::make_unique<grpc::ClientContext>();
      peer->ctx->set_deadline(std::chrono::system_clock::now() +
                              std::chrono::milliseconds(rep.options.read_timeout_ms));
      if (!rep.token.empty()) peer->ctx->AddMetadata("authorization", "Bearer " + rep.token);
      peers.push_back(std::move(peer));
    }
    // Opened in parallel; one that takes longer than open_timeout_ms is
    // cancelled and left out.
    std::vector<std::future<void>> opening;
    for (auto& p : peers) opening.push_back(std::async(std::launch::async, [&rep, peer = p.get()] { rep.Open(peer); }));
    auto local = rep.local->Snapshot();
    const auto open_deadline = Clock::now() + std::chrono::milliseconds(rep.options.open_timeout_ms);
    for (size_t i = 0; i < peers.size(); ++i) {
      // Cancelling ends the open's Write or Read at once.
      if (opening[i].wait_until(open_deadline) != std::future_status::ready) {
        peers[i]->cancelled = true;
        peers[i]->ctx->TryCancel();
      }
      opening[i].get();
    }
    if (!local.ok()) {
      for (auto& p : peers) p->Close();
      return local.status();
    }
    std::vector<std::unique_ptr<PeerPart>> open;
    for (auto& p : peers) {
      rep.stats.peer_reads.fetch_add(1, std::memory_order_relaxed);
      if (!p->open_status.ok() || p->cancelled) {
        rep.stats.peer_failures.fetch_add(1, std::memory_order_relaxed);
        p->Close();
        continue;
      }
      if (p->opened.replica() == rep.options.replica_id) {
        std::lock_guard<std::mutex> l(rep.mu);
        rep.self_addresses.insert(p->address);
        p->Close();
        continue;
      }
      open.push_back(std::move(p));
    }
    auto snap = std::make_unique<ClusterSnapshot>(rep, std::move(*local), std::move(open));
    snap->Assign();
    const auto& missing = snap->missing();
    if (missing.empty()) return snap;
    const std::set<std::string> now_missing(missing.begin(), missing.end());
    {
      std::lock_guard<std::mutex> l(rep.mu);
      const bool waited_out =
          now_missing == rep.waited_missing && Clock::now() - rep.waited_at < std::chrono::seconds(10);
      if (waited_out || Clock::now() >= wait_until) {
        if (!waited_out) {
          rep.waited_missing = now_missing;
          rep.waited_at = Clock::now();
        }
        rep.stats.incomplete.fetch_add(1, std::memory_order_relaxed);
        return snap;
      }
    }
    rep.stats.waits.fetch_add(1, std::memory_order_relaxed);
    snap.reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace kpistream::services
