package io.kpistream.bench.streamspeer;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Branched;
import org.apache.kafka.streams.kstream.BranchedKStream;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyWindowStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * streams-peer: kpid's measures computed by a Kafka Streams application, for
 * the throughput comparison in tools/bench. See ../README.md (tools/bench/streams-peer/README.md).
 *
 * <pre>
 * source(&lt;p&gt;campaign, &lt;p&gt;product, &lt;p&gt;crm; protobuf, event_time extractor)
 *   -> flatMap "route" (count records, skip bad ones, one (measure+group, value) per measure)
 *   -> [split by bucket width, when the measures use several]
 *   -> groupByKey (repartition topic "contrib-&lt;bucket&gt;")
 *   -> windowedBy(tumbling &lt;bucket&gt;) -> aggregate (RocksDB window store "agg-&lt;bucket&gt;")
 * </pre>
 */
public final class Main {
  private static final String USAGE = """
      usage: streams-peer --brokers HOST:PORT --topic-prefix P --expect N
                          [--catalog FILE] [--measures m1,m2,...]
                          [--guarantee at_least_once|exactly_once_v2] [--threads N]
                          [--state-dir DIR] [--app-id ID] [--commit-ms MS]
                          [--grace DURATION] [--retention DURATION] [--timeout SECS]
                          [--dump-totals] [--truth FILE] [--keep-state] [--keep-topics]
                          [--prop KEY=VALUE]... [--crash-when-done] [--until-serving]
                          [--format protobuf|flat-json]

        --brokers       Kafka bootstrap servers
        --topic-prefix  input topics are <P>campaign, <P>product, <P>crm
        --format        protobuf (default: kpistream.events.v1 messages) or flat-json (kpigen
                        --format flat-json: {"id", "ts" in ms, "kind", fields by name}, read
                        with a Jackson JsonNode deserializer, as Kafka's connect-json one)
        --expect        stop once this many input records (bad ones included) are consumed
        --catalog       kpid KPI catalog YAML (its measures: section)
        --measures      only these measures of the catalog (comma separated)
        --guarantee     processing.guarantee (default at_least_once)
        --threads       num.stream.threads (default 1)
        --state-dir     state.dir (default: a fresh temporary directory)
        --app-id        application.id (default: streams-peer-<guarantee>-<time>-<random>)
        --commit-ms     commit.interval.ms (default 200 for at_least_once, Streams' 100 for EOS)
        --grace         window grace period of every measure (default: the measure's
                        `lateness`, kpid's default 1h; 0 = TimeWindows.ofSizeWithNoGrace)
        --retention     window store retention (default 7d; at least bucket + grace)
        --timeout       give up after this many seconds (default 900)
        --dump-totals   at the end, print each measure's total over all windows and groups
                        (interactive queries on the window stores) to stderr
        --truth FILE    compare those totals with a kpigen --truth file: its `measure NAME
                        AGG VALUE` lines, or else its `kpi NAME all VALUE exact` lines,
                        evaluating the KPI formulas over the totals; exit 3 on a mismatch
        --keep-state    keep the local state directory of this application id
        --keep-topics   keep the internal topics and consumer group of this application id
        --prop K=V      extra Streams/client property (repeatable; wins)
        --crash-when-done  once everything expected is aggregated and committed, halt
                        the JVM without closing anything (what kill -9 leaves behind)
        --until-serving restart-to-serving: exit as soon as the client is RUNNING with
                        every local store restored (no restoration lag), printing
                        {"serving_seconds": S} measured from JVM start

      Prints one JSON line on stdout; logs go to stderr.
      """;

  private static final class Args {
    String brokers;
    String topicPrefix;
    long expect = -1;
    String catalog = System.getProperty("streamspeer.defaultCatalog");
    List<String> measures = new ArrayList<>();
    String guarantee = "at_least_once";
    int threads = 1;
    String stateDir;
    String appId;
    Long commitMs;
    long graceMs = -1; // -1: each measure's lateness
    long retentionMs = 7 * 86_400_000L;
    long timeoutS = 900;
    boolean dumpTotals;
    String truth;
    boolean keepState;
    boolean keepTopics;
    boolean crashWhenDone;
    boolean untilServing;
    Map<String, String> props = new LinkedHashMap<>();
    boolean flatJson;
  }

