// The control protocol of fltmgrd's port "\FltMgrControl", shared by fltmgrd, fltmc and the fltuser
// management calls (src/compat/fltuser_management.cpp). Header-only, no dependencies beyond the
// standard library, so that every side validates bytes the same way.
//
// Request (one FilterSendMessage / Connection::send input), at most kMaxRequestSize bytes:
//     "FLTCTL/1" NUL  command NUL  argument NUL ...
//   Every field ends with NUL (so the request ends with NUL); at most kMaxArguments arguments, each
//   1..kMaxArgumentSize bytes, no control characters (bytes < 0x20 or 0x7F). The version field must
//   be exactly "FLTCTL/1". The command is one of kCommands, with exactly the arguments it takes,
//   plus, for the list commands, an optional decimal start index (paging).
//
// Response (the output buffer, at most kMaxResponseSize bytes), UTF-8 text:
//   The port status (the NTSTATUS MessageNotify returns, which Connection::send returns) says
//   whether the request succeeded. On failure the body is one line of explanation.
//   On success:
//     line 1: "FLTCTL/1 next=<N>"   N = 0: complete; else the start index of the next page
//     line 2: column names, TAB-separated; a name prefixed '#' is an unsigned number, '@' a
//             comma-separated list of unsigned numbers, else text
//     then one line per record, TAB-separated fields in that order.
//   Text fields escape '\\' as "\\\\", TAB as "\\t", LF as "\\n", CR as "\\r"; other bytes are raw.
//   Commands that only act (load, unload, attach, detach) answer with the header and no columns
//   or records beyond what they report (attach reports the instance name).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fltport::control {

inline constexpr std::string_view kPortName = "\\FltMgrControl";
inline constexpr std::string_view kVersion = "FLTCTL/1";
inline constexpr size_t kMaxArguments = 3;
inline constexpr size_t kMaxArgumentSize = 4096;  // PATH_MAX
inline constexpr size_t kMaxRequestSize = 64 + 16 + kMaxArguments * (kMaxArgumentSize + 1);
// One response fits one message (kMaxMessageSize is 128 KiB); lists are paged below that.
inline constexpr size_t kMaxResponseSize = 120 * 1024;
inline constexpr size_t kMaxNameSize = 255;  // filter names

struct CommandSpec {
  std::string_view name;
  size_t arguments;  // required
  bool pageable;     // takes an optional start index after its arguments
};

inline constexpr CommandSpec kCommands[] = {
    {"filters", 0, true},   {"instances", 0, true}, {"volumes", 0, true}, {"ports", 0, true},
    {"stats", 0, true},     {"stat", 1, false},     {"load", 1, false},   {"unload", 1, false},
    {"attach", 2, false},   {"detach", 2, false},   {"host", 0, false},
};

inline const CommandSpec* find_command(std::string_view name) {
  for (const auto& spec : kCommands)
    if (spec.name == name) return &spec;
  return nullptr;
}

struct Request {
  std::string command;
  std::vector<std::string> arguments;
  uint32_t start = 0;  // paging: index of the first record wanted
};

inline bool valid_field(std::string_view field) {
  if (field.empty() || field.size() > kMaxArgumentSize) return false;
  for (unsigned char c : field)
    if (c < 0x20 || c == 0x7F) return false;
  return true;
}

inline std::optional<uint32_t> parse_u32(std::string_view text) {
  if (text.empty() || text.size() > 10) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(value);
}

// Empty when the request cannot be encoded (unknown command, bad argument count or bytes).
inline std::string encode_request(const Request& request) {
  const CommandSpec* spec = find_command(request.command);
  if (spec == nullptr || request.arguments.size() != spec->arguments) return {};
  std::string out(kVersion);
  out.push_back('\0');
  out += request.command;
  out.push_back('\0');
  for (const auto& argument : request.arguments) {
    if (!valid_field(argument)) return {};
    out += argument;
    out.push_back('\0');
  }
  if (spec->pageable && request.start != 0) {
    out += std::to_string(request.start);
    out.push_back('\0');
  }
  return out;
}

enum class DecodeError { none, malformed, version, unknown_command, arguments };

// Validates every byte. On failure `error` says why; the request is then unusable.
inline std::optional<Request> decode_request(std::string_view bytes, DecodeError& error) {
  error = DecodeError::malformed;
  if (bytes.empty() || bytes.size() > kMaxRequestSize || bytes.back() != '\0') return std::nullopt;
  std::vector<std::string_view> fields;
  size_t begin = 0;
  while (begin < bytes.size()) {
    const size_t end = bytes.find('\0', begin);  // never npos: the last byte is NUL
    fields.push_back(bytes.substr(begin, end - begin));
    if (fields.size() > 2 + kMaxArguments + 1) return std::nullopt;
    begin = end + 1;
  }
  if (fields.size() < 2) return std::nullopt;
  if (fields[0] != kVersion) {
    error = DecodeError::version;
    return std::nullopt;
  }
  for (auto field : fields)
    if (!valid_field(field)) return std::nullopt;
  const CommandSpec* spec = find_command(fields[1]);
  if (spec == nullptr) {
    error = DecodeError::unknown_command;
    return std::nullopt;
  }
  const size_t given = fields.size() - 2;
  Request request;
  request.command = std::string(fields[1]);
  if (given == spec->arguments + 1 && spec->pageable) {
    auto start = parse_u32(fields.back());
    if (!start) {
      error = DecodeError::arguments;
      return std::nullopt;
    }
    request.start = *start;
  } else if (given != spec->arguments) {
    error = DecodeError::arguments;
    return std::nullopt;
  }
  for (size_t i = 0; i < spec->arguments; ++i) request.arguments.emplace_back(fields[2 + i]);
  error = DecodeError::none;
  return request;
}

