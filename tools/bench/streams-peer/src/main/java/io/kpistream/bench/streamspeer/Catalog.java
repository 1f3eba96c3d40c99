package io.kpistream.bench.streamspeer;

import com.google.protobuf.Descriptors.EnumDescriptor;
import com.google.protobuf.Descriptors.EnumValueDescriptor;
import com.google.protobuf.Descriptors.FieldDescriptor;
import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.constructor.SafeConstructor;

/**
 * The `measures:` section of a kpid KPI catalog (config/kpis.yaml), with the
 * same meaning and the same checks as kpid's catalog parser. `kpis:` (formulas
 * over measures) is evaluated at query time in kpid and is not needed here.
 */
final class Catalog {
  /**
   * kpid's aggregations. Here every one keeps (count, sum, min, max) per
   * window and group: DISTINCT (a HyperLogLog in kpid) counts events with a
   * non-empty field, QUANTILE (a DDSketch in kpid) and LAST (the newest value
   * in kpid) keep the same four numbers as AVG. The work per event is what the
   * benchmark compares; their values are not checked against the truth.
   */
  enum Aggregation { COUNT, SUM, MIN, MAX, AVG, DISTINCT, QUANTILE, LAST }

  static final class Measure {
    final int index;
    final String name;
    final Family family;
    /** typeMask[n] is true if events of enum number n contribute; null = every type. */
    final boolean[] typeMask;
    final Aggregation aggregation;
    /** Numeric field (count/sum/min/max/avg), string field (distinct), or null. */
    final FieldDescriptor field;
    final FieldDescriptor[] groupBy;
    final long bucketMs;
    final String bucket;
    /** Compiled `filter:`, or null. */
    final Filter filter;
    /** Allowed lateness (kpid's default 1h): the grace period of the measure's windows. */
    final long latenessMs;
    /** kpid's per-partition group cap; parsed, not enforced here. */
    final int maxGroups;

    Measure(int index, String name, Family family, boolean[] typeMask, Aggregation aggregation,
            FieldDescriptor field, FieldDescriptor[] groupBy, long bucketMs, String bucket, Filter filter,
            long latenessMs, int maxGroups) {
      this.index = index;
      this.name = name;
      this.family = family;
      this.typeMask = typeMask;
      this.aggregation = aggregation;
      this.field = field;
      this.groupBy = groupBy;
      this.bucketMs = bucketMs;
      this.bucket = bucket;
      this.filter = filter;
      this.latenessMs = latenessMs;
      this.maxGroups = maxGroups;
    }

    boolean accepts(int type) {
      return typeMask == null || (type >= 0 && type < typeMask.length && typeMask[type]);
    }
  }

  final List<Measure> measures;
  /** `kpis:` name -> formula, and `constants:` (only for checking totals against a truth file). */
  final Map<String, String> kpiFormulas;
  final Map<String, Double> constants;

  private Catalog(List<Measure> measures, Map<String, String> kpiFormulas, Map<String, Double> constants) {
    this.measures = measures;
    this.kpiFormulas = kpiFormulas;
    this.constants = constants;
  }

  Measure find(String name) {
    for (Measure m : measures) {
      if (m.name.equals(name)) return m;
    }
    return null;
  }

  /** A windowed aggregation: tumbling windows of `bucketMs` with grace `graceMs`. */
  record Windowing(long bucketMs, long graceMs) {}

  /**
   * The distinct windowings of the measures, in catalog order of first use;
   * grace is the measure's lateness unless `graceOverrideMs` >= 0.
   */
  List<Windowing> windowings(long graceOverrideMs) {
    Set<Windowing> s = new LinkedHashSet<>();
    for (Measure m : measures) s.add(windowing(m, graceOverrideMs));
    return new ArrayList<>(s);
  }

  static Windowing windowing(Measure m, long graceOverrideMs) {
    return new Windowing(m.bucketMs, graceOverrideMs >= 0 ? graceOverrideMs : m.latenessMs);
  }

  static Catalog load(Path file, Collection<String> only) throws IOException {
    Object root;
    try (Reader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
      root = new Yaml(new SafeConstructor(new LoaderOptions())).load(r);
    } catch (RuntimeException e) { // YAMLException
      throw new IllegalArgumentException(file + ": " + e.getMessage(), e);
    }
    return parse(root, file.toString(), only);
  }

