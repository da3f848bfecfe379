// fltmc: manages the filters hosted by fltmgrd through its control port, with output laid out like
// Windows' fltmc.exe, or JSON with --json.
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "control/control_client.hpp"

namespace {

namespace control = fltport::control;
using fltport::Status;

// ---- JSON ----

void json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    char buf[8];
    switch (c) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\t':
        out += "\\t";
        continue;
      case '\r':
        out += "\\r";
        continue;
      default:
        break;
    }
    if (c < 0x20 || c == 0x7F) {
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      continue;
    }
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      continue;
    }
    // Multi-byte UTF-8 passes through when well-formed; any other byte becomes U+00XX so that the
    // output is always valid JSON (file names need not be UTF-8).
    size_t length = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    bool valid = length != 0 && i + length <= text.size() && !(c == 0xC0 || c == 0xC1 || c > 0xF4);
    for (size_t k = 1; valid && k < length; ++k)
      valid = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
    if (valid) {
      out.append(text.substr(i, length));
      i += length - 1;
    } else {
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    }
  }
  out.push_back('"');
}

std::string to_json(const control::Table& table) {
  std::string out = "[";
  for (size_t r = 0; r < table.rows.size(); ++r) {
    out += r ? ",\n  {" : "\n  {";
    for (size_t i = 0; i < table.columns.size(); ++i) {
      if (i) out += ", ";
      json_string(out, table.columns[i].name);
      out += ": ";
      const std::string& value = table.rows[r][i];
      switch (table.columns[i].type) {
        case control::ColumnType::number:
          out += value;  // validated digits
          break;
        case control::ColumnType::numbers: {
          out.push_back('[');
          bool first = true;
          size_t begin = 0;
          while (begin <= value.size() && !value.empty()) {
            size_t end = value.find(',', begin);
            if (end == std::string::npos) end = value.size();
            std::string part = value.substr(begin, end - begin);
            if (!part.empty()) {
              if (!first) out += ", ";
              out += part;
              first = false;
            }
            begin = end + 1;
          }
          out.push_back(']');
          break;
        }
        case control::ColumnType::text:
          json_string(out, value);
          break;
      }
    }
    out += "}";
  }
  out += table.rows.empty() ? "]\n" : "\n]\n";
  return out;
}

// ---- text ----

const std::string& field(const control::Table& table, const std::vector<std::string>& row, const char* name) {
  static const std::string empty;
  const int index = table.column(name);
  return index < 0 ? empty : row[static_cast<size_t>(index)];
}

std::string filters_text(const control::Table& t) {
  std::string out =
      "\nFilter Name                     Num Instances    Altitude    Frame\n"
      "------------------------------  -------------  ------------  -----\n";
  char line[8192];
  for (const auto& row : t.rows) {
    std::snprintf(line, sizeof line, "%-30s  %9s       %-12s%4s\n", field(t, row, "name").c_str(),
                  field(t, row, "instances").c_str(), field(t, row, "altitude").c_str(),
                  field(t, row, "frame").c_str());
    out += line;
  }
  return out;
}

std::string instances_text(const control::Table& t) {
  std::string out =
      "\nFilter                Volume Name                              Altitude        Instance Name       "
      "Frame\n"
      "--------------------  -------------------------------------  ------------  ----------------------  "
      "-----\n";
  char line[16384];
  for (const auto& row : t.rows) {
    std::snprintf(line, sizeof line, "%-20s  %-37s  %9s     %-22s  %3s\n", field(t, row, "filter").c_str(),
                  field(t, row, "volume").c_str(), field(t, row, "altitude").c_str(),
                  field(t, row, "instance").c_str(), field(t, row, "frame").c_str());
    out += line;
  }
  return out;
}

std::string volumes_text(const control::Table& t) {
  std::string out =
      "\nVolume Name                              FileSystem   Instances\n"
      "---------------------------------------  ----------  ----------\n";
  char line[8192];
  for (const auto& row : t.rows) {
    std::snprintf(line, sizeof line, "%-39s  %-10s  %10s\n", field(t, row, "volume").c_str(),
                  field(t, row, "filesystem").c_str(), field(t, row, "instances").c_str());
    out += line;
  }
  return out;
}

