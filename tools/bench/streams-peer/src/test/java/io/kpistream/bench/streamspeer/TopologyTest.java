package io.kpistream.bench.streamspeer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Timestamp;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import kpistream.events.v1.Events;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.WindowStore;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.yaml.snakeyaml.Yaml;

class TopologyTest {
  private static final long T0 = 1_800_000_000L; // a whole hour, unix seconds
  private static final String S = String.valueOf(Router.SEP);

  private static final String YAML = """
      measures:
        impressions: {family: campaign, types: [impression], aggregation: count, group_by: [channel, region]}
        revenue: {family: campaign, types: [conversion], aggregation: sum, field: revenue, group_by: [channel]}
        page_load_max: {family: product, types: [page_load], aggregation: max, field: latency_ms, group_by: [plan]}
        status_codes: {family: product, types: [api_call], aggregation: count, group_by: [status_code, type]}
        trials: {family: crm, types: [trial_started], aggregation: count}
        users: {family: product, aggregation: distinct, field: user_id, bucket: 1h}
        slow_pro: {family: product, filter: "plan == 'pro' and (latency_ms >= 300 or type in ('api_call'))", aggregation: count}
        late5m: {family: crm, aggregation: last, field: amount, lateness: 5m, max_groups: 10}
      kpis:
        trials_kpi: {formula: trials, windows: [all]}
        ratio: {formula: trials / users, windows: [all]}
      """;

  private static Catalog catalog(String yaml, List<String> only) {
    return Catalog.parse(new Yaml().load(yaml), "test.yaml", only);
  }

  private static Timestamp at(double seconds) {
    long s = (long) Math.floor(seconds);
    return Timestamp.newBuilder().setSeconds(s).setNanos((int) Math.round((seconds - s) * 1e9)).build();
  }

  private static byte[] campaign(Events.CampaignEventType type, double t, String channel, double revenue) {
    return Events.CampaignEvent.newBuilder().setEventId("c" + t).setEventTime(at(t)).setType(type)
        .setChannel(channel).setRegion("eu").setRevenue(revenue).build().toByteArray();
  }

  private static byte[] product(Events.ProductEventType type, double t, String user, double latency, int status) {
    return Events.ProductEvent.newBuilder().setEventId("p" + t).setEventTime(at(t)).setType(type)
        .setPlan("pro").setUserId(user).setLatencyMs(latency).setStatusCode(status).build().toByteArray();
  }

  /** Every (key @ window start in seconds) -> aggregate of a window store. */
  private static Map<String, Agg> dump(TopologyTestDriver driver, String store) {
    Map<String, Agg> out = new HashMap<>();
    WindowStore<String, Agg> s = driver.getWindowStore(store);
    assertNotNull(s, store);
    try (KeyValueIterator<Windowed<String>, Agg> it = s.all()) {
      while (it.hasNext()) {
        KeyValue<Windowed<String>, Agg> kv = it.next();
        out.put(kv.key.key() + "@" + (kv.key.window().start() / 1000 - T0), kv.value);
      }
    }
    return out;
  }

