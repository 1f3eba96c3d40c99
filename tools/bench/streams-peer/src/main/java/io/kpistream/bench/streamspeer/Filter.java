package io.kpistream.bench.streamspeer;

import com.google.protobuf.Descriptors.EnumValueDescriptor;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * A measure's `filter:`, the same language as kpid's (kpi/filter.h):
 *
 * <pre>
 *   filter  := or
 *   or      := and ('or' and)*
 *   and     := not ('and' not)*
 *   not     := 'not' not | '(' filter ')' | compare
 *   compare := field op literal | field ['not'] 'in' '(' literal (',' literal)* ')'
 *   op      := == | != | < | <= | > | >=      ('=' means ==)
 *   literal := number | 'text' | "text"
 * </pre>
 *
 * Fields are the family's scalar fields; numbers compare with int32/double
 * fields, quoted text with string fields, and the enum field `type` with type
 * names as in `types:` ('click'). Text fields allow only ==, != and in. Type
 * errors are reported when the catalog loads.
 */
abstract class Filter {
  abstract boolean matches(Message msg);

  static Filter compile(String text, Family family) {
    Parser p = new Parser(text, family);
    Filter f = p.parseOr();
    p.skip();
    if (p.pos != text.length()) throw p.error("unexpected '" + text.substring(p.pos, Math.min(text.length(), p.pos + 10)) + "'");
    return f;
  }

  private enum Op { EQ, NE, LT, LE, GT, GE }

  private static final class And extends Filter {
    final Filter a;
    final Filter b;

    And(Filter a, Filter b) {
      this.a = a;
      this.b = b;
    }

    @Override
    boolean matches(Message m) {
      return a.matches(m) && b.matches(m);
    }
  }

  private static final class Or extends Filter {
    final Filter a;
    final Filter b;

    Or(Filter a, Filter b) {
      this.a = a;
      this.b = b;
    }

    @Override
    boolean matches(Message m) {
      return a.matches(m) || b.matches(m);
    }
  }

  private static final class Not extends Filter {
    final Filter a;

    Not(Filter a) {
      this.a = a;
    }

    @Override
    boolean matches(Message m) {
      return !a.matches(m);
    }
  }

  /** A comparison or in-list on a numeric or enum field (enum: by number). */
  private static final class NumCompare extends Filter {
    final FieldDescriptor field;
    final Op op; // null: in-list
    final double num;
    final double[] nums;
    final boolean negateIn;

    NumCompare(FieldDescriptor field, Op op, double num, double[] nums, boolean negateIn) {
      this.field = field;
      this.op = op;
      this.num = num;
      this.nums = nums;
      this.negateIn = negateIn;
    }

    @Override
    boolean matches(Message m) {
      Object o = m.getField(field);
      double v = o instanceof EnumValueDescriptor e ? e.getNumber() : o instanceof Integer i ? i : (Double) o;
      if (op == null) {
        boolean found = false;
        for (double x : nums) {
          if (x == v) {
            found = true;
            break;
          }
        }
        return found != negateIn;
      }
      return switch (op) {
        case EQ -> v == num;
        case NE -> v != num;
        case LT -> v < num;
        case LE -> v <= num;
        case GT -> v > num;
        case GE -> v >= num;
      };
    }
  }

  /** ==, != or in-list on a string field. */
  private static final class TextCompare extends Filter {
    final FieldDescriptor field;
    final boolean in;
    final boolean want; // == / in: true; != / not in: false
    final String str;
    final List<String> strs;

    TextCompare(FieldDescriptor field, boolean in, boolean want, String str, List<String> strs) {
      this.field = field;
      this.in = in;
      this.want = want;
      this.str = str;
      this.strs = strs;
    }

    @Override
    boolean matches(Message m) {
      String v = (String) m.getField(field);
      return (in ? strs.contains(v) : v.equals(str)) == want;
    }
  }

  private static final class Parser {
    final String s;
    final Family family;
    int pos;
    int depth;

    Parser(String s, Family family) {
      this.s = s;
      this.family = family;
    }

    IllegalArgumentException error(String what) {
      return new IllegalArgumentException("filter \"" + s + "\": " + what + " at column " + (pos + 1));
    }

    void skip() {
      while (pos < s.length() && Character.isWhitespace(s.charAt(pos))) ++pos;
    }

    private static boolean wordChar(char c) {
      return Character.isLetterOrDigit(c) || c == '_';
    }

    boolean word(String w) {
      skip();
      if (!s.startsWith(w, pos)) return false;
      int end = pos + w.length();
      if (end < s.length() && wordChar(s.charAt(end))) return false;
      pos = end;
      return true;
    }

    boolean sym(String sym) {
      skip();
      if (!s.startsWith(sym, pos)) return false;
      pos += sym.length();
      return true;
    }

    Filter parseOr() {
      Filter lhs = parseAnd();
      while (word("or")) lhs = new Or(lhs, parseAnd());
      return lhs;
    }

