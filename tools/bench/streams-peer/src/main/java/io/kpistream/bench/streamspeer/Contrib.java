package io.kpistream.bench.streamspeer;

import java.nio.ByteBuffer;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * One event's contribution to one measure: the numeric value (0 for count and
 * distinct). `bucket` (index into the catalog's windowings) only
 * routes the record to its windowed aggregation before the repartition topic;
 * it is not serialized, so a repartition record's value is 8 bytes.
 */
final class Contrib {
  final int bucket;
  final double value;

  Contrib(int bucket, double value) {
    this.bucket = bucket;
    this.value = value;
  }

  static Serde<Contrib> serde() {
    Serializer<Contrib> ser = (topic, c) -> c == null ? null : ByteBuffer.allocate(8).putDouble(c.value).array();
    Deserializer<Contrib> de = (topic, data) -> {
      if (data == null) return null;
      if (data.length != 8) throw new SerializationException("contribution of " + data.length + " bytes, want 8");
      return new Contrib(-1, ByteBuffer.wrap(data).getDouble());
    };
    return Serdes.serdeFrom(ser, de);
  }
}