std::string ports_text(const control::Table& t) {
  std::string out =
      "\nPort Name                       Connections  Max  Listening  Socket\n"
      "------------------------------  -----------  ---  ---------  "
      "----------------------------------------\n";
  char line[8192];
  for (const auto& row : t.rows) {
    std::snprintf(line, sizeof line, "%-30s  %11s  %3s  %-9s  %s\n", field(t, row, "name").c_str(),
                  field(t, row, "connections").c_str(), field(t, row, "max_connections").c_str(),
                  field(t, row, "listening").c_str(), field(t, row, "socket").c_str());
    out += line;
  }
  return out;
}

// Upper bound, in µs, of the bucket where the given fraction of verdicts is reached ("-" if none).
std::string percentile(const std::string& histogram, double fraction) {
  std::vector<uint64_t> buckets;
  size_t begin = 0;
  while (begin < histogram.size()) {
    size_t end = histogram.find(',', begin);
    if (end == std::string::npos) end = histogram.size();
    buckets.push_back(std::strtoull(histogram.substr(begin, end - begin).c_str(), nullptr, 10));
    begin = end + 1;
  }
  uint64_t total = 0;
  for (auto b : buckets) total += b;
  if (total == 0) return "-";
  uint64_t seen = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    seen += buckets[i];
    if (static_cast<double>(seen) >= fraction * static_cast<double>(total))
      return "<" + std::to_string(uint64_t{1} << (i + 1));
  }
  return "-";
}

std::string stats_text(const control::Table& t) {
  std::string out =
      "\nFilter Name                         Events     Allowed      Denied    Defaults  Cache Hits   Post "
      "Ops  p50 us  p99 us\n"
      "------------------------------  ----------  ----------  ----------  ----------  ----------  --------- "
      " ------  ------\n";
  char line[8192];
  for (const auto& row : t.rows) {
    const std::string& histogram = field(t, row, "latency_us_log2");
    std::snprintf(line, sizeof line, "%-30s  %10s  %10s  %10s  %10s  %10s  %9s  %6s  %6s\n",
                  field(t, row, "name").c_str(), field(t, row, "events").c_str(),
                  field(t, row, "allowed").c_str(), field(t, row, "denied").c_str(),
                  field(t, row, "defaults_taken").c_str(), field(t, row, "cache_hits").c_str(),
                  field(t, row, "post_notifications").c_str(), percentile(histogram, 0.5).c_str(),
                  percentile(histogram, 0.99).c_str());
    out += line;
  }
  return out;
}

// What went through each instance (fltmc stats, all filters): Windows' fltmc has no such view.
std::string instance_stats_text(const control::Table& t) {
  if (t.rows.empty()) return "";
  std::string out =
      "\nFilter                Volume Name                                Events     Allowed      Denied    "
      "Defaults   Post Ops  p50 us  p99 us\n"
      "--------------------  -------------------------------------  ----------  ----------  ----------  "
      "----------  ---------  ------  ------\n";
  char line[16384];
  for (const auto& row : t.rows) {
    const std::string& histogram = field(t, row, "latency_us_log2");
    std::snprintf(line, sizeof line, "%-20s  %-37s  %10s  %10s  %10s  %10s  %9s  %6s  %6s\n",
                  field(t, row, "filter").c_str(), field(t, row, "volume").c_str(),
                  field(t, row, "events").c_str(), field(t, row, "allowed").c_str(),
                  field(t, row, "denied").c_str(), field(t, row, "defaults_taken").c_str(),
                  field(t, row, "post_notifications").c_str(), percentile(histogram, 0.5).c_str(),
                  percentile(histogram, 0.99).c_str());
    out += line;
  }
  return out;
}

std::string host_text(const control::Table& t) {
  if (t.rows.empty()) return "";
  const auto& row = t.rows[0];
  return "\nHost queues: " + field(t, row, "waiting") + " events waiting for a verdict (limit " +
         field(t, row, "waiting_limit") + ", " + field(t, row, "overload_defaults") +
         " answered by default over it), " + field(t, row, "kernel_queued") + " queued in the kernel, " +
         field(t, row, "post_operations_queued") + " post-operations queued (" +
         field(t, row, "post_operations_dropped") +
         " dropped over the bound)\nQueue overflows: " + field(t, row, "permission_overflows") +
         " permission, " + field(t, row, "notification_overflows") +
         " notification\nContent reads: " + field(t, row, "content_reads") + " (" +
         field(t, row, "content_reads_from_page_cache") + " from the page cache, " +
         field(t, row, "content_read_timeouts") + " timed out, " + field(t, row, "content_readers_stuck") +
         " reader threads stuck now)\n";
}

std::string absolute_path(const std::string& path) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) != nullptr) return resolved;
  if (!path.empty() && path.front() == '/') return path;
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

