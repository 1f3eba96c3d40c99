#include "services/partials_service.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <map>
#include <tuple>

#include "kpistream/internal/v1/partials.grpc.pb.h"
#include "state/aggregate.h"

namespace kpistream::services {

namespace {

namespace iv1 = kpistream::internal::v1;

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

class PartialsServiceImpl final : public iv1::PartialsService::Service {
 public:
  PartialsServiceImpl(ServingViewFn view, std::string replica_id, TokenAuthenticator* auth)
      : view_(std::move(view)), replica_id_(std::move(replica_id)), auth_(auth) {}

  grpc::Status Snapshot(grpc::ServerContext* ctx,
                        grpc::ServerReaderWriter<iv1::PartialsResponse, iv1::PartialsRequest>* stream) override {
    if (auto st = Authorize(auth_, *ctx, Scope::kRead); !st.ok()) return st;
    const ServingView view = view_();  // kept for the stream: a reload waits for it
    if (view.partials == nullptr || view.ids == nullptr) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "this kpid is not a replica (kafka.changelog is off): it serves no partials to peers");
    }
    iv1::PartialsRequest req;
    if (!stream->Read(&req)) return grpc::Status::OK;
    if (!req.has_open()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a stream must open first");
    auto snap = view.partials->Snapshot();
    if (!snap.ok()) return ToGrpc(snap.status());
    iv1::PartialsResponse opened;
    auto* o = opened.mutable_opened();
    o->set_replica(replica_id_);
    for (const auto& p : (*snap)->positions()) {
      if (p.partition.empty()) continue;  // not an owned partition
      auto* pos = o->add_positions();
      pos->set_partition(p.partition);
      pos->set_next_offset(p.next_offset);
      pos->set_newest_event_ms(p.newest_event_ms);
    }
    for (const auto& m : (*snap)->missing()) o->add_missing_partitions(m);
    if (!stream->Write(opened)) return grpc::Status::OK;
    while (stream->Read(&req)) {
      if (!req.has_read()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a stream opens once");
      if (auto st = Read(*view.catalog, *view.ids, **snap, req.read(), stream); !st.ok()) return st;
    }
    return grpc::Status::OK;
  }

 private:
  // One read: every measure's partials, merged across the partitions per
  // (measure, tier, bucket, group), then sent in chunks.
  static grpc::Status Read(const kpi::Catalog& catalog, const kpi::StateIds& ids, const query::PartialSnapshot& snap,
                           const iv1::ReadPartials& read,
                           grpc::ServerReaderWriter<iv1::PartialsResponse, iv1::PartialsRequest>* stream) {
    const std::vector<std::string> partitions(read.partitions().begin(), read.partitions().end());
    std::map<std::tuple<uint32_t, uint32_t, int64_t, std::string>, std::string> merged;
    size_t bytes = 0;  // approximate, of merged
    std::string out;
    bool malformed = false;
    for (int mi = 0; mi < read.measures_size(); ++mi) {
      const auto& mr = read.measures(mi);
      const kpi::MeasureDef* def = nullptr;
      size_t index = 0;
      for (; index < catalog.measures.size(); ++index) {
        if (catalog.measures[index].name == mr.name()) {
          def = &catalog.measures[index];
          break;
        }
      }
      if (def == nullptr || kpi::MeasureShape(*def) != mr.shape()) {
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            fmt::format("measure '{}' ({}) is not in this replica's catalog under that shape: the "
                                        "replicas run different catalogs (a rolling change?)",
                                        mr.name(), mr.shape()));
      }
      const uint32_t measure_id = ids.measures[index];
      for (const auto& r : mr.ranges()) {
        if (r.tier() > static_cast<uint32_t>(kpi::Tier::kDay)) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, fmt::format("no tier {}", r.tier()));
        }
        auto st = snap.ScanPartitions(
            partitions, static_cast<kpi::Tier>(r.tier()), measure_id, r.begin(), r.end(),
            [&](int64_t bucket, std::string_view gk, std::string_view enc) {
              auto [it, fresh] = merged.try_emplace({static_cast<uint32_t>(mi), r.tier(), bucket, std::string(gk)});
              if (fresh) {
                it->second.assign(enc);
                bytes += gk.size() + enc.size() + 64;
              } else if (state::MergeEncoded(it->second, enc, &out)) {
                it->second.swap(out);
              } else {
                malformed = true;
              }
            });
        if (st.code() == absl::StatusCode::kFailedPrecondition) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(st.message()));
        }
        if (!st.ok()) return ToGrpc(st);
        if (malformed) return grpc::Status(grpc::StatusCode::DATA_LOSS, "malformed stored partial");
        if (bytes > kPartialsMaxReadBytes) {
          return grpc::Status(
              grpc::StatusCode::RESOURCE_EXHAUSTED,
              fmt::format("the partials this query reads pass {} MiB on one replica: use a larger step, "
                          "a shorter range, a filter, or fewer group-by dimensions",
                          kPartialsMaxReadBytes >> 20));
        }
      }
    }
    iv1::PartialsResponse resp;
    bytes = 0;
    for (auto& [key, value] : merged) {
      auto* p = resp.mutable_chunk()->add_partials();
      p->set_measure(std::get<0>(key));
      p->set_tier(std::get<1>(key));
      p->set_bucket(std::get<2>(key));
      p->set_group_key(std::get<3>(key));
      bytes += std::get<3>(key).size() + value.size() + 24;
      p->set_value(std::move(value));
      if (bytes >= kPartialsChunkBytes) {
        if (!stream->Write(resp)) return grpc::Status::OK;  // the asker left
        resp.Clear();
        bytes = 0;
      }
    }
    resp.mutable_chunk()->set_last(true);
    stream->Write(resp);
    return grpc::Status::OK;
  }

  ServingViewFn view_;
  const std::string replica_id_;
  TokenAuthenticator* auth_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakePartialsService(ServingViewFn view, std::string replica_id,
                                                   TokenAuthenticator* auth) {
  return std::make_unique<PartialsServiceImpl>(std::move(view), std::move(replica_id), auth);
}

}  // namespace kpistream::services