  /** Parses the YAML tree; `only` (may be empty) keeps just the named measures, in catalog order. */
  static Catalog parse(Object root, String where, Collection<String> only) {
    List<String> errors = new ArrayList<>();
    if (!(root instanceof Map<?, ?> top) || !(top.get("measures") instanceof Map<?, ?> defs)) {
      throw new IllegalArgumentException(where + ": no `measures:` map");
    }
    List<Measure> out = new ArrayList<>();
    Set<String> wanted = new LinkedHashSet<>(only);
    Set<String> missing = new LinkedHashSet<>(only);
    for (Map.Entry<?, ?> e : defs.entrySet()) {
      String name = String.valueOf(e.getKey());
      if (!wanted.isEmpty() && !wanted.contains(name)) continue;
      missing.remove(name);
      Measure m = parseMeasure(out.size(), name, e.getValue(), errors);
      if (m != null) out.add(m);
    }
    for (String w : missing) errors.add("no measure '" + w + "' in the catalog");
    if (!errors.isEmpty()) {
      throw new IllegalArgumentException(where + ": " + String.join("; ", errors));
    }
    if (out.isEmpty()) throw new IllegalArgumentException(where + ": no measures");
    Map<String, String> formulas = new LinkedHashMap<>();
    if (top.get("kpis") instanceof Map<?, ?> kpis) {
      for (Map.Entry<?, ?> e : kpis.entrySet()) {
        if (e.getValue() instanceof Map<?, ?> k && k.get("formula") != null) {
          formulas.put(String.valueOf(e.getKey()), String.valueOf(k.get("formula")));
        }
      }
    }
    Map<String, Double> constants = new LinkedHashMap<>();
    if (top.get("constants") instanceof Map<?, ?> cs) {
      for (Map.Entry<?, ?> e : cs.entrySet()) {
        if (e.getValue() instanceof Number n) constants.put(String.valueOf(e.getKey()), n.doubleValue());
      }
    }
    return new Catalog(out, formulas, constants);
  }

  // `time:` (kpid files a cohort measure's events under another timestamp
  // of the event) is parsed and not applied here, like max_groups: the peer
  // windows every measure by event time. The work per event is the same (one
  // more timestamp read in kpid); only which bucket a cohort measure's event
  // lands in differs, and the benchmark compares throughput, not values.
  private static final Set<String> KNOWN_KEYS = Set.of("family", "types", "aggregation", "field", "group_by",
      "bucket", "help", "filter", "lateness", "max_groups", "time");