    Filter parseAnd() {
      Filter lhs = parseNot();
      while (word("and")) lhs = new And(lhs, parseNot());
      return lhs;
    }

    Filter parseNot() {
      if (++depth > 64) throw error("filter nested too deeply");
      try {
        if (word("not")) return new Not(parseNot());
        if (sym("(")) {
          Filter inner = parseOr();
          if (!sym(")")) throw error("expected ')'");
          return inner;
        }
        return parseCompare();
      } finally {
        --depth;
      }
    }

    /** A literal: a Double, or a String for quoted text. */
    Object parseLiteral() {
      skip();
      if (pos >= s.length()) throw error("expected a number or a 'quoted' text but the filter ended");
      char c = s.charAt(pos);
      if (c == '\'' || c == '"') {
        int close = s.indexOf(c, pos + 1);
        if (close < 0) throw error("unterminated text literal");
        String str = s.substring(pos + 1, close);
        pos = close + 1;
        return str;
      }
      int end = pos;
      while (end < s.length() && "+-.0123456789eE".indexOf(s.charAt(end)) >= 0) ++end;
      try {
        double d = Double.parseDouble(s.substring(pos, end));
        if (!Double.isFinite(d)) throw new NumberFormatException();
        pos = end;
        return d;
      } catch (NumberFormatException e) {
        throw error("expected a number or a 'quoted' text");
      }
    }

    /** The literal as the field compares it: a number (numeric and enum fields) or text. */
    Object check(FieldDescriptor f, Object lit, int at) {
      boolean numeric = f.getJavaType() == FieldDescriptor.JavaType.DOUBLE
          || f.getJavaType() == FieldDescriptor.JavaType.INT;
      if (numeric && !(lit instanceof Double)) {
        pos = at;
        throw error("type mismatch: field '" + f.getName() + "' is a number, '" + lit + "' is text");
      }
      if (!numeric && lit instanceof Double) {
        pos = at;
        throw error("type mismatch: field '" + f.getName() + "' is text; quote the value");
      }
      if (f.getJavaType() == FieldDescriptor.JavaType.ENUM) {
        for (EnumValueDescriptor v : f.getEnumType().getValues()) {
          if (v.getNumber() == 0) continue;
          String name = v.getName();
          if (name.startsWith(family.typePrefix)) name = name.substring(family.typePrefix.length());
          if (name.toLowerCase(Locale.ROOT).equals(lit)) return (double) v.getNumber();
        }
        pos = at;
        throw error("unknown " + family.id + " type '" + lit + "'");
      }
      return lit;
    }

    Filter parseCompare() {
      skip();
      int start = pos;
      while (pos < s.length() && wordChar(s.charAt(pos))) ++pos;
      String name = s.substring(start, pos);
      if (name.isEmpty()) throw error("expected a field name");
      FieldDescriptor f = family.descriptor.findFieldByName(name);
      if (f == null || f.getJavaType() == FieldDescriptor.JavaType.MESSAGE || f.isRepeated()) {
        pos = start;
        throw error("unknown field '" + name + "' of " + family.id + " events");
      }
      boolean text = f.getJavaType() == FieldDescriptor.JavaType.STRING;
      boolean negate = word("not");
      if (word("in")) {
        if (!sym("(")) throw error("expected '(' after in");
        List<Object> lits = new ArrayList<>();
        do {
          skip();
          int at = pos;
          lits.add(check(f, parseLiteral(), at));
        } while (sym(","));
        if (!sym(")")) throw error("expected ')' or ',' in the in-list");
        if (text) {
          List<String> strs = new ArrayList<>();
          for (Object o : lits) strs.add((String) o);
          return new TextCompare(f, true, !negate, null, strs);
        }
        double[] nums = new double[lits.size()];
        for (int i = 0; i < nums.length; ++i) nums[i] = (Double) lits.get(i);
        return new NumCompare(f, null, 0, nums, negate);
      }
      if (negate) throw error("expected 'in' after 'not'");
      Op op;
      if (sym("==")) {
        op = Op.EQ;
      } else if (sym("!=")) {
        op = Op.NE;
      } else if (sym("<=")) {
        op = Op.LE;
      } else if (sym(">=")) {
        op = Op.GE;
      } else if (sym("<")) {
        op = Op.LT;
      } else if (sym(">")) {
        op = Op.GT;
      } else if (sym("=")) {
        op = Op.EQ;
      } else {
        throw error("expected a comparison (==, !=, <, <=, >, >=) or 'in' after '" + name + "'");
      }
      skip();
      int at = pos;
      Object lit = check(f, parseLiteral(), at);
      if (text) {
        if (op != Op.EQ && op != Op.NE) {
          pos = at;
          throw error("text field '" + name + "' supports only == and != (and in)");
        }
        return new TextCompare(f, false, op == Op.EQ, (String) lit, null);
      }
      return new NumCompare(f, op, (Double) lit, null, false);
    }
  }
}
