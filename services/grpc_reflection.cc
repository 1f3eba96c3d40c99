#include "services/grpc_reflection.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/grpcpp.h>

#include <set>

#include "grpc/health/v1/health.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace kpistream::services {
namespace {

namespace rv1 = grpc::reflection::v1;
using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;

// One ServerReflectionInfo stream: read a request, write its answer, until
// the client closes. Files already sent on this stream are not sent again
// as imports (the file asked for always is).
class ReflectionStream final
    : public grpc::ServerBidiReactor<rv1::ServerReflectionRequest, rv1::ServerReflectionResponse> {
 public:
  explicit ReflectionStream(const std::vector<std::string>* services) : services_(services) { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its side
      Finish(grpc::Status::OK);
      return;
    }
    response_.Clear();
    Answer();
    StartWrite(&response_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream broke"));
      return;
    }
    StartRead(&request_);
  }
  void OnDone() override { delete this; }

 private:
  void Answer() {
    const DescriptorPool* pool = DescriptorPool::generated_pool();
    response_.set_valid_host(request_.host());
    *response_.mutable_original_request() = request_;
    switch (request_.message_request_case()) {
      case rv1::ServerReflectionRequest::kListServices:
        for (const auto& name : *services_) response_.mutable_list_services_response()->add_service()->set_name(name);
        return;
      case rv1::ServerReflectionRequest::kFileByFilename:
        return SendFile(pool->FindFileByName(request_.file_by_filename()),
                        fmt::format("no file named {}", request_.file_by_filename()));
      case rv1::ServerReflectionRequest::kFileContainingSymbol:
        return SendFile(pool->FindFileContainingSymbol(request_.file_containing_symbol()),
                        fmt::format("no symbol named {}", request_.file_containing_symbol()));
      case rv1::ServerReflectionRequest::kFileContainingExtension: {
        const auto& ext = request_.file_containing_extension();
        const auto* type = pool->FindMessageTypeByName(ext.containing_type());
        const auto* field = type ? pool->FindExtensionByNumber(type, ext.extension_number()) : nullptr;
        return SendFile(field ? field->file() : nullptr,
                        fmt::format("no extension {} of {}", ext.extension_number(), ext.containing_type()));
      }
      case rv1::ServerReflectionRequest::kAllExtensionNumbersOfType: {
        const auto& name = request_.all_extension_numbers_of_type();
        const auto* type = pool->FindMessageTypeByName(name);
        if (!type) return Error(grpc::StatusCode::NOT_FOUND, fmt::format("no message type named {}", name));
        std::vector<const google::protobuf::FieldDescriptor*> extensions;
        pool->FindAllExtensions(type, &extensions);
        auto* out = response_.mutable_all_extension_numbers_response();
        out->set_base_type_name(name);
        for (const auto* e : extensions) out->add_extension_number(e->number());
        return;
      }
      case rv1::ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
        return Error(grpc::StatusCode::INVALID_ARGUMENT, "the request asks for nothing: set one of message_request");
    }
  }

  void SendFile(const FileDescriptor* file, const std::string& not_found) {
    if (!file) return Error(grpc::StatusCode::NOT_FOUND, not_found);
    auto* out = response_.mutable_file_descriptor_response();
    AddFile(file, out);
    std::vector<const FileDescriptor*> pending{file};
    while (!pending.empty()) {  // imports, transitively, once per stream
      const FileDescriptor* f = pending.back();
      pending.pop_back();
      for (int i = 0; i < f->dependency_count(); ++i) {
        const FileDescriptor* dep = f->dependency(i);
        if (!sent_.insert(dep->name()).second) continue;
        AddFile(dep, out);
        pending.push_back(dep);
      }
    }
  }
  void AddFile(const FileDescriptor* file, rv1::FileDescriptorResponse* out) {
    sent_.insert(file->name());
    google::protobuf::FileDescriptorProto proto;
    file->CopyTo(&proto);
    proto.SerializeToString(out->add_file_descriptor_proto());
  }
  void Error(grpc::StatusCode code, const std::string& message) {
    auto* e = response_.mutable_error_response();
    e->set_error_code(static_cast<int>(code));
    e->set_error_message(message);
  }

  const std::vector<std::string>* services_;
  rv1::ServerReflectionRequest request_;
  rv1::ServerReflectionResponse response_;
  std::set<std::string> sent_;
};

class ReflectionV1 final : public rv1::ServerReflection::CallbackService {
 public:
  explicit ReflectionV1(std::vector<std::string> services) : services_(std::move(services)) {
    // Links the health service's descriptors into kpid (nothing else in
    // kpid refers to them: gRPC's built-in health service does not).
    (void)grpc::health::v1::HealthCheckRequest::descriptor();
  }
  grpc::ServerBidiReactor<rv1::ServerReflectionRequest, rv1::ServerReflectionResponse>* ServerReflectionInfo(
      grpc::CallbackServerContext*) override {
    return new ReflectionStream(&services_);
  }

 private:
  const std::vector<std::string> services_;
};

class MalformedRequestInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit MalformedRequestInterceptor(grpc::experimental::ServerRpcInfo* info) : method_(info->method()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using H = grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(H::POST_RECV_MESSAGE) && methods->GetRecvMessage() == nullptr) {
      malformed_ = true;
    }
    if (malformed_ && methods->QueryInterceptionHookPoint(H::PRE_SEND_STATUS)) {
      const auto code = methods->GetSendStatus().error_code();
      if (code == grpc::StatusCode::INTERNAL || code == grpc::StatusCode::UNIMPLEMENTED) {
        methods->ModifySendStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, Message()));
      }
    }
    methods->Proceed();
  }

 private:
  std::string Message() const {
    // "/pkg.Service/Method" -> "pkg.Service.Method"
    std::string name = method_.empty() ? method_ : method_.substr(1);
    if (auto slash = name.find('/'); slash != std::string::npos) name[slash] = '.';
    const auto* method = DescriptorPool::generated_pool()->FindMethodByName(name);
    return fmt::format("the request is not a valid {}: its bytes do not parse as that protobuf message",
                       method ? method->input_type()->full_name() : "request message");
  }

  std::string method_;
  bool malformed_ = false;
};

class MalformedRequestFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    using T = grpc::experimental::ServerRpcInfo::Type;
    if (info->type() != T::UNARY && info->type() != T::SERVER_STREAMING) return nullptr;
    return new MalformedRequestInterceptor(info);
  }
};

}  // namespace

std::unique_ptr<grpc::Service> MakeReflectionV1Service(std::vector<std::string> services) {
  return std::make_unique<ReflectionV1>(std::move(services));
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MalformedRequestInterceptorFactory() {
  return std::make_unique<MalformedRequestFactory>();
}

}  // namespace kpistream::services
