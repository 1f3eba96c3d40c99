package io.kpistream.bench.streamspeer;

import com.google.protobuf.Descriptors.EnumValueDescriptor;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.kstream.KeyValueMapper;

/**
 * The first processor step (a flatMap): counts every input record, skips
 * rejected ones, and turns a good event into one (key, contribution) pair per
 * measure it feeds, like kpid's router. The key is the measure name followed by
 * the group_by values, separated by SEP.
 */
final class Router implements KeyValueMapper<byte[], Event, Iterable<KeyValue<String, Contrib>>> {
  static final char SEP = '\u001f';

  /** Shared progress counters, read by the main thread. */
  static final class Counters {
    final AtomicLong seen = new AtomicLong();
    final AtomicLong bad = new AtomicLong();
    final AtomicLong emitted = new AtomicLong();
    final AtomicLong aggregated = new AtomicLong();
    final AtomicLong firstRecordNanos = new AtomicLong();
  }

  private final Catalog.Measure[][] byFamily;
  private final int[] bucketOf;
  private final Counters counters;

  /** `graceOverrideMs` as for Catalog.windowings(). */
  Router(Catalog catalog, long graceOverrideMs, Counters counters) {
    this.counters = counters;
    List<Catalog.Windowing> windowings = catalog.windowings(graceOverrideMs);
    bucketOf = new int[catalog.measures.size()];
    byFamily = new Catalog.Measure[Family.values().length][];
    for (Family f : Family.values()) {
      List<Catalog.Measure> ms = new ArrayList<>();
      for (Catalog.Measure m : catalog.measures) {
        if (m.family == f) ms.add(m);
        bucketOf[m.index] = windowings.indexOf(Catalog.windowing(m, graceOverrideMs));
      }
      byFamily[f.ordinal()] = ms.toArray(new Catalog.Measure[0]);
    }
  }

  @Override
  public Iterable<KeyValue<String, Contrib>> apply(byte[] key, Event e) {
    if (counters.firstRecordNanos.get() == 0) counters.firstRecordNanos.compareAndSet(0, System.nanoTime());
    if (e == null || !e.ok()) {
      counters.bad.incrementAndGet();
      counters.seen.incrementAndGet();
      return Collections.emptyList();
    }
    final Message msg = e.msg;
    List<KeyValue<String, Contrib>> out = null;
    for (Catalog.Measure m : byFamily[e.family.ordinal()]) {
      if (!m.accepts(e.type)) continue;
      if (m.filter != null && !m.filter.matches(msg)) continue;
      double v = 0;
      if (m.aggregation == Catalog.Aggregation.DISTINCT) {
        // kpid sketches the entity; with no entity there is nothing to count.
        if (((String) msg.getField(m.field)).isEmpty()) continue;
      } else if (m.field != null) {
        Object o = msg.getField(m.field);
        v = o instanceof Integer i ? i : (Double) o;
      }
      StringBuilder k = new StringBuilder(48).append(m.name);
      for (FieldDescriptor f : m.groupBy) appendDimension(k.append(SEP), msg, f);
      if (out == null) out = new ArrayList<>(4);
      out.add(KeyValue.pair(k.toString(), new Contrib(bucketOf[m.index], v)));
    }
    // emitted before seen: once the main thread sees the last record counted,
    // the number of contributions is final.
    if (out != null) counters.emitted.addAndGet(out.size());
    counters.seen.incrementAndGet();
    return out == null ? Collections.emptyList() : out;
  }

  private static void appendDimension(StringBuilder k, Message msg, FieldDescriptor f) {
    switch (f.getJavaType()) {
      case STRING -> k.append((String) msg.getField(f));
      case ENUM -> {
        EnumValueDescriptor v = (EnumValueDescriptor) msg.getField(f);
        if (f.getEnumType().findValueByNumber(v.getNumber()) != null) k.append(v.getName());
      }
      case INT -> k.append((int) (Integer) msg.getField(f));
      default -> { }
    }
  }

  /** The measure name of a key built by apply(). */
  static String measureOf(String key) {
    int i = key.indexOf(SEP);
    return i < 0 ? key : key.substring(0, i);
  }
}