int run_command(const control::Request& request, bool json) {
  auto result = control::call(request);
  if (!result.reached) {
    if (result.status == Status(STATUS_ACCESS_DENIED))
      std::fprintf(stderr, "fltmc: access to fltmgrd's control port denied (run as root)\n");
    else if (result.status == Status(STATUS_OBJECT_NAME_NOT_FOUND))
      std::fprintf(stderr, "fltmc: cannot reach fltmgrd (is it running?)\n");
    else
      std::fprintf(stderr, "fltmc: cannot reach fltmgrd (is it running?): %s\n",
                   result.status.to_string().c_str());
    return 1;
  }
  if (!result.status.ok()) {
    std::fprintf(stderr, "fltmc: %s failed: %s (%s)\n", request.command.c_str(),
                 result.message.empty() ? "error" : result.message.c_str(),
                 result.status.to_string().c_str());
    return 1;
  }
  const auto& table = result.table;
  std::string out;
  const std::string& command = request.command;
  if (command == "load" || command == "unload" || command == "attach" || command == "detach") {
    const std::string message = table.rows.empty() ? "" : field(table, table.rows[0], "message");
    const std::string instance = table.rows.empty() ? "" : field(table, table.rows[0], "instance");
    if (json) {
      out = "{\"status\": \"ok\", \"message\": ";
      json_string(out, message);
      if (!instance.empty()) {
        out += ", \"instance\": ";
        json_string(out, instance);
      }
      out += "}\n";
    } else {
      out = message + "\n";
    }
  } else if (json) {
    out = to_json(table);
  } else if (command == "filters") {
    out = filters_text(table);
  } else if (command == "instances") {
    out = instances_text(table);
  } else if (command == "volumes") {
    out = volumes_text(table);
  } else if (command == "ports") {
    out = ports_text(table);
  } else if (command == "host") {
    out = host_text(table);
  } else {
    out = stats_text(table);
    if (command == "stats") {  // all filters: their instances and the host's queues too
      auto instances = control::call(control::Request{"instances", {}, 0});
      if (instances.reached && instances.status.ok()) out += instance_stats_text(instances.table);
      auto host = control::call(control::Request{"host", {}, 0});
      if (host.reached && host.status.ok()) out += host_text(host.table);
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    CLI::App app{"fltmc: manage the filters hosted by fltmgrd", "fltmc"};
    app.require_subcommand(1);
    bool json = false;
    std::string name, path;
    control::Request request;
    auto add = [&](const char* command, const char* description) {
      auto* sub = app.add_subcommand(command, description);
      sub->add_flag("--json", json, "JSON output");
      return sub;
    };
    add("filters", "List the filters fltmgrd hosts");
    add("instances", "List the filters' instances");
    add("volumes", "List the directories filters are attached to");
    add("ports", "List the communication ports of fltmgrd and its filters, with their connections");
    add("stats", "Show the filters' statistics (and, for all filters, the host's queues)")
        ->add_option("NAME", name, "Only this filter");
    add("host", "Show the host's queues: events waiting, queued in the kernel, overflows");
    add("load", "Load a filter")->add_option("NAME", name, "Filter name")->required();
    add("unload", "Unload a filter")->add_option("NAME", name, "Filter name")->required();
    auto* attach = add("attach", "Attach a filter to a directory tree");
    attach->add_option("NAME", name, "Filter name")->required();
    attach->add_option("PATH", path, "Directory")->required();
    auto* detach = add("detach", "Detach a filter from a directory tree");
    detach->add_option("NAME", name, "Filter name")->required();
    detach->add_option("PATH", path, "Directory")->required();
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    const std::string command = app.get_subcommands().front()->get_name();
    request.command = command;
    if (command == "stats" && !name.empty()) {
      request.command = "stat";
      request.arguments = {name};
    } else if (command == "load" || command == "unload") {
      request.arguments = {name};
    } else if (command == "attach" || command == "detach") {
      request.arguments = {name, absolute_path(path)};
    }
    for (const auto& argument : request.arguments) {
      if (!control::valid_field(argument)) {
        std::fprintf(stderr, "fltmc: invalid argument '%s'\n", argument.c_str());
        return 1;
      }
    }
    if (!request.arguments.empty() && !control::valid_filter_name(request.arguments[0])) {
      std::fprintf(stderr, "fltmc: invalid filter name '%s'\n", request.arguments[0].c_str());
      return 1;
    }
    return run_command(request, json);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fltmc: %s\n", e.what());
    return 1;
  }
}