// ---- responses ----

inline std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

inline std::optional<std::string> unescape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c != '\\') {
      out.push_back(c);
      continue;
    }
    if (++i == text.size()) return std::nullopt;
    switch (text[i]) {
      case '\\': out.push_back('\\'); break;
      case 't': out.push_back('\t'); break;
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      default: return std::nullopt;
    }
  }
  return out;
}

enum class ColumnType { text, number, numbers };

struct Column {
  std::string name;
  ColumnType type = ColumnType::text;
};

struct Table {
  std::vector<Column> columns;
  std::vector<std::vector<std::string>> rows;  // unescaped values
  uint32_t next = 0;                           // 0: complete

  // Index of a column, or -1.
  int column(std::string_view name) const {
    for (size_t i = 0; i < columns.size(); ++i)
      if (columns[i].name == name) return static_cast<int>(i);
    return -1;
  }
};

// Builds a response body within kMaxResponseSize, paging rows from `start`.
class TableWriter {
 public:
  explicit TableWriter(std::vector<Column> columns) : columns_(std::move(columns)) {}

  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

  std::string finish(uint32_t start = 0) const {
    std::string header_columns;
    for (size_t i = 0; i < columns_.size(); ++i) {
      if (i) header_columns.push_back('\t');
      if (columns_[i].type == ColumnType::number) header_columns.push_back('#');
      if (columns_[i].type == ColumnType::numbers) header_columns.push_back('@');
      header_columns += columns_[i].name;
    }
    header_columns.push_back('\n');
    std::string body;
    uint32_t next = 0;
    const size_t budget = kMaxResponseSize - header_columns.size() - 32;
    for (size_t r = start; r < rows_.size(); ++r) {
      std::string line;
      for (size_t i = 0; i < rows_[r].size(); ++i) {
        if (i) line.push_back('\t');
        line += escape(rows_[r][i]);
      }
      line.push_back('\n');
      if (body.size() + line.size() > budget) {
        next = static_cast<uint32_t>(r);
        break;
      }
      body += line;
    }
    return std::string(kVersion) + " next=" + std::to_string(next) + "\n" + header_columns + body;
  }

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// Parses a success body; nullopt when any byte is out of place.
inline std::optional<Table> decode_table(std::string_view body) {
  if (body.size() > kMaxResponseSize) return std::nullopt;
  std::vector<std::string_view> lines;
  size_t begin = 0;
  while (begin < body.size()) {
    size_t end = body.find('\n', begin);
    if (end == std::string_view::npos) return std::nullopt;  // every line ends with LF
    lines.push_back(body.substr(begin, end - begin));
    begin = end + 1;
  }
  if (lines.size() < 2) return std::nullopt;
  const std::string prefix = std::string(kVersion) + " next=";
  if (lines[0].substr(0, prefix.size()) != prefix) return std::nullopt;
  auto next = parse_u32(lines[0].substr(prefix.size()));
  if (!next) return std::nullopt;
  Table table;
  table.next = *next;
  auto split = [](std::string_view line) {
    std::vector<std::string_view> parts;
    size_t b = 0;
    while (true) {
      size_t e = line.find('\t', b);
      parts.push_back(line.substr(b, e == std::string_view::npos ? std::string_view::npos : e - b));
      if (e == std::string_view::npos) break;
      b = e + 1;
    }
    return parts;
  };
  if (!lines[1].empty()) {
    for (auto name : split(lines[1])) {
      Column column;
      if (!name.empty() && name[0] == '#') {
        column.type = ColumnType::number;
        name.remove_prefix(1);
      } else if (!name.empty() && name[0] == '@') {
        column.type = ColumnType::numbers;
        name.remove_prefix(1);
      }
      if (name.empty()) return std::nullopt;
      for (unsigned char c : name)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return std::nullopt;
      column.name = std::string(name);
      table.columns.push_back(std::move(column));
    }
  }
  for (size_t l = 2; l < lines.size(); ++l) {
    auto parts = split(lines[l]);
    if (parts.size() != table.columns.size()) return std::nullopt;
    std::vector<std::string> row;
    for (size_t i = 0; i < parts.size(); ++i) {
      auto value = unescape(parts[i]);
      if (!value) return std::nullopt;
      // Numbers are 64-bit counters: 1..20 digits.
      if (table.columns[i].type == ColumnType::number &&
          (value->empty() || value->size() > 20 || value->find_first_not_of("0123456789") != std::string::npos))
        return std::nullopt;
      if (table.columns[i].type == ColumnType::numbers &&
          value->find_first_not_of("0123456789,") != std::string::npos)
        return std::nullopt;
      row.push_back(std::move(*value));
    }
    table.rows.push_back(std::move(row));
  }
  return table;
}

// Instance names: Linux has none, so the daemon names each instance after its filter and path.
inline std::string instance_name(std::string_view filter, std::string_view path) {
  return std::string(filter) + " Instance:" + std::string(path);
}

// Filter names: 1..kMaxNameSize of [A-Za-z0-9_.-], not starting with '.'.
inline bool valid_filter_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameSize || name[0] == '.') return false;
  for (unsigned char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
          c == '.'))
      return false;
  return true;
}

}  // namespace fltport::control
