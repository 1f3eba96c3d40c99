// Server reflection v1 (grpc.reflection.v1.ServerReflection) and the
// refusal of request bytes that do not parse.
//
// Reflection: gRPC C++ 1.51 (Debian's) ships only v1alpha
// (grpc++_reflection), which kpid also serves; clients that ask for v1
// first find it here. Both describe the services from protobuf's generated
// descriptor pool, so kpid links every file it serves (the health service's
// too: grpcurl can call grpc.health.v1.Health/Check with no local .proto).
// Like health, reflection needs no token: it shows the schema, never data.
//
// Malformed requests: gRPC 1.51 answers a request whose bytes do not parse
// with INTERNAL and no message (synchronous methods) or UNIMPLEMENTED
// (callback methods), which reads as a server bug. The interceptor turns
// both into INVALID_ARGUMENT naming the expected message type. It uses
// gRPC's server interceptor hook (grpcpp/support/server_interceptor.h):
// after the library's own parse, the received message is null.
//
// Thread-safety: both are shared by gRPC's threads; each reflection stream
// is one reactor.
#pragma once

#include <grpcpp/impl/service_type.h>
#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <string>
#include <vector>

namespace kpistream::services {

// `services`: the fully qualified names list_services answers with.
std::unique_ptr<grpc::Service> MakeReflectionV1Service(std::vector<std::string> services);

// Refuses unary and server-streaming requests that do not parse.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MalformedRequestInterceptorFactory();

}  // namespace kpistream::services
