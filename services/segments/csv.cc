#include "services/segments/csv.h"

namespace mkt::segments {

std::vector<CsvRecord> ParseCsv(std::string_view text) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  std::vector<CsvRecord> records;
  int64_t line = 1;
  size_t i = 0;
  while (i < text.size()) {
    CsvRecord record;
    record.line = line;
    std::string field;
    bool record_done = false;
    while (!record_done) {
      field.clear();
      if (i < text.size() && text[i] == '"') {  // quoted field
        ++i;
        bool closed = false;
        while (i < text.size()) {
          char c = text[i++];
          if (c == '"') {
            if (i < text.size() && text[i] == '"') {
              field += '"';
              ++i;
            } else {
              closed = true;
              break;
            }
          } else {
            if (c == '\n') ++line;
            field += c;
          }
        }
        if (!closed && record.error.empty()) record.error = "unterminated quoted field";
        if (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r' &&
            record.error.empty()) {
          record.error = "text after a closing quote";
        }
        while (i < text.size() && text[i] != ',' && text[i] != '\n') ++i;  // skip the rest
      } else {
        while (i < text.size() && text[i] != ',' && text[i] != '\n') field += text[i++];
      }
      if (!field.empty() && field.back() == '\r' && (i >= text.size() || text[i] == '\n')) {
        field.pop_back();
      }
      record.fields.push_back(field);
      if (i >= text.size()) {
        record_done = true;
      } else if (text[i] == ',') {
        ++i;
      } else {  // '\n'
        ++i;
        ++line;
        record_done = true;
      }
    }
    const bool blank =
        record.fields.size() == 1 && record.fields[0].empty() && record.error.empty();
    if (!blank) records.push_back(std::move(record));
  }
  return records;
}

}  // namespace mkt::segments
