// kpistream.internal.v1.PartialsService (proto/kpistream/internal/v1/
// partials.proto): the partial aggregates of the partitions this replica
// owns, for a peer that answers for the whole cluster (services/cluster.h).
//
// One stream is one snapshot of the local state: opened with the positions
// of the owned partitions and the ones it lacks, then any number of reads,
// each returning the partials of some measures over chosen partitions,
// merged per (tier, bucket, group) across those partitions, in chunks of
// at most kChunkBytes. Callers need the `read` scope when tokens are on.
//
// Errors: INVALID_ARGUMENT for a stream that does not open first or reads
// a partition the snapshot does not hold; RESOURCE_EXHAUSTED for a read
// over kPartialsMaxReadBytes; FAILED_PRECONDITION for a
// measure this replica's catalog does not hold under that name and shape
// (a rolling change of the catalog); UNAVAILABLE when this kpid is not a
// replica (kafka.changelog off).
//
// Thread-safety: the service is safe from gRPC's threads.
#pragma once

#include <grpcpp/impl/service_type.h>

#include <memory>
#include <string>

#include "services/grpc_auth.h"
#include "services/grpc_server.h"

namespace kpistream::services {

inline constexpr size_t kPartialsChunkBytes = 1 << 20;
// One read's partials are merged in memory before they are sent; a read
// past this (a long range of fine buckets by many groups) is refused with
// RESOURCE_EXHAUSTED and what to narrow.
inline constexpr size_t kPartialsMaxReadBytes = 64 << 20;

// REQUIRES: auth (null: no tokens) outlives the service.
std::unique_ptr<grpc::Service> MakePartialsService(ServingViewFn view, std::string replica_id,
                                                   TokenAuthenticator* auth);

}  // namespace kpistream::services
