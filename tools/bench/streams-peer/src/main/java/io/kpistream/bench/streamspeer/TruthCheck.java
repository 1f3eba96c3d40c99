package io.kpistream.bench.streamspeer;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * Checks the per-measure totals (over every window and group) against a
 * kpigen --truth file. Two formats:
 *
 * <ul>
 *   <li>`measure NAME AGGREGATION VALUE` lines (older kpigen): each count, sum,
 *       min, max and avg measure is compared directly;
 *   <li>otherwise `kpi NAME all VALUE exact` lines: each KPI's formula is
 *       evaluated over the totals (+ - * / parentheses, numbers, constants,
 *       other KPIs, measure[all]) and compared. KPIs marked approx, using a
 *       function (p95, quantile, groups_at_least, ...), a window other than all
 *       (or a rolling one longer than the data plus an hour), or a distinct,
 *       quantile or last measure are skipped.
 * </ul>
 *
 * Counts must match exactly, everything else to 1e-6 relative (kpid sums in
 * fixed point, this peer in doubles).
 */
final class TruthCheck {
  private TruthCheck() {}

  static boolean check(Path file, Catalog catalog, Map<String, Agg> totals) throws IOException {
    Map<String, String> byMeasure = new HashMap<>();
    Map<String, String> byKpi = new HashMap<>();
    long start = 0;
    long end = 0;
    for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
      String[] f = line.trim().split("\\s+");
      if (f.length == 2 && f[0].equals("window_start")) start = Long.parseLong(f[1]);
      if (f.length == 2 && f[0].equals("window_end")) end = Long.parseLong(f[1]);
      if (f.length == 4 && f[0].equals("measure")) byMeasure.put(f[1], f[3]);
      if (f.length == 5 && f[0].equals("kpi") && f[2].equals("all") && f[4].equals("exact")) byKpi.put(f[1], f[3]);
    }
    Map<String, Catalog.Measure> measures = new HashMap<>();
    for (Catalog.Measure m : catalog.measures) measures.put(m.name, m);
    int ok = 0;
    int bad = 0;
    int skipped = 0;
    Set<String> verified = new TreeSet<>();

    if (!byMeasure.isEmpty()) {
      for (Catalog.Measure m : catalog.measures) {
        String want = byMeasure.get(m.name);
        if (!comparable(m) || want == null) {
          ++skipped;
          continue;
        }
        Double got = Main.value(m, totals.get(m.name));
        if (matches(got, want, m.aggregation == Catalog.Aggregation.COUNT)) {
          ++ok;
          verified.add(m.name);
        } else {
          ++bad;
          System.err.println("truth: MISMATCH measure " + m.name + " " + m.aggregation.name().toLowerCase(Locale.ROOT)
              + ": got " + Main.fmt(got) + ", want " + want);
        }
      }
      System.err.printf(Locale.ROOT, "truth: %d measures match, %d mismatch, %d skipped%n", ok, bad, skipped);
      return bad == 0;
    }