  public static void main(String[] argv) {
    int rc;
    try {
      rc = run(parse(argv));
    } catch (UsageException e) {
      System.err.println("streams-peer: " + e.getMessage());
      System.err.print(USAGE);
      rc = 2;
    } catch (Exception e) {
      System.err.println("streams-peer: error: " + e);
      e.printStackTrace(System.err);
      rc = 1;
    }
    System.out.flush();
    System.err.flush();
    // Streams' and the clients' threads are gone after close(); exit anyway so
    // a stray non-daemon thread cannot keep the JVM alive.
    Runtime.getRuntime().halt(rc);
  }

  static final class UsageException extends Exception {
    UsageException(String m) {
      super(m);
    }
  }

  private static Args parse(String[] argv) throws UsageException {
    Args a = new Args();
    for (int i = 0; i < argv.length; ++i) {
      String arg = argv[i];
      String val = null;
      int eq = arg.indexOf('=');
      if (arg.startsWith("--") && eq > 0) {
        val = arg.substring(eq + 1);
        arg = arg.substring(0, eq);
      }
      switch (arg) {
        case "-h", "--help" -> {
          System.err.print(USAGE);
          System.exit(0);
        }
        case "--dump-totals" -> a.dumpTotals = true;
        case "--keep-state" -> a.keepState = true;
        case "--keep-topics" -> a.keepTopics = true;
        case "--crash-when-done" -> a.crashWhenDone = true;
        case "--until-serving" -> a.untilServing = true;
        default -> {
          if (val == null) {
            if (i + 1 >= argv.length) throw new UsageException(arg + " needs a value");
            val = argv[++i];
          }
          switch (arg) {
            case "--brokers" -> a.brokers = val;
            case "--topic-prefix" -> a.topicPrefix = val;
            case "--expect" -> a.expect = parseLong(arg, val);
            case "--catalog" -> a.catalog = val;
            case "--measures" -> {
              for (String m : val.split(",")) {
                if (!m.isBlank()) a.measures.add(m.trim());
              }
            }
            case "--guarantee" -> a.guarantee = val;
            case "--format" -> {
              if (!val.equals("protobuf") && !val.equals("flat-json")) {
                throw new UsageException("--format must be protobuf or flat-json");
              }
              a.flatJson = val.equals("flat-json");
            }
            case "--threads" -> a.threads = (int) parseLong(arg, val);
            case "--state-dir" -> a.stateDir = val;
            case "--app-id" -> a.appId = val;
            case "--commit-ms" -> a.commitMs = parseLong(arg, val);
            case "--grace" -> a.graceMs = parseDurationMs(arg, val);
            case "--retention" -> a.retentionMs = parseDurationMs(arg, val);
            case "--timeout" -> a.timeoutS = parseLong(arg, val);
            case "--truth" -> {
              a.truth = val;
              a.dumpTotals = true;
            }
            case "--prop" -> {
              int e = val.indexOf('=');
              if (e <= 0) throw new UsageException("--prop wants KEY=VALUE, got '" + val + "'");
              a.props.put(val.substring(0, e), val.substring(e + 1));
            }
            default -> throw new UsageException("unknown argument '" + arg + "'");
          }
        }
      }
    }
    if (a.brokers == null) throw new UsageException("--brokers is required");
    if (a.topicPrefix == null) throw new UsageException("--topic-prefix is required");
    if (a.expect <= 0) throw new UsageException("--expect N (N > 0) is required");
    if (a.catalog == null) throw new UsageException("--catalog is required");
    if (!a.guarantee.equals(StreamsConfig.AT_LEAST_ONCE) && !a.guarantee.equals(StreamsConfig.EXACTLY_ONCE_V2)) {
      throw new UsageException("--guarantee must be at_least_once or exactly_once_v2");
    }
    if (a.threads < 1) throw new UsageException("--threads must be at least 1");
    return a;
  }

  private static long parseLong(String flag, String v) throws UsageException {
    try {
      return Long.parseLong(v);
    } catch (NumberFormatException e) {
      throw new UsageException(flag + ": not a number: '" + v + "'");
    }
  }

  private static long parseDurationMs(String flag, String v) throws UsageException {
    if (v.equals("0")) return 0;
    long s = Catalog.parseDurationSeconds(v);
    if (s <= 0) throw new UsageException(flag + ": bad duration '" + v + "' (e.g. 0, 30s, 5m, 1h, 1d)");
    return s * 1000;
  }

