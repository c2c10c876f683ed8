// Unit tests that need no server: how libpqxx exceptions become statuses, and migration checksums.
#include <stdexcept>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/pg/arrays.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"

namespace mkt::pg {
namespace {

namespace pb = ::marketing::common::v1;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(StatusFromExceptionTest, UniqueViolationIsAlreadyExists) {
  absl::Status s = StatusFromException(pqxx::unique_violation(
      "ERROR:  duplicate key value violates unique constraint \"coupons_pkey\"\n", "INSERT ...",
      "23505"));
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ReasonOf(s), pb::ALREADY_EXISTS);
  EXPECT_THAT(s.message(), HasSubstr("coupons_pkey"));
}

TEST(StatusFromExceptionTest, MessageLeavesOutDetailAndQuery) {
  absl::Status s = StatusFromException(pqxx::unique_violation(
      "ERROR:  duplicate key value violates unique constraint \"customers_phone_key\"\n"
      "DETAIL:  Key (phone)=(13800138000) already exists.\n",
      "INSERT INTO customers (phone) VALUES ('13800138000')", "23505"));
  EXPECT_THAT(s.message(), Not(HasSubstr("13800138000")));
  EXPECT_THAT(s.message(), Not(HasSubstr("INSERT")));
  EXPECT_THAT(s.message(), Not(HasSubstr("ERROR:")));
}

TEST(StatusFromExceptionTest, ConstraintViolationsAreFailedPrecondition) {
  const absl::Status statuses[] = {
      StatusFromException(pqxx::foreign_key_violation("fk", "", "23503")),
      StatusFromException(pqxx::check_violation("check", "", "23514")),
      StatusFromException(pqxx::not_null_violation("not null", "", "23502")),
  };
  for (const absl::Status& s : statuses) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_EQ(ReasonOf(s), pb::CONFLICT) << s;
  }
}

// libpqxx 6.4 throws these without a SQLSTATE and outside the sql_error hierarchy.
TEST(StatusFromExceptionTest, SerializationFailureAndDeadlockAreAborted) {
  absl::Status serialization = StatusFromException(
      pqxx::serialization_failure("ERROR:  could not serialize access due to concurrent update\n"));
  EXPECT_EQ(serialization.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(ReasonOf(serialization), pb::CONFLICT);
  absl::Status deadlock = StatusFromException(pqxx::deadlock_detected("deadlock detected"));
  EXPECT_EQ(deadlock.code(), absl::StatusCode::kAborted);
}

// The same conditions reported as a plain sql_error carrying the SQLSTATE.
TEST(StatusFromExceptionTest, SqlStateAloneIsEnough) {
  EXPECT_EQ(StatusFromException(pqxx::sql_error("x", "", "40001")).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(StatusFromException(pqxx::sql_error("x", "", "40P01")).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(StatusFromException(pqxx::sql_error("x", "", "23505")).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(StatusFromException(pqxx::sql_error("x", "", "08006")).code(),
            absl::StatusCode::kUnavailable);
}

TEST(StatusFromExceptionTest, QueryCanceledIsDeadlineExceeded) {
  absl::Status s = StatusFromException(
      pqxx::sql_error("ERROR:  canceling statement due to statement timeout\n", "", "57014"));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ReasonOf(s), pb::DEADLINE_EXCEEDED);
}

TEST(StatusFromExceptionTest, BrokenConnectionIsUnavailable) {
  absl::Status s = StatusFromException(pqxx::broken_connection("server closed the connection"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReasonOf(s), pb::DEPENDENCY_UNAVAILABLE);
  // too_many_connections derives from broken_connection.
  EXPECT_EQ(StatusFromException(pqxx::too_many_connections("too many")).code(),
            absl::StatusCode::kUnavailable);
}

TEST(StatusFromExceptionTest, InDoubtCommitIsUnknown) {
  absl::Status s = StatusFromException(pqxx::in_doubt_error("connection lost while committing"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(ReasonOf(s), pb::INTERNAL);
  EXPECT_THAT(s.message(), HasSubstr("commit outcome is unknown"));
}

TEST(StatusFromExceptionTest, EverythingElseIsInternal) {
  EXPECT_EQ(StatusFromException(pqxx::syntax_error("syntax", "SELEC", "42601")).code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(StatusFromException(pqxx::sql_error("no sqlstate")).code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(StatusFromException(pqxx::conversion_error("not an int")).code(),
            absl::StatusCode::kInternal);
  absl::Status s = StatusFromException(std::runtime_error("boom"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ReasonOf(s), pb::INTERNAL);
}

TEST(MigrationChecksumTest, IsTheSha256HexOfTheSql) {
  EXPECT_EQ(MigrationChecksum(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(MigrationChecksum("CREATE TABLE t (id int PRIMARY KEY);"),
            "96144cdb0c8048fa59428b0f898ebe84083933157fe68908b241eb9109ae8eef");
}

TEST(MigrationChecksumTest, ChangesWithAnyEdit) {
  const std::string sql = "CREATE TABLE t (id int PRIMARY KEY);";
  EXPECT_EQ(MigrationChecksum(sql), MigrationChecksum(std::string(sql)));
  EXPECT_NE(MigrationChecksum(sql), MigrationChecksum(sql + "\n"));
  EXPECT_NE(MigrationChecksum(sql), MigrationChecksum("CREATE TABLE t (id bigint PRIMARY KEY);"));
}

TEST(ArrayLiteralTest, TextElementsAreQuotedWithQuotesAndBackslashesEscaped) {
  std::string literal = "{";
  AppendTextArrayElement(literal, "plain");
  AppendTextArrayElement(literal, "");
  AppendTextArrayElement(literal, "say \"hi\"");
  AppendTextArrayElement(literal, R"(C:\dir\)");
  AppendTextArrayElement(literal, "\"");
  AppendTextArrayElement(literal, "a,b {c} 中文");
  EXPECT_EQ(literal + "}", R"({"plain","","say \"hi\"","C:\\dir\\","\"","a,b {c} 中文"})");
  EXPECT_EQ(TextArrayLiteral(std::vector<std::string>{}), "{}");
  EXPECT_EQ(TextArrayLiteral(std::vector<std::string>{"x\\y"}), R"({"x\\y"})");
}

TEST(ArrayLiteralTest, HexElementsAreLowercaseHexOfEveryByte) {
  std::string literal = "{";
  AppendHexArrayElement(literal, std::string("\x00\x01\x7f\x80\xff", 5));
  AppendHexArrayElement(literal, "");
  AppendHexArrayElement(literal, "AZ");
  EXPECT_EQ(literal + "}", R"({"00017f80ff","","415a"})");
}

}  // namespace
}  // namespace mkt::pg