    final long minRollingS = end - start + 3600;
    for (Map.Entry<String, String> e : byKpi.entrySet()) {
      String formula = catalog.kpiFormulas.get(e.getKey());
      if (formula == null) {
        ++skipped;
        continue;
      }
      Eval ev = new Eval(catalog, measures, totals, minRollingS);
      Double got;
      try {
        got = ev.kpi(e.getKey());
      } catch (Unsupported u) {
        ++skipped;
        continue;
      }
      if (matches(got, e.getValue(), ev.allCounts && !ev.divided)) {
        ++ok;
        verified.addAll(ev.used);
      } else {
        ++bad;
        System.err.println("truth: MISMATCH kpi " + e.getKey() + " = " + formula + ": got " + Main.fmt(got)
            + ", want " + e.getValue());
      }
    }
    int comparable = 0;
    for (Catalog.Measure m : catalog.measures) comparable += comparable(m) ? 1 : 0;
    System.err.printf(Locale.ROOT,
        "truth: %d KPIs (over all time) match, %d mismatch, %d skipped; they cover %d of the %d count/sum/min/max/avg "
            + "measures: %s%n", ok, bad, skipped, verified.size(), comparable, verified);
    return bad == 0;
  }

  private static boolean comparable(Catalog.Measure m) {
    return switch (m.aggregation) {
      case COUNT, SUM, MIN, MAX, AVG -> true;
      default -> false;
    };
  }

  private static boolean matches(Double got, String want, boolean exact) {
    if (want.equals("none") || got == null) return want.equals("none") && got == null;
    double w = Double.parseDouble(want);
    if (exact) return got == w;
    return Math.abs(got - w) <= 1e-6 * Math.max(1.0, Math.abs(w));
  }

  private static final class Unsupported extends RuntimeException {
    Unsupported() {
      super(null, null, false, false);
    }
  }

  /** Evaluates a KPI formula over the totals, like kpid's Eval (null: no value, e.g. x / 0). */
  private static final class Eval {
    final Catalog catalog;
    final Map<String, Catalog.Measure> measures;
    final Map<String, Agg> totals;
    final long minRollingS;
    final Set<String> used = new HashSet<>();
    final Set<String> inlining = new HashSet<>();
    boolean allCounts = true;
    boolean divided;
    String s;
    int pos;

    Eval(Catalog catalog, Map<String, Catalog.Measure> measures, Map<String, Agg> totals, long minRollingS) {
      this.catalog = catalog;
      this.measures = measures;
      this.totals = totals;
      this.minRollingS = minRollingS;
    }

    Double kpi(String name) {
      String formula = catalog.kpiFormulas.get(name);
      if (formula == null || !inlining.add(name)) throw new Unsupported();
      String saveS = s;
      int savePos = pos;
      s = formula;
      pos = 0;
      Double v = expr();
      skip();
      if (pos != s.length()) throw new Unsupported();
      s = saveS;
      pos = savePos;
      inlining.remove(name);
      return v;
    }

    void skip() {
      while (pos < s.length() && Character.isWhitespace(s.charAt(pos))) ++pos;
    }

    boolean eat(char c) {
      skip();
      if (pos < s.length() && s.charAt(pos) == c) {
        ++pos;
        return true;
      }
      return false;
    }

    Double expr() {
      Double v = term();
      while (true) {
        if (eat('+')) {
          v = finite(v, term(), '+');
        } else if (eat('-')) {
          v = finite(v, term(), '-');
        } else {
          return v;
        }
      }
    }

    Double term() {
      Double v = unary();
      while (true) {
        if (eat('*')) {
          v = finite(v, unary(), '*');
        } else if (eat('/')) {
          divided = true;
          v = finite(v, unary(), '/');
        } else {
          return v;
        }
      }
    }

    static Double finite(Double a, Double b, char op) {
      if (a == null || b == null) return null;
      double r = switch (op) {
        case '+' -> a + b;
        case '-' -> a - b;
        case '*' -> a * b;
        default -> b == 0 ? Double.NaN : a / b;
      };
      return Double.isFinite(r) ? r : null;
    }

    Double unary() {
      if (eat('-')) {
        Double v = unary();
        return v == null ? null : -v;
      }
      return primary();
    }

    Double primary() {
      skip();
      if (eat('(')) {
        Double v = expr();
        if (!eat(')')) throw new Unsupported();
        return v;
      }
      int start = pos;
      if (pos < s.length() && (Character.isDigit(s.charAt(pos)) || s.charAt(pos) == '.')) {
        while (pos < s.length() && (Character.isDigit(s.charAt(pos)) || ".eE".indexOf(s.charAt(pos)) >= 0)) ++pos;
        return Double.parseDouble(s.substring(start, pos));
      }
      while (pos < s.length() && (Character.isLetterOrDigit(s.charAt(pos)) || s.charAt(pos) == '_')) ++pos;
      String name = s.substring(start, pos);
      if (name.isEmpty()) throw new Unsupported();
      skip();
      if (pos < s.length() && s.charAt(pos) == '(') throw new Unsupported(); // p95(), groups_at_least(), ...
      String window = null;
      if (eat('[')) {
        int close = s.indexOf(']', pos);
        if (close < 0) throw new Unsupported();
        window = s.substring(pos, close).trim();
        pos = close + 1;
      }
      if (window != null && !window.equals("all")) {
        long secs = Catalog.parseDurationSeconds(window);
        if (secs < minRollingS) throw new Unsupported(); // calendar windows, or shorter than the data
      }
      Catalog.Measure m = measures.get(name);
      if (m != null) {
        if (!comparable(m)) throw new Unsupported();
        used.add(name);
        allCounts &= m.aggregation == Catalog.Aggregation.COUNT;
        return Main.value(m, totals.get(name));
      }
      if (catalog.constants.containsKey(name)) {
        allCounts = false;
        return catalog.constants.get(name);
      }
      if (window == null && catalog.kpiFormulas.containsKey(name)) return kpi(name);
      throw new Unsupported(); // unknown, or a measure outside --measures
    }
  }
}
