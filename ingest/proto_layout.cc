#include "ingest/proto_layout.h"

#include <fmt/format.h>
#include <google/protobuf/compiler/parser.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/timestamp.pb.h>

#include "absl/strings/str_join.h"
#include "ingest/source_mapping.h"

namespace kpistream::ingest {

namespace pb = google::protobuf;

namespace {

bool IsTimestamp(const pb::FieldDescriptor* f) {
  return f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE &&
         f->message_type()->full_name() == "google.protobuf.Timestamp";
}

bool Converts(const pb::FieldDescriptor* f, SourceMapping::Kind kind) {
  using CT = pb::FieldDescriptor::CppType;
  const CT t = f->cpp_type();
  const bool number = t == CT::CPPTYPE_INT32 || t == CT::CPPTYPE_INT64 || t == CT::CPPTYPE_UINT32 ||
                      t == CT::CPPTYPE_UINT64 || t == CT::CPPTYPE_FLOAT || t == CT::CPPTYPE_DOUBLE;
  const bool text = t == CT::CPPTYPE_STRING && f->type() == pb::FieldDescriptor::TYPE_STRING;
  switch (kind) {
    case SourceMapping::Kind::kString:
      return text || number || t == CT::CPPTYPE_BOOL || t == CT::CPPTYPE_ENUM;
    case SourceMapping::Kind::kDouble:
    case SourceMapping::Kind::kInt32:
      return number || text;
    case SourceMapping::Kind::kTime:
      return number || text || IsTimestamp(f);
  }
  return false;
}

std::string FieldNames(const pb::Descriptor* d) {
  std::vector<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  return absl::StrJoin(names, ", ");
}

// Zig-zag varint, as Confluent's serializers write the message indexes.
bool ReadZigZag(std::string_view* in, int64_t* out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (in->empty()) return false;
    const auto b = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      *out = static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
      return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<std::pair<std::vector<int>, std::string_view>> SplitMessageIndexes(std::string_view payload) {
  int64_t count = 0;
  if (!ReadZigZag(&payload, &count) || count < 0 || count > 64) {
    return absl::InvalidArgumentError("no valid message indexes after the schema id (Confluent protobuf framing)");
  }
  std::vector<int> indexes;
  if (count == 0) indexes.push_back(0);
  for (int64_t i = 0; i < count; ++i) {
    int64_t index = 0;
    if (!ReadZigZag(&payload, &index) || index < 0 || index > 1 << 20) {
      return absl::InvalidArgumentError("a message index after the schema id is not valid");
    }
    indexes.push_back(static_cast<int>(index));
  }
  return std::make_pair(std::move(indexes), payload);
}

absl::StatusOr<std::shared_ptr<const ProtoLayout>> ProtoLayout::Compile(const SourceMapping& mapping,
                                                                        std::string_view descriptor_set,
                                                                        const std::string& message) {
  auto layout = std::shared_ptr<ProtoLayout>(new ProtoLayout());
  pb::FileDescriptorSet files;
  if (!files.ParseFromArray(descriptor_set.data(), static_cast<int>(descriptor_set.size()))) {
    return absl::InvalidArgumentError(
        "not a FileDescriptorSet (make one with protoc --include_imports --descriptor_set_out=FILE)");
  }
  for (const auto& file : files.file()) {
    if (layout->pool_.FindFileByName(file.name()) != nullptr) continue;
    if (layout->pool_.BuildFile(file) == nullptr) {
      return absl::InvalidArgumentError(fmt::format(
          "the descriptor set's file {} does not build (are its imports in the set? protoc --include_imports)",
          file.name()));
    }
  }
  layout->descriptor_ = layout->pool_.FindMessageTypeByName(message);
  if (layout->descriptor_ == nullptr) {
    return absl::InvalidArgumentError(fmt::format("the descriptor set has no message {}", message));
  }
  layout->factory_ = std::make_unique<pb::DynamicMessageFactory>(&layout->pool_);
  layout->prototype_ = layout->factory_->GetPrototype(layout->descriptor_);
  const auto& paths = mapping.paths();
  layout->steps_.resize(paths.size());
  for (size_t slot = 0; slot < paths.size(); ++slot) {
    const auto& use = paths[slot];
    const pb::Descriptor* at = layout->descriptor_;
    const pb::FieldDescriptor* f = nullptr;
    std::string walked;
    for (const auto& key : use.path->keys) {
      if (at == nullptr) {
        return absl::InvalidArgumentError(fmt::format("field '{}': '{}' is not a message", use.path->text, walked));
      }
      f = at->FindFieldByName(key);
      if (f == nullptr) {
        return absl::InvalidArgumentError(fmt::format("field '{}': the message {} has no field '{}' (fields: {})",
                                                      use.path->text, at->full_name(), key, FieldNames(at)));
      }
      if (f->is_repeated()) {
        return absl::InvalidArgumentError(
            fmt::format("field '{}': '{}' is repeated; a mapping reads single values", use.path->text, key));
      }
      layout->steps_[slot].push_back(f);
      walked += walked.empty() ? key : "." + key;
      at = f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && !IsTimestamp(f) ? f->message_type() : nullptr;
    }
    if (f == nullptr || !Converts(f, use.kind)) {
      return absl::InvalidArgumentError(fmt::format("field '{}' is a protobuf {}, which cannot convert to {}",
                                                    use.path->text, f ? f->type_name() : "message",
                                                    use.kind == SourceMapping::Kind::kString ? "text"
                                                    : use.kind == SourceMapping::Kind::kTime ? "a time"
                                                                                             : "a number"));
    }
  }
  return std::shared_ptr<const ProtoLayout>(std::move(layout));
}

namespace {

class FirstError : public pb::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first.empty()) first = fmt::format("{}:{}: {}", line + 1, column + 1, message);
  }
  std::string first;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const pb::FileDescriptorProto>> ParseProtoText(std::string_view text) {
  pb::io::ArrayInputStream in(text.data(), static_cast<int>(text.size()));
  FirstError errors;
  pb::io::Tokenizer tokenizer(&in, &errors);
  pb::compiler::Parser parser;
  parser.RecordErrorsTo(&errors);
  auto file = std::make_shared<pb::FileDescriptorProto>();
  if (!parser.Parse(&tokenizer, file.get()) || !errors.first.empty()) {
    return absl::InvalidArgumentError(fmt::format("the registered .proto does not parse: {}", errors.first));
  }
  return std::shared_ptr<const pb::FileDescriptorProto>(std::move(file));
}

std::optional<std::string> MessageNameAt(const pb::FileDescriptorProto& file, const std::vector<int>& indexes) {
  if (indexes.empty() || indexes[0] < 0 || indexes[0] >= file.message_type_size()) return std::nullopt;
  const pb::DescriptorProto* d = &file.message_type(indexes[0]);
  std::string name = file.package().empty() ? d->name() : file.package() + "." + d->name();
  for (size_t i = 1; i < indexes.size(); ++i) {
    if (indexes[i] < 0 || indexes[i] >= d->nested_type_size()) return std::nullopt;
    d = &d->nested_type(indexes[i]);
    name += "." + d->name();
  }
  return name;
}

ProtoDatum::ProtoDatum(std::shared_ptr<const ProtoLayout> layout)
    : layout_(std::move(layout)), message_(layout_->prototype()->New()) {}

bool ProtoDatum::Read(std::string_view payload, std::string* why) {
  message_->Clear();
  if (!message_->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    *why =
        fmt::format("not a valid {} protobuf message ({} bytes)", layout_->descriptor()->full_name(), payload.size());
    return false;
  }
  return true;
}

PayloadValue ProtoDatum::At(int slot) const {
  PayloadValue out;
  if (slot < 0) return out;
  const pb::Message* m = message_.get();
  const auto& steps = layout_->steps(slot);
  for (size_t i = 0; i + 1 < steps.size(); ++i) {
    const pb::Reflection* r = m->GetReflection();
    if (!r->HasField(*m, steps[i])) return out;
    m = &r->GetMessage(*m, steps[i]);
  }
  const pb::FieldDescriptor* f = steps.back();
  const pb::Reflection* r = m->GetReflection();
  if (!r->HasField(*m, f)) return out;  // unset, or a proto3 scalar at its default
  using CT = pb::FieldDescriptor::CppType;
  switch (f->cpp_type()) {
    case CT::CPPTYPE_STRING:
      if (f->type() == pb::FieldDescriptor::TYPE_BYTES) {
        out.kind = PayloadValue::Kind::kComposite;
        out.type_name = "protobuf bytes";
        break;
      }
      // A reference into the message, valid until the next Read.
      out.kind = PayloadValue::Kind::kString;
      out.text = r->GetStringReference(*m, f, nullptr);
      out.type_name = "a protobuf string";
      break;
    case CT::CPPTYPE_INT32:
      out.kind = PayloadValue::Kind::kInt;
      out.i = r->GetInt32(*m, f);
      break;
    case CT::CPPTYPE_INT64:
      out.kind = PayloadValue::Kind::kInt;
      out.i = r->GetInt64(*m, f);
      break;
    case CT::CPPTYPE_UINT32:
      out.kind = PayloadValue::Kind::kInt;
      out.i = r->GetUInt32(*m, f);
      break;
    case CT::CPPTYPE_UINT64:
      out.kind = PayloadValue::Kind::kUint;
      out.u = r->GetUInt64(*m, f);
      break;
    case CT::CPPTYPE_FLOAT:
      out.kind = PayloadValue::Kind::kDouble;
      out.d = r->GetFloat(*m, f);
      break;
    case CT::CPPTYPE_DOUBLE:
      out.kind = PayloadValue::Kind::kDouble;
      out.d = r->GetDouble(*m, f);
      break;
    case CT::CPPTYPE_BOOL:
      out.kind = PayloadValue::Kind::kBool;
      out.b = r->GetBool(*m, f);
      break;
    case CT::CPPTYPE_ENUM: {
      const pb::EnumValueDescriptor* e = f->enum_type()->FindValueByNumber(r->GetEnumValue(*m, f));
      if (e == nullptr) {  // a number this schema does not name (open enums)
        out.kind = PayloadValue::Kind::kInt;
        out.i = r->GetEnumValue(*m, f);
      } else {
        out.kind = PayloadValue::Kind::kString;
        out.text = e->name();
      }
      break;
    }
    case CT::CPPTYPE_MESSAGE: {  // google.protobuf.Timestamp (Compile allows no other leaf message)
      const pb::Message& ts = r->GetMessage(*m, f);
      const pb::Reflection* tr = ts.GetReflection();
      const pb::Descriptor* td = ts.GetDescriptor();
      const int64_t seconds = tr->GetInt64(ts, td->FindFieldByNumber(1));
      const int32_t nanos = tr->GetInt32(ts, td->FindFieldByNumber(2));
      // Nanoseconds since the epoch must fit 64 bits: years 1678 to 2262.
      if (seconds > (int64_t{1} << 33) || seconds < -(int64_t{1} << 33) || nanos < 0 || nanos > 999999999) {
        out.kind = PayloadValue::Kind::kComposite;
        out.type_name = "a google.protobuf.Timestamp out of range";
        break;
      }
      out.kind = PayloadValue::Kind::kTime;
      out.i = seconds * 1000000000 + nanos;
      out.type_name = "a google.protobuf.Timestamp";
      break;
    }
  }
  if (out.type_name.empty()) out.type_name = "a protobuf number";
  return out;
}

}  // namespace kpistream::ingest
