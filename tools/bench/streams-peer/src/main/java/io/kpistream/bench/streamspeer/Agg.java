package io.kpistream.bench.streamspeer;

import java.nio.ByteBuffer;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/** Partial aggregate of one measure, group and window: count, sum, min, max (32 bytes serialized). */
final class Agg {
  static final int SIZE = 32;

  long count;
  double sum;
  double min = Double.POSITIVE_INFINITY;
  double max = Double.NEGATIVE_INFINITY;

  void add(double v) {
    ++count;
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }

  void merge(Agg o) {
    count += o.count;
    sum += o.sum;
    min = Math.min(min, o.min);
    max = Math.max(max, o.max);
  }

  static Serde<Agg> serde() {
    Serializer<Agg> ser = (topic, a) -> {
      if (a == null) return null;
      return ByteBuffer.allocate(SIZE).putLong(a.count).putDouble(a.sum).putDouble(a.min).putDouble(a.max).array();
    };
    Deserializer<Agg> de = (topic, data) -> {
      if (data == null) return null;
      if (data.length != SIZE) throw new SerializationException("aggregate of " + data.length + " bytes, want " + SIZE);
      ByteBuffer b = ByteBuffer.wrap(data);
      Agg a = new Agg();
      a.count = b.getLong();
      a.sum = b.getDouble();
      a.min = b.getDouble();
      a.max = b.getDouble();
      return a;
    };
    return Serdes.serdeFrom(ser, de);
  }
}