  static String bucketLabel(long ms) {
    long s = ms / 1000;
    if (s % 86400 == 0) return s / 86400 + "d";
    if (s % 3600 == 0) return s / 3600 + "h";
    if (s % 60 == 0) return s / 60 + "m";
    return s + "s";
  }

  /** "1m-1h": bucket width and grace period. */
  static String label(Catalog.Windowing w) {
    return bucketLabel(w.bucketMs()) + "-" + (w.graceMs() == 0 ? "nograce" : bucketLabel(w.graceMs()));
  }

  static String storeName(Catalog.Windowing w) {
    return "agg-" + label(w);
  }

  /** The topology; `counters` sees its progress. */
  static Topology buildTopology(Catalog catalog, String topicPrefix, long graceOverrideMs, long retentionMs,
                                Router.Counters counters) {
    return buildTopology(catalog, topicPrefix, graceOverrideMs, retentionMs, counters, false);
  }

  /** flatJson: the input records are kpigen's flat JSON shape instead of protobuf. */
  static Topology buildTopology(Catalog catalog, String topicPrefix, long graceOverrideMs, long retentionMs,
                                Router.Counters counters, boolean flatJson) {
    Map<String, Family> byTopic = new HashMap<>();
    for (Family f : Family.values()) byTopic.put(topicPrefix + f.id, f);
    Serde<Event> eventSerde = Serdes.serdeFrom(
        (topic, e) -> {
          throw new UnsupportedOperationException("events are only read");
        },
        new Event.TopicDeserializer(byTopic, flatJson));

    StreamsBuilder b = new StreamsBuilder();
    KStream<byte[], Event> source = b.stream(byTopic.keySet().stream().sorted().toList(),
        Consumed.with(Serdes.ByteArray(), eventSerde)
            .withTimestampExtractor(new Event.TimeExtractor())
            .withName("source"));
    KStream<String, Contrib> contribs =
        source.flatMap(new Router(catalog, graceOverrideMs, counters), Named.as("route"));

    List<Catalog.Windowing> windowings = catalog.windowings(graceOverrideMs);
    if (windowings.size() == 1) {
      aggregate(contribs, windowings.get(0), retentionMs, counters);
    } else {
      BranchedKStream<String, Contrib> split = contribs.split(Named.as("windows-"));
      for (int i = 0; i < windowings.size(); ++i) {
        final int idx = i;
        final Catalog.Windowing w = windowings.get(i);
        split = split.branch((k, c) -> c.bucket == idx,
            Branched.withConsumer(ks -> aggregate(ks, w, retentionMs, counters), label(w)));
      }
      split.noDefaultBranch();
    }
    return b.build();
  }

  private static void aggregate(KStream<String, Contrib> contribs, Catalog.Windowing w, long retentionMs,
                                Router.Counters counters) {
    final String label = label(w);
    final long bucketMs = w.bucketMs();
    final long graceMs = w.graceMs();
    Duration size = Duration.ofMillis(bucketMs);
    TimeWindows windows = graceMs == 0
        ? TimeWindows.ofSizeWithNoGrace(size)
        : TimeWindows.ofSizeAndGrace(size, Duration.ofMillis(graceMs));
    contribs
        .groupByKey(Grouped.with("contrib-" + label, Serdes.String(), Contrib.serde()))
        .windowedBy(windows)
        .aggregate(Agg::new,
            (key, c, agg) -> {
              agg.add(c.value);
              counters.aggregated.incrementAndGet();
              return agg;
            },
            Named.as("aggregate-" + label),
            Materialized.<String, Agg, WindowStore<Bytes, byte[]>>as(storeName(w))
                .withKeySerde(Serdes.String())
                .withValueSerde(Agg.serde())
                .withRetention(Duration.ofMillis(Math.max(retentionMs, bucketMs + graceMs))));
  }

