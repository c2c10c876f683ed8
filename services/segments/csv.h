// A small RFC 4180 CSV reader for tag imports: quoted fields (with "" for a quote and line breaks
// inside quotes), CRLF or LF line ends, a UTF-8 byte-order mark at the start ignored. Each record
// keeps the line number it starts on, so errors can name the line an operator sees in the file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mkt::segments {

struct CsvRecord {
  int64_t line = 0;  // 1-based line where the record starts
  std::vector<std::string> fields;
  // Set when the record is malformed (an unterminated quote, text after a closing quote).
  std::string error;
};

// Splits `text` into records; blank lines are skipped.
std::vector<CsvRecord> ParseCsv(std::string_view text);

}  // namespace mkt::segments
