// Protobuf payloads of the user's own schema for declared sources
// (ingest/source_mapping.h): the message type comes from a descriptor set
// (`protoc --include_imports --descriptor_set_out=FILE`), decoded as a
// dynamic message, and each of the mapping's dotted paths is resolved once
// to a chain of field descriptors.
//
// Path steps: singular message fields by their proto names. Leaves convert
// as PayloadValue says: string to text (bytes are no value); the integer
// types to integers; float and double to numbers; bool; an enum to its
// value's name; a google.protobuf.Timestamp to a time. A field with
// presence (a message, `optional`, a oneof member) that is not set reads as
// absent; a proto3 scalar without presence at its default (0, "", false)
// reads as absent too, since the wire cannot tell it from unset.
//
// Thread-safety: a ProtoLayout is immutable and shared; a ProtoDatum
// belongs to one thread.
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ingest/payload_value.h"

namespace kpistream::ingest {

class SourceMapping;

class ProtoLayout {
 public:
  // `descriptor_set`: a serialized google.protobuf.FileDescriptorSet with
  // every import; `message`: the full name of the records' message. Every
  // mapped path must exist with a leaf that converts to its target;
  // INVALID_ARGUMENT naming the field otherwise.
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<const ProtoLayout>> Compile(const SourceMapping& mapping,
                                                                                  std::string_view descriptor_set,
                                                                                  const std::string& message);

  const google::protobuf::Descriptor* descriptor() const { return descriptor_; }
  const google::protobuf::Message* prototype() const { return prototype_; }
  const std::vector<const google::protobuf::FieldDescriptor*>& steps(int slot) const { return steps_[slot]; }

 private:
  ProtoLayout() = default;
  google::protobuf::DescriptorPool pool_;
  std::unique_ptr<google::protobuf::DynamicMessageFactory> factory_;
  const google::protobuf::Descriptor* descriptor_ = nullptr;
  const google::protobuf::Message* prototype_ = nullptr;
  std::vector<std::vector<const google::protobuf::FieldDescriptor*>> steps_;
};

// One record parsed with a layout, reused from record to record.
class ProtoDatum {
 public:
  explicit ProtoDatum(std::shared_ptr<const ProtoLayout> layout);

  // Parses `payload` (the message's binary encoding); false with *why.
  bool Read(std::string_view payload, std::string* why);
  // The value at a path slot of the last message read.
  PayloadValue At(int slot) const;

 private:
  std::shared_ptr<const ProtoLayout> layout_;
  std::unique_ptr<google::protobuf::Message> message_;
};

// Splits Confluent's protobuf message indexes off the front of a framed
// payload (after the magic byte and schema id): a zig-zag varint count,
// then that many zig-zag varint indexes; a count of 0 means [0]. The
// indexes and the rest, or INVALID_ARGUMENT.
absl::StatusOr<std::pair<std::vector<int>, std::string_view>> SplitMessageIndexes(std::string_view payload);

// A registered protobuf schema (its .proto text, as Confluent-compatible
// registries hold it) parsed with libprotoc; imports are not resolved
// (only its own messages are read). INVALID_ARGUMENT with the first error.
absl::StatusOr<std::shared_ptr<const google::protobuf::FileDescriptorProto>> ParseProtoText(std::string_view text);

// The full name of the message Confluent's message indexes select in a
// file: [i] is its i-th message, [i, j] that one's j-th nested message,
// and so on. nullopt when they select none.
std::optional<std::string> MessageNameAt(const google::protobuf::FileDescriptorProto& file,
                                         const std::vector<int>& indexes);

}  // namespace kpistream::ingest