  private static Measure parseMeasure(int index, String name, Object node, List<String> errors) {
    String at = "measure '" + name + "': ";
    if (!name.matches("[A-Za-z0-9_]+")) {
      errors.add(at + "name must be letters, digits and _");
      return null;
    }
    if (!(node instanceof Map<?, ?> def)) {
      errors.add(at + "must be a map (family, types, aggregation, ...)");
      return null;
    }
    for (Object k : def.keySet()) {
      if (!KNOWN_KEYS.contains(String.valueOf(k))) errors.add(at + "unknown key '" + k + "'");
    }
    int before = errors.size();
    Family family = Family.byId(str(def.get("family")));
    if (family == null) {
      errors.add(at + "unknown family '" + def.get("family") + "' (known: campaign, product, crm)");
      return null;
    }
    EnumDescriptor typeEnum = family.type.getEnumType();
    boolean[] mask = null;
    List<String> types = list(def.get("types"));
    if (!types.isEmpty()) {
      int max = 0;
      for (EnumValueDescriptor v : typeEnum.getValues()) max = Math.max(max, v.getNumber());
      mask = new boolean[max + 1];
      for (String t : types) {
        EnumValueDescriptor v = typeEnum.findValueByName(family.typePrefix + t.toUpperCase(Locale.ROOT));
        if (v == null || v.getNumber() == 0) {
          errors.add(at + "unknown " + family.id + " event type '" + t + "'");
          continue;
        }
        mask[v.getNumber()] = true;
      }
    }
    Aggregation agg;
    try {
      agg = Aggregation.valueOf(str(def.get("aggregation")).toUpperCase(Locale.ROOT));
    } catch (RuntimeException ex) {
      errors.add(at + "unknown aggregation '" + def.get("aggregation")
          + "' (known: count, sum, min, max, avg, distinct, quantile, last)");
      return null;
    }
    FieldDescriptor field = null;
    String fieldName = str(def.get("field"));
    if (fieldName == null && agg != Aggregation.COUNT) {
      errors.add(at + agg.name().toLowerCase(Locale.ROOT) + " needs a `field`");
    } else if (fieldName != null) {
      field = family.descriptor.findFieldByName(fieldName);
      boolean numeric = agg != Aggregation.DISTINCT;
      if (field == null || field.isRepeated()) {
        errors.add(at + "unknown field '" + fieldName + "' of " + family.id + " events");
      } else if (numeric && field.getJavaType() != FieldDescriptor.JavaType.DOUBLE
          && field.getJavaType() != FieldDescriptor.JavaType.INT) {
        errors.add(at + "field '" + fieldName + "' is not numeric");
      } else if (!numeric && field.getJavaType() != FieldDescriptor.JavaType.STRING) {
        errors.add(at + "field '" + fieldName + "' is not a string; distinct needs one");
      }
    }
    List<FieldDescriptor> groupBy = new ArrayList<>();
    for (String g : list(def.get("group_by"))) {
      FieldDescriptor f = family.descriptor.findFieldByName(g);
      if (f == null || f.isRepeated() || g.equals("event_time")
          || (f.getJavaType() != FieldDescriptor.JavaType.STRING && f.getJavaType() != FieldDescriptor.JavaType.ENUM
              && f.getJavaType() != FieldDescriptor.JavaType.INT)) {
        errors.add(at + "cannot group " + family.id + " events by '" + g + "'");
      } else if (groupBy.contains(f)) {
        errors.add(at + "dimension '" + g + "' is listed twice");
      } else {
        groupBy.add(f);
      }
    }
    if (groupBy.size() > 8) errors.add(at + "at most 8 group_by dimensions per measure");
    String bucket = str(def.get("bucket"));
    long bucketSec = 60;
    if (bucket != null) {
      bucketSec = parseDurationSeconds(bucket);
      if (bucketSec <= 0 || !(bucketSec == 86400 || (bucketSec <= 3600 && 3600 % bucketSec == 0))) {
        errors.add(at + "bucket '" + bucket + "' must divide one hour (e.g. 10s, 1m, 5m, 1h) or be 1d");
      }
    } else {
      bucket = "1m";
    }
    Filter filter = null;
    String filterText = str(def.get("filter"));
    if (filterText != null) {
      try {
        filter = Filter.compile(filterText, family);
      } catch (IllegalArgumentException e) {
        errors.add(at + e.getMessage());
      }
    }
    long latenessMs = 3_600_000L;
    String lateness = str(def.get("lateness"));
    if (lateness != null) {
      long sec = parseDurationSeconds(lateness);
      if (sec <= 0) {
        errors.add(at + "bad lateness '" + lateness + "': use a positive number and a unit s, m, h or d");
      } else {
        latenessMs = sec * 1000;
      }
    }
    int maxGroups = 10_000;
    String mg = str(def.get("max_groups"));
    if (mg != null) {
      try {
        maxGroups = Integer.parseInt(mg);
      } catch (NumberFormatException e) {
        maxGroups = -1;
      }
      if (maxGroups < 1 || maxGroups > 1_000_000) {
        errors.add(at + "max_groups '" + mg + "' must be a whole number from 1 to 1000000");
      }
    }
    if (errors.size() != before) return null;
    return new Measure(index, name, family, mask, agg, field, groupBy.toArray(new FieldDescriptor[0]),
        bucketSec * 1000, bucket, filter, latenessMs, maxGroups);
  }

  /** "90s", "5m", "1h", "7d" -> seconds; -1 if malformed. Same grammar as kpid's ParseDuration. */
  static long parseDurationSeconds(String text) {
    if (text == null || text.length() < 2) return -1;
    long mult = switch (text.charAt(text.length() - 1)) {
      case 's' -> 1;
      case 'm' -> 60;
      case 'h' -> 3600;
      case 'd' -> 86400;
      default -> 0;
    };
    String digits = text.substring(0, text.length() - 1);
    if (mult == 0 || !digits.matches("[0-9]{1,12}")) return -1;
    long n = Long.parseLong(digits);
    if (n <= 0 || n > 3650L * 86400 / mult) return -1;
    return n * mult;
  }

  private static String str(Object o) {
    return o == null ? null : String.valueOf(o);
  }

  private static List<String> list(Object o) {
    List<String> out = new ArrayList<>();
    if (o instanceof List<?> l) {
      for (Object x : l) out.add(String.valueOf(x));
    } else if (o != null) {
      out.add(String.valueOf(o));
    }
    return out;
  }

  @Override
  public String toString() {
    Map<String, String> m = new LinkedHashMap<>();
    for (Measure x : measures) m.put(x.name, x.aggregation + "/" + x.bucket);
    return m.toString();
  }
}
