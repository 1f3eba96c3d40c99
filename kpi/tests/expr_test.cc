#include "kpi/expr.h"

#include <gtest/gtest.h>

#include <map>

namespace kpistream::kpi {
namespace {

class ExprTest : public ::testing::Test {
 protected:
  std::optional<double> Run(std::string_view text) {
    auto e = ParseExpr(text, resolve_);
    EXPECT_TRUE(e.ok()) << e.status();
    if (!e.ok()) return std::nullopt;
    return Eval(*e, [&](int ref, double) { return vals_[ref]; });
  }
  std::string Error(std::string_view text) {
    auto e = ParseExpr(text, resolve_);
    EXPECT_FALSE(e.ok());
    return e.ok() ? "" : std::string(e.status().message());
  }
  std::map<std::string, int, std::less<>> names_{{"clicks", 0}, {"impressions", 1}, {"zero", 2}, {"none", 3}};
  std::map<int, std::optional<double>> vals_{{0, 30.0}, {1, 1000.0}, {2, 0.0}, {3, std::nullopt}};
  NameResolver resolve_ = [this](std::string_view n) -> std::optional<int> {
    auto it = names_.find(n);
    if (it == names_.end()) return std::nullopt;
    return it->second;
  };
};

TEST_F(ExprTest, ArithmeticAndPrecedence) {
  EXPECT_DOUBLE_EQ(*Run("clicks / impressions"), 0.03);
  EXPECT_DOUBLE_EQ(*Run("1 + 2 * 3"), 7);
  EXPECT_DOUBLE_EQ(*Run("(1 + 2) * 3"), 9);
  EXPECT_DOUBLE_EQ(*Run("-clicks + 40"), 10);
  EXPECT_DOUBLE_EQ(*Run("10 - 4 - 3"), 3);
  EXPECT_DOUBLE_EQ(*Run("100 / 10 / 5"), 2);
  EXPECT_DOUBLE_EQ(*Run("clicks/impressions*1000"), 30);
}

TEST_F(ExprTest, FunctionsAndMissingValues) {
  EXPECT_DOUBLE_EQ(*Run("max(clicks, impressions, 5)"), 1000);
  EXPECT_DOUBLE_EQ(*Run("min(clicks, 5)"), 5);
  EXPECT_DOUBLE_EQ(*Run("abs(0 - clicks)"), 30);
  EXPECT_DOUBLE_EQ(*Run("coalesce(none, clicks)"), 30);
  EXPECT_FALSE(Run("none + 1").has_value());
}

TEST_F(ExprTest, DivisionByZeroIsNoValueNeverInf) {
  EXPECT_FALSE(Run("clicks / zero").has_value());
  EXPECT_FALSE(Run("1 / (clicks - 30)").has_value());
  EXPECT_DOUBLE_EQ(*Run("coalesce(clicks / zero, 0)"), 0);
}

TEST_F(ExprTest, ErrorsSayWhatAndWhere) {
  EXPECT_EQ(Error("clicks / impresions"),
            "formula \"clicks / impresions\": unknown name 'impresions': not a measure, KPI or constant of this file "
            "at column 10");
  EXPECT_NE(Error("clicks +").find("formula ended"), std::string::npos);
  EXPECT_NE(Error("(clicks").find("expected ')'"), std::string::npos);
  EXPECT_NE(Error("clicks ** 2").find("column 9"), std::string::npos);
  EXPECT_NE(Error("sqrt(clicks)").find("unknown function 'sqrt'"), std::string::npos);
  EXPECT_NE(Error("abs(1, 2)").find("abs() takes 1"), std::string::npos);
  EXPECT_NE(Error(std::string(200, '(') + "1" + std::string(200, ')')).find("nested too deeply"), std::string::npos);
}

TEST_F(ExprTest, CollectRefsIsUniqueInOrder) {
  auto e = ParseExpr("impressions / clicks + clicks", resolve_);
  ASSERT_TRUE(e.ok());
  std::vector<int> refs;
  CollectRefs(*e, &refs);
  EXPECT_EQ(refs, (std::vector<int>{1, 0}));
}

}  // namespace
}  // namespace kpistream::kpi