  @Test
  void computesTheMeasuresPerWindowAndGroup(@TempDir Path state) {
    Catalog cat = catalog(YAML, List.of());
    Router.Counters counters = new Router.Counters();
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, "topology-test");
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
    p.put(StreamsConfig.STATE_DIR_CONFIG, state.toString());
    try (TopologyTestDriver driver =
             new TopologyTestDriver(Main.buildTopology(cat, "t.", 86_400_000L, 7 * 86_400_000L, counters), p)) {
      var ser = new ByteArraySerializer();
      TestInputTopic<byte[], byte[]> camp = driver.createInputTopic("t.campaign", ser, ser);
      TestInputTopic<byte[], byte[]> prod = driver.createInputTopic("t.product", ser, ser);
      TestInputTopic<byte[], byte[]> crm = driver.createInputTopic("t.crm", ser, ser);

      camp.pipeInput(campaign(Events.CampaignEventType.CAMPAIGN_IMPRESSION, T0 + 1, "search", 0));
      camp.pipeInput(campaign(Events.CampaignEventType.CAMPAIGN_IMPRESSION, T0 + 59.5, "search", 0));
      camp.pipeInput(campaign(Events.CampaignEventType.CAMPAIGN_IMPRESSION, T0 + 60, "search", 0));
      camp.pipeInput(campaign(Events.CampaignEventType.CAMPAIGN_CONVERSION, T0 + 5, "search", 10.25));
      camp.pipeInput(campaign(Events.CampaignEventType.CAMPAIGN_CONVERSION, T0 + 6, "search", 4.75));
      prod.pipeInput(product(Events.ProductEventType.PRODUCT_PAGE_LOAD, T0 + 1, "u1", 100, 0));
      prod.pipeInput(product(Events.ProductEventType.PRODUCT_PAGE_LOAD, T0 + 2, "", 300, 0));
      prod.pipeInput(product(Events.ProductEventType.PRODUCT_API_CALL, T0 + 3, "u2", 12, 503));
      crm.pipeInput(Events.CrmEvent.newBuilder().setEventId("r1").setEventTime(at(T0))
          .setType(Events.CrmEventType.CRM_TRIAL_STARTED).build().toByteArray());
      // Bad: unknown type, garbage, no event_time, NaN value.
      crm.pipeInput(Events.CrmEvent.newBuilder().setEventId("r2").setEventTime(at(T0)).build().toByteArray());
      camp.pipeInput(new byte[] {(byte) 0xff, (byte) 0xff, 0x01});
      camp.pipeInput(Events.CampaignEvent.newBuilder().setEventId("c9")
          .setType(Events.CampaignEventType.CAMPAIGN_IMPRESSION).build().toByteArray());
      prod.pipeInput(product(Events.ProductEventType.PRODUCT_PAGE_LOAD, T0 + 4, "u3", Double.NaN, 0));

      assertEquals(13, counters.seen.get());
      assertEquals(4, counters.bad.get());
      assertEquals(counters.emitted.get(), counters.aggregated.get());

      Map<String, Agg> m = dump(driver, "agg-1m-1d");
      assertEquals(2, m.get("impressions" + S + "search" + S + "eu@0").count);
      assertEquals(1, m.get("impressions" + S + "search" + S + "eu@60").count);
      Agg rev = m.get("revenue" + S + "search@0");
      assertEquals(2, rev.count);
      assertEquals(15.0, rev.sum, 1e-12);
      assertEquals(4.75, rev.min, 0);
      assertEquals(10.25, rev.max, 0);
      assertEquals(300.0, m.get("page_load_max" + S + "pro@0").max, 0);
      assertEquals(1, m.get("status_codes" + S + "503" + S + "PRODUCT_API_CALL@0").count);
      assertEquals(1, m.get("trials@0").count);
      assertEquals(1, m.get("late5m@0").count); // the trial; the unknown-type one is bad
      assertEquals(8, m.size(), m.keySet().toString());
      assertEquals(2, dump(driver, "agg-1m-1d").get("slow_pro@0").count); // page_load 300 and the api_call

      Map<String, Agg> h = dump(driver, "agg-1h-1d");
      assertEquals(Map.of("users@0", 2L), Map.of("users@0", h.get("users@0").count)); // "" is not counted
      assertEquals(1, h.size());
    }
  }

  @Test
  void graceZeroDropsLateContributions(@TempDir Path state) {
    Catalog cat = catalog(YAML, List.of("impressions"));
    Router.Counters counters = new Router.Counters();
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, "topology-test-grace");
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
    p.put(StreamsConfig.STATE_DIR_CONFIG, state.toString());
    try (TopologyTestDriver driver =
             new TopologyTestDriver(Main.buildTopology(cat, "t.", 0, 86_400_000L, counters), p)) {
      var ser = new ByteArraySerializer();
      TestInputTopic<byte[], byte[]> camp = driver.createInputTopic("t.campaign", ser, ser);
      camp.pipeInput(campaign(Events.CampaignEventType.CAMPAIGN_IMPRESSION, T0 + 130, "search", 0));
      camp.pipeInput(campaign(Events.CampaignEventType.CAMPAIGN_IMPRESSION, T0 + 1, "search", 0)); // window closed
      assertEquals(2, counters.emitted.get());
      assertEquals(1, counters.aggregated.get());
      assertEquals(1, dump(driver, "agg-1m-nograce").size());
    }
  }

  @Test
  void loadsTheDefaultCatalog() throws Exception {
    Path file = Path.of(System.getProperty("streamspeer.defaultCatalog", "../../../config/kpis.yaml"));
    Catalog all = Catalog.load(file, List.of());
    assertTrue(all.measures.size() >= 20, all.toString());
    Catalog.Measure trials = all.find("trials_started");
    assertNotNull(trials);
    assertEquals(Family.CRM, trials.family);
    assertTrue(trials.accepts(Events.CrmEventType.CRM_TRIAL_STARTED.getNumber()));
    assertTrue(!trials.accepts(Events.CrmEventType.CRM_LEAD.getNumber()));
    Catalog.Measure users = all.find("active_users");
    assertTrue(users.accepts(Events.ProductEventType.PRODUCT_LOGIN.getNumber())); // no types = every type
    assertEquals(300_000L, users.bucketMs); // distinct measures: 5-minute buckets (config/kpis.yaml)

    Catalog two = Catalog.load(file, List.of("active_users", "impressions"));
    assertEquals(List.of("impressions", "active_users"), two.measures.stream().map(x -> x.name).toList());
    assertEquals(List.of(new Catalog.Windowing(60_000L, 3_600_000L), new Catalog.Windowing(300_000L, 3_600_000L)),
        two.windowings(-1));
    assertEquals(List.of(new Catalog.Windowing(60_000L, 0), new Catalog.Windowing(300_000L, 0)), two.windowings(0));
    assertThrows(IllegalArgumentException.class, () -> Catalog.load(file, List.of("impressions", "nope")));
    assertTrue(Files.exists(file));
  }

  @Test
  void filters() {
    Events.ProductEvent e = Events.ProductEvent.newBuilder().setType(Events.ProductEventType.PRODUCT_API_CALL)
        .setPlan("pro").setFeature("alerts").setStatusCode(503).setLatencyMs(12.5).build();
    assertTrue(Filter.compile("status_code >= 500", Family.PRODUCT).matches(e));
    assertTrue(!Filter.compile("status_code < 500", Family.PRODUCT).matches(e));
    assertTrue(Filter.compile("feature in ('dashboards', 'alerts')", Family.PRODUCT).matches(e));
    assertTrue(Filter.compile("feature not in (\"x\")", Family.PRODUCT).matches(e));
    assertTrue(Filter.compile("not (plan != 'pro') and type == 'api_call'", Family.PRODUCT).matches(e));
    assertTrue(Filter.compile("latency_ms = 12.5 or plan == 'free'", Family.PRODUCT).matches(e));
    assertTrue(!Filter.compile("type in ('page_load', 'login')", Family.PRODUCT).matches(e));
    assertTrue(Filter.compile("status_code in (404, 503)", Family.PRODUCT).matches(e));
    for (String bad : List.of("plan > 'a'", "plan == 3", "status_code == 'x'", "type == 'nope'", "colour == 'x'",
        "plan == 'a' and", "(plan == 'a'", "plan not == 'a'", "plan == 'a' extra")) {
      assertThrows(IllegalArgumentException.class, () -> Filter.compile(bad, Family.PRODUCT), bad);
    }
  }

  @Test
  void keepsKpiFormulas() {
    Catalog c = catalog(YAML, List.of());
    assertEquals(Map.of("trials_kpi", "trials", "ratio", "trials / users"), c.kpiFormulas);
  }

  @Test
  void rejectsBadCatalogs() {
    var e = assertThrows(IllegalArgumentException.class, () -> catalog(
        "measures:\n  a: {family: campaign, types: [clack], aggregation: count}\n", List.of()));
    assertTrue(e.getMessage().contains("unknown campaign event type 'clack'"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> catalog(
        "measures:\n  a: {family: crm, aggregation: sum, field: segment}\n", List.of()));
    assertTrue(e.getMessage().contains("not numeric"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> catalog(
        "measures:\n  a: {family: crm, aggregation: count, bucket: 7m}\n", List.of()));
    assertTrue(e.getMessage().contains("must divide one hour"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> catalog(
        "measures:\n  a: {family: crm, aggregation: count, group_by: [event_time]}\n", List.of()));
    assertTrue(e.getMessage().contains("cannot group"), e.getMessage());
  }
}
