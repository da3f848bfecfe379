// fltmgrd's control protocol over arbitrary bytes: requests as fltmgrd decodes them (from any root
// process that reaches \FltMgrControl) and response tables as fltmc and the management calls decode
// them. What is accepted must satisfy what the daemon and the clients rely on without checking again.
#include <string>
#include <string_view>

#include "control/control_protocol.hpp"
#include "fuzz_entry.hpp"

namespace {

using namespace fltport::control;

void check_request(std::string_view bytes) {
  DecodeError error = DecodeError::none;
  const auto request = decode_request(bytes, error);
  if (!request) {
    FUZZ_CHECK(error != DecodeError::none);
    return;
  }
  FUZZ_CHECK(error == DecodeError::none);
  const CommandSpec* spec = find_command(request->command);
  FUZZ_CHECK(spec != nullptr);
  FUZZ_CHECK(request->arguments.size() == spec->arguments);
  for (const auto& argument : request->arguments) FUZZ_CHECK(valid_field(argument));
  FUZZ_CHECK(spec->pageable || request->start == 0);
  // What was accepted encodes back to the same bytes (a start of 0 is written only when it was).
  const std::string again = encode_request(*request);
  FUZZ_CHECK(!again.empty());
  DecodeError second = DecodeError::none;
  const auto round_trip = decode_request(again, second);
  FUZZ_CHECK(round_trip && round_trip->command == request->command &&
             round_trip->arguments == request->arguments && round_trip->start == request->start);
}

void check_table(std::string_view body) {
  const auto table = decode_table(body);
  if (!table) return;
  for (const auto& row : table->rows) FUZZ_CHECK(row.size() == table->columns.size());
  for (const auto& column : table->columns) FUZZ_CHECK(table->column(column.name) >= 0);
}

void check_escape(std::string_view text) {
  const std::string escaped = escape(text);
  FUZZ_CHECK(escaped.find('\t') == std::string::npos && escaped.find('\n') == std::string::npos);
  const auto back = unescape(escaped);
  FUZZ_CHECK(back && *back == text);
}

}  // namespace

FLTPORT_FUZZ_ENTRY(control_protocol) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  check_request(bytes);
  check_table(bytes);
  check_escape(bytes.substr(0, 4096));
  return 0;
}
