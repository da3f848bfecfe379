// The client side of fltmgrd's control port, shared by fltmc and the fltuser management calls:
// connects to "\FltMgrControl", sends one request, and follows the pages of a list.
#pragma once

#include <fltport/port.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "control/control_protocol.hpp"

namespace fltport::control {

struct CallResult {
  bool reached = false;  // false: fltmgrd could not be reached (status says why)
  Status status;         // the connection's failure, or the command's status
  std::string message;   // on failure: the daemon's explanation
  Table table;           // on success: every page joined
};

inline CallResult call(Request request) {
  CallResult result;
  auto connection = Connection::connect(std::string(kPortName));
  if (!connection) {
    result.status = connection.status();
    return result;
  }
  result.reached = true;
  std::vector<std::byte> output(kMaxResponseSize);
  const CommandSpec* spec = find_command(request.command);
  for (int page = 0; page < 100000; ++page) {
    const std::string bytes = encode_request(request);
    if (bytes.empty() || spec == nullptr) {
      result.status = STATUS_INVALID_PARAMETER;
      result.message = "invalid request";
      return result;
    }
    size_t returned = 0;
    Status status = connection->send(ConstBytes(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()),
                                     MutableBytes(output), returned);
    const std::string_view body(reinterpret_cast<const char*>(output.data()), std::min(returned, output.size()));
    if (!status.ok()) {
      result.status = status;
      result.message.assign(body.begin(), body.end());
      if (status == Status(STATUS_PORT_DISCONNECTED)) result.message = "fltmgrd closed the connection";
      for (auto& c : result.message)
        if (static_cast<unsigned char>(c) < 0x20) c = ' ';
      return result;
    }
    auto table = decode_table(body);
    if (!table) {
      result.status = STATUS_INVALID_PARAMETER;
      result.message = "malformed response from fltmgrd";
      return result;
    }
    if (page == 0) {
      result.table.columns = table->columns;
    } else {
      bool same = table->columns.size() == result.table.columns.size();
      for (size_t i = 0; same && i < table->columns.size(); ++i)
        same = table->columns[i].name == result.table.columns[i].name &&
               table->columns[i].type == result.table.columns[i].type;
      if (!same) {
        result.status = STATUS_INVALID_PARAMETER;
        result.message = "inconsistent pages from fltmgrd";
        return result;
      }
    }
    for (auto& row : table->rows) result.table.rows.push_back(std::move(row));
    if (table->next == 0 || !spec->pageable) break;
    if (table->next <= request.start) {
      result.status = STATUS_INVALID_PARAMETER;
      result.message = "fltmgrd paged backwards";
      return result;
    }
    request.start = table->next;
  }
  result.status = STATUS_SUCCESS;
  return result;
}

}  // namespace fltport::control
