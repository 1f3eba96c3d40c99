package io.kpistream.bench.streamspeer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.protobuf.Descriptors.EnumValueDescriptor;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.protobuf.Timestamp;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * One decoded input record: the parsed protobuf message, or why it was rejected.
 * Decoding happens once, in the source topics' value deserializer, so that the
 * timestamp extractor and the router both use the same parsed message.
 */
final class Event {
  // kpid's decoder accepts event times in [2000-01-01, 2100-01-01) and double
  // values that are finite with |v| <= 9e12 (state::kMaxAbsValue).
  static final long MIN_TIME_MS = 946684800000L;
  static final long MAX_TIME_MS = 4102444800000L;
  static final double MAX_ABS_VALUE = 9.0e12;

  final Family family;
  final Message msg; // null when rejected
  final int type;
  final long timeMs;
  final String reject; // null when good

  private Event(Family family, Message msg, int type, long timeMs, String reject) {
    this.family = family;
    this.msg = msg;
    this.type = type;
    this.timeMs = timeMs;
    this.reject = reject;
  }

  boolean ok() {
    return reject == null;
  }

  static Event bad(Family family, String reason) {
    return new Event(family, null, 0, -1, reason);
  }

  /** Parses and validates a protobuf payload with the same checks as kpid's decoder. */
  static Event decode(Family family, byte[] payload) {
    if (payload == null) return bad(family, "not_decodable");
    final Message msg;
    try {
      msg = family.parser.parseFrom(payload);
    } catch (InvalidProtocolBufferException e) {
      return bad(family, "not_decodable");
    }
    return validate(family, msg);
  }

  private static final ObjectMapper JSON = new ObjectMapper();

  /**
   * Decodes kpigen's flat JSON shape ({"id", "ts": epoch ms, "kind": the type's short
   * name, then the message's fields by name, times in epoch ms}) the way a Kafka
   * Streams application reading JSON usually does: Jackson's tree model (what
   * Kafka's own connect-json JsonDeserializer returns), then the fields it needs.
   * Builds the same message the protobuf path parses, so routing is shared.
   */
  static Event decodeFlatJson(Family family, byte[] payload) {
    if (payload == null) return bad(family, "not_decodable");
    final JsonNode root;
    try {
      root = JSON.readTree(payload);
    } catch (java.io.IOException e) {
      return bad(family, "bad_json");
    }
    if (root == null || !root.isObject()) return bad(family, "bad_json");
    Message.Builder b = family.defaultInstance.newBuilderForType();
    JsonNode id = root.get("id");
    if (id == null || id.isNull() || id.isContainerNode()) return bad(family, "missing_field");
    b.setField(family.eventId, id.asText());
    JsonNode ts = root.get("ts");
    if (ts == null || !ts.isIntegralNumber()) return bad(family, "bad_timestamp");
    b.setField(family.eventTime, millis(ts.longValue()));
    JsonNode kind = root.get("kind");
    if (kind == null || !kind.isTextual()) return bad(family, "unknown_type");
    EnumValueDescriptor t = family.type.getEnumType()
        .findValueByName(family.typePrefix + kind.textValue().toUpperCase(java.util.Locale.ROOT));
    if (t == null) return bad(family, "unknown_type");
    b.setField(family.type, t);
    for (FieldDescriptor f : family.descriptor.getFields()) {
      if (f == family.eventId || f == family.eventTime || f == family.type || f.isRepeated()) continue;
      JsonNode v = root.get(f.getName());
      if (v == null || v.isNull()) continue;
      switch (f.getJavaType()) {
        case STRING -> {
          if (v.isContainerNode()) return bad(family, "bad_value");
          b.setField(f, v.asText());
        }
        case DOUBLE -> {
          if (!v.isNumber()) return bad(family, "bad_value");
          b.setField(f, v.doubleValue());
        }
        case INT -> {
          if (!v.isIntegralNumber() || !v.canConvertToInt()) return bad(family, "bad_value");
          b.setField(f, v.intValue());
        }
        case MESSAGE -> {
          if (!v.isIntegralNumber()) return bad(family, "bad_timestamp");
          b.setField(f, millis(v.longValue()));
        }
        default -> {}
      }
    }
    return validate(family, b.build());
  }

  private static Timestamp millis(long ms) {
    return Timestamp.newBuilder().setSeconds(Math.floorDiv(ms, 1000L))
        .setNanos((int) Math.floorMod(ms, 1000L) * 1_000_000).build();
  }

  /** kpid's decoder checks on a parsed message. */
  static Event validate(Family family, Message msg) {
    EnumValueDescriptor t = (EnumValueDescriptor) msg.getField(family.type);
    int type = t.getNumber();
    if (type == 0 || family.type.getEnumType().findValueByNumber(type) == null) {
      return bad(family, "unknown_type");
    }
    if (((String) msg.getField(family.eventId)).isEmpty()) return bad(family, "missing_field");
    if (!msg.hasField(family.eventTime)) return bad(family, "missing_field");
    Timestamp ts = (Timestamp) msg.getField(family.eventTime);
    if (ts.getSeconds() < MIN_TIME_MS / 1000 || ts.getSeconds() >= MAX_TIME_MS / 1000
        || ts.getNanos() < 0 || ts.getNanos() > 999_999_999) {
      return bad(family, "bad_timestamp");
    }
    for (var f : family.doubleFields) {
      double v = (Double) msg.getField(f);
      if (!Double.isFinite(v) || Math.abs(v) > MAX_ABS_VALUE) return bad(family, "bad_value");
    }
    long timeMs = ts.getSeconds() * 1000 + ts.getNanos() / 1_000_000;
    return new Event(family, msg, type, timeMs, null);
  }

  /** Value deserializer of the three input topics; the family comes from the topic name. Never throws. */
  static final class TopicDeserializer implements Deserializer<Event> {
    private final Map<String, Family> byTopic;
    private final boolean flatJson;

    TopicDeserializer(Map<String, Family> byTopic, boolean flatJson) {
      this.byTopic = byTopic;
      this.flatJson = flatJson;
    }

    @Override
    public Event deserialize(String topic, byte[] data) {
      Family f = byTopic.get(topic);
      if (f == null) return bad(null, "unknown_topic");
      return flatJson ? decodeFlatJson(f, data) : decode(f, data);
    }
  }

  /**
   * Event time from the decoded message. Rejected records keep the record's own
   * timestamp (or the partition time) so that they still reach the router, which
   * counts them; a negative timestamp would make Streams drop them silently.
   */
  static final class TimeExtractor implements TimestampExtractor {
    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
      if (record.value() instanceof Event e && e.ok()) return e.timeMs;
      if (record.timestamp() >= 0) return record.timestamp();
      return Math.max(partitionTime, 0);
    }
  }
}