  private static int run(Args a) throws Exception {
    final long t0 = System.nanoTime();
    Catalog catalog = Catalog.load(Path.of(a.catalog), a.measures);
    String appId = a.appId != null ? a.appId
        : String.format(Locale.ROOT, "streams-peer-%s-%d-%06x", a.guarantee.replace('_', '-'),
            System.currentTimeMillis(), ThreadLocalRandom.current().nextInt(1 << 24));
    Path stateDir = a.stateDir != null ? Path.of(a.stateDir) : Files.createTempDirectory("streams-peer-state");
    Files.createDirectories(stateDir);

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.brokers);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, a.guarantee);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, a.threads);
    p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
    long commitMs = a.commitMs != null ? a.commitMs
        : a.guarantee.equals(StreamsConfig.AT_LEAST_ONCE) ? 200 : 100;
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, commitMs);
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    // No global stores here; set only to silence Streams 4.x's start-up warning about it.
    p.put("processing.exception.handler.global.enabled", "true");
    p.putAll(a.props);

    Router.Counters counters = new Router.Counters();
    Topology topology = buildTopology(catalog, a.topicPrefix, a.graceMs, a.retentionMs, counters, a.flatJson);
    System.err.printf(Locale.ROOT, "streams-peer: %s, %d measure(s) %s, %s, %d thread(s), commit %d ms%n",
        appId, catalog.measures.size(), catalog, a.guarantee, a.threads, commitMs);
    if (Boolean.getBoolean("streamspeer.printTopology")) System.err.println(topology.describe());

    AtomicReference<Throwable> failure = new AtomicReference<>();
    final long[] runningAt = {0};
    KafkaStreams streams = new KafkaStreams(topology, p);
    streams.setStateListener((next, prev) -> {
      if (next == KafkaStreams.State.RUNNING) {
        synchronized (runningAt) {
          if (runningAt[0] == 0) runningAt[0] = System.nanoTime();
        }
      }
      if (next == KafkaStreams.State.ERROR) failure.compareAndSet(null, new IllegalStateException("Streams is in ERROR"));
    });
    streams.setUncaughtExceptionHandler(ex -> {
      failure.compareAndSet(null, ex);
      return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });

    int rc = 0;
    String json = null;
    if (a.untilServing) return untilServing(streams, failure, t0, a.timeoutS);
    try {
      streams.start();
      final long deadline = t0 + TimeUnit.SECONDS.toNanos(a.timeoutS);
      long countAt = 0;
      long records = 0;
      long drainedAt;
      long dropped = 0;
      long droppedCheckedAt = 0;
      double drainedCpu;
      double startCpu = -1; // sampled when processing starts (RUNNING or first record)
      while (true) {
        if (failure.get() != null) throw new IllegalStateException("Kafka Streams failed", failure.get());
        long now = System.nanoTime();
        if (startCpu < 0 && (counters.firstRecordNanos.get() != 0 || runningSeen(runningAt))) {
          startCpu = processCpuSeconds();
        }
        if (countAt == 0) {
          long s = counters.seen.get();
          if (s >= a.expect) {
            countAt = now;
            records = s;
          }
        }
        // Read after `seen`: the router counts contributions before the record.
        if (countAt != 0) {
          // Contributions to windows already closed (past the grace period)
          // never reach the aggregator; Streams counts them as dropped records.
          long emitted = counters.emitted.get();
          long aggregated = counters.aggregated.get();
          if (aggregated < emitted && now - droppedCheckedAt > 20_000_000L) {
            dropped = (long) metricSum(streams, "dropped-records-total");
            droppedCheckedAt = now;
          }
          if (aggregated + dropped >= emitted) {
            drainedAt = now;
            drainedCpu = processCpuSeconds();
            break;
          }
        }
        if (now > deadline) {
          throw new IllegalStateException(String.format(Locale.ROOT,
              "timed out after %d s: %d of %d records consumed, %d of %d contributions aggregated",
              a.timeoutS, counters.seen.get(), a.expect, counters.aggregated.get(), counters.emitted.get()));
        }
        Thread.sleep(2);
      }
      if (a.crashWhenDone) {
        // Let the last commit interval pass, then stop dead: no close, no
        // flush, no checkpoint file, as after kill -9.
        Thread.sleep(3 * commitMs);
        System.err.println("streams-peer: halting without close (as kill -9)");
        Runtime.getRuntime().halt(137);
      }
      long first = counters.firstRecordNanos.get();
      long running;
      synchronized (runningAt) {
        running = runningAt[0];
      }
      // From RUNNING; if a thread started processing before the whole client
      // was RUNNING, from its first record instead.
      long from = running == 0 ? first : first == 0 ? running : Math.min(running, first);
      System.err.printf(Locale.ROOT, "streams-peer: RUNNING at %.3f s, first record at %.3f s, count reached at %.3f s%n",
          running == 0 ? -1 : (running - t0) / 1e9, first == 0 ? -1 : (first - t0) / 1e9, (countAt - t0) / 1e9);
      double seconds = (countAt - from) / 1e9;
      double drained = (drainedAt - from) / 1e9;
      dropped = (long) metricSum(streams, "dropped-records-total");

      Map<String, Agg> totals = null;
      Map<String, Integer> groupCounts = new HashMap<>();
      if (a.dumpTotals) {
        // Let the in-flight aggregate calls finish writing to the stores.
        Thread.sleep(Math.max(2 * commitMs, 200));
        totals = totals(streams, catalog, a.graceMs, groupCounts);
      }
      long closeStart = System.nanoTime();
      // close() flushes the stores and makes the final commit (both guarantees).
      boolean closed = streams.close(CLOSE);
      double closeSeconds = (System.nanoTime() - closeStart) / 1e9;
      if (!closed) {
        System.err.println("streams-peer: warning: close() timed out");
        rc = 1;
      }
      if (failure.get() != null) throw new IllegalStateException("Kafka Streams failed", failure.get());

      json = String.format(Locale.ROOT,
          "{\"records\": %d, \"seconds\": %.3f, \"events_per_second\": %.0f, \"guarantee\": \"%s\", "
              + "\"threads\": %d, \"measures\": %d, \"bad\": %d, \"contributions\": %d, \"dropped\": %d, "
              + "\"drained_seconds\": %.3f, \"startup_seconds\": %.3f, \"close_seconds\": %.3f, "
              + "\"cpu_seconds\": %.2f, \"processing_cpu_seconds\": %.2f, \"peak_rss_mb\": %d}",
          records, seconds, records / seconds, a.guarantee, a.threads, catalog.measures.size(),
          counters.bad.get(), counters.emitted.get(), dropped, drained, (from - t0) / 1e9, closeSeconds,
          drainedCpu, drainedCpu - startCpu, peakRssKb() / 1024);

      if (totals != null) {
        for (Catalog.Measure m : catalog.measures) {
          System.err.println("totals: measure " + m.name + " " + m.aggregation.name().toLowerCase(Locale.ROOT) + " "
              + fmt(value(m, totals.get(m.name))) + " groups " + groupCounts.get(m.name));
        }
        if (a.truth != null && !TruthCheck.check(Path.of(a.truth), catalog, totals)) rc = 3;
      }
    } finally {
      streams.close(CLOSE);
      if (!a.keepState) deleteQuietly(a.stateDir == null ? stateDir : stateDir.resolve(appId));
      if (!a.keepTopics) deleteInternalTopics(a.brokers, appId);
    }
    if (json != null) {
      System.out.println(json);
    }
    return rc;
  }

  // Restart-to-serving: from JVM start until the client is RUNNING and every
  // local store partition has caught up with its changelog (restored), i.e.
  // interactive queries would answer from complete state.
  private static int untilServing(KafkaStreams streams, AtomicReference<Throwable> failure, long t0, long timeoutS)
      throws Exception {
    final long jvmStartMs = ManagementFactory.getRuntimeMXBean().getStartTime();
    try {
      streams.start();
      final long deadline = t0 + TimeUnit.SECONDS.toNanos(timeoutS);
      while (true) {
        if (failure.get() != null) throw new IllegalStateException("Kafka Streams failed", failure.get());
        if (System.nanoTime() > deadline) throw new IllegalStateException("timed out waiting for RUNNING and restored");
        if (streams.state() == KafkaStreams.State.RUNNING) {
          var lags = streams.allLocalStorePartitionLags();
          boolean restored = !lags.isEmpty();
          for (var byPartition : lags.values()) {
            for (var lag : byPartition.values()) restored &= lag.offsetLag() == 0;
          }
          if (restored) break;
        }
        Thread.sleep(5);
      }
      double serving = (System.currentTimeMillis() - jvmStartMs) / 1e3;
      System.err.printf(Locale.ROOT, "streams-peer: serving %.3f s after JVM start%n", serving);
      System.out.printf(Locale.ROOT, "{\"serving_seconds\": %.3f}%n", serving);
      System.out.flush();
    } finally {
      streams.close(CLOSE);
    }
    return 0;
  }

  private static boolean runningSeen(long[] runningAt) {
    synchronized (runningAt) {
      return runningAt[0] != 0;
    }
  }

  /** CPU time of the whole JVM process so far (every thread, JIT and GC included). */
  private static double processCpuSeconds() {
    if (ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os) {
      return os.getProcessCpuTime() / 1e9;
    }
    return -1;
  }

  /** Peak resident set size (VmHWM) in KiB, -1 if unknown. */
  private static long peakRssKb() {
    try {
      for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
        if (line.startsWith("VmHWM:")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
      }
    } catch (IOException | RuntimeException e) {
      // not Linux
    }
    return -1;
  }

  private static double metricSum(KafkaStreams streams, String name) {
    double sum = 0;
    for (Map.Entry<MetricName, ? extends Metric> e : streams.metrics().entrySet()) {
      if (e.getKey().name().equals(name) && e.getValue().metricValue() instanceof Number n) {
        sum += n.doubleValue();
      }
    }
    return sum;
  }

  /** Totals over every window and group of each measure, read with interactive queries. */
  private static Map<String, Agg> totals(KafkaStreams streams, Catalog catalog, long graceOverrideMs,
                                        Map<String, Integer> groupCounts) {
    Map<String, Agg> totals = new HashMap<>();
    for (Catalog.Measure m : catalog.measures) totals.put(m.name, new Agg());
    long windows = 0;
    Map<String, Set<String>> groups = new HashMap<>();
    for (Catalog.Windowing w : catalog.windowings(graceOverrideMs)) {
      ReadOnlyWindowStore<String, Agg> store = streams.store(
          StoreQueryParameters.fromNameAndType(storeName(w), QueryableStoreTypes.<String, Agg>windowStore()));
      try (KeyValueIterator<Windowed<String>, Agg> it = store.all()) {
        while (it.hasNext()) {
          KeyValue<Windowed<String>, Agg> kv = it.next();
          String measure = Router.measureOf(kv.key.key());
          Agg t = totals.get(measure);
          if (t != null) t.merge(kv.value);
          groups.computeIfAbsent(measure, x -> new HashSet<>()).add(kv.key.key());
          ++windows;
        }
      }
    }
    System.err.println("streams-peer: totals over " + windows + " (measure, group, window) aggregates");
    for (Catalog.Measure m : catalog.measures) {
      int n = groups.getOrDefault(m.name, Set.of()).size();
      if (n > m.maxGroups) {
        System.err.printf(Locale.ROOT, "streams-peer: note: measure %s has %d groups, more than its max_groups %d "
            + "(kpid caps them per partition; this peer does not)%n", m.name, n, m.maxGroups);
      }
      groupCounts.put(m.name, n);
    }
    return totals;
  }

  static Double value(Catalog.Measure m, Agg a) {
    return switch (m.aggregation) {
      case COUNT, DISTINCT -> (double) a.count;
      case SUM -> a.sum;
      case MIN -> a.count == 0 ? null : a.min;
      case MAX -> a.count == 0 ? null : a.max;
      case AVG, QUANTILE, LAST -> a.count == 0 ? null : a.sum / a.count;
    };
  }

  static String fmt(Double v) {
    return v == null ? "none" : v == Math.rint(v) && Math.abs(v) < 1e15 ? String.valueOf(v.longValue())
        : String.valueOf(v);
  }

  private static void deleteInternalTopics(String brokers, String appId) {
    Properties p = new Properties();
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    try (Admin admin = Admin.create(p)) {
      Set<String> all = admin.listTopics().names().get(30, TimeUnit.SECONDS);
      List<String> mine = all.stream().filter(t -> t.startsWith(appId + "-")).toList();
      if (!mine.isEmpty()) admin.deleteTopics(mine).all().get(30, TimeUnit.SECONDS);
      admin.deleteConsumerGroups(List.of(appId)).all().get(30, TimeUnit.SECONDS);
    } catch (Exception e) {
      System.err.println("streams-peer: warning: cannot delete the internal topics of " + appId + ": " + e);
    }
  }

  private static void deleteQuietly(Path dir) {
    try (var s = Files.walk(dir)) {
      s.sorted((x, y) -> y.getNameCount() - x.getNameCount()).forEach(f -> f.toFile().delete());
    } catch (IOException | RuntimeException e) {
      // best effort
    }
  }

  /** Leave the group on close, so that the (fresh, per-run) consumer group can be deleted. */
  private static final CloseOptions CLOSE = CloseOptions.groupMembershipOperation(
      CloseOptions.GroupMembershipOperation.LEAVE_GROUP).withTimeout(Duration.ofSeconds(60));

  private Main() {}
}
