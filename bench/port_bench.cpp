// fltport-bench: filter -> service -> reply round trips through a communication port, beside the
// transports it is built on and the peers a team would otherwise pick, all in one run so that the
// ratios compare like with like on a noisy machine.
//
//   fltport-bench [--iterations N] [--json PATH]
#include <fltport/fltuser.h>
#include <fltport/port.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "baselines.hpp"
#include "harness.hpp"

namespace {

using namespace fltport;
using namespace fltport::bench;

constexpr size_t kRequestSize = 64;
constexpr size_t kReplySize = 16;
const char* const kPortName = "\\BenchPort";

// The service side in the C++ API: one reply and the wait for the next message per crossing.
int cpp_service() {
  std::optional<Connection> connection;
  for (int attempt = 0; attempt < 1000 && !connection; ++attempt) {
    auto connected = Connection::connect(kPortName);
    if (connected)
      connection.emplace(std::move(*connected));
    else
      usleep(5000);
  }
  if (!connection) return 2;
  std::byte request[kRequestSize];
  std::byte reply[kReplySize] = {};
  auto message = connection->get_message(request);
  while (message) {
    std::memcpy(reply, request, sizeof reply);
    message = connection->reply_and_get(message->id, reply, STATUS_SUCCESS, request);
  }
  return message.status() == Status(STATUS_PORT_DISCONNECTED) ? 0 : 3;
}

// The service side as a Windows service writes it: FilterGetMessage, then FilterReplyMessage.
int c_service() {
  HANDLE port = INVALID_HANDLE_VALUE;
  HRESULT hr = HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND);
  for (int attempt = 0; attempt < 1000 && FAILED(hr); ++attempt) {
    hr = FilterConnectCommunicationPort(L"\\BenchPort", 0, nullptr, 0, nullptr, &port);
    if (FAILED(hr)) usleep(5000);
  }
  if (FAILED(hr)) return 2;
  struct {
    FILTER_MESSAGE_HEADER header;
    unsigned char data[kRequestSize];
  } message;
  struct {
    FILTER_REPLY_HEADER header;
    unsigned char data[kReplySize];
  } reply{};
  for (;;) {
    hr = FilterGetMessage(port, &message.header, sizeof message, nullptr);
    if (FAILED(hr)) break;
    reply.header.MessageId = message.header.MessageId;
    std::memcpy(reply.data, message.data, sizeof reply.data);
    hr = FilterReplyMessage(port, &reply.header, sizeof reply);
    if (FAILED(hr)) break;
  }
  CloseHandle(port);
  return hr == HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE) ? 0 : 3;
}

// The filter side: a port, one service process, FltSendMessage-equivalent round trips.
LatencyStats port_round_trips(const std::string& name, int (*service)(), size_t warmup, size_t iterations) {
  std::mutex mutex;
  std::condition_variable connected;
  ClientPort client;
  ServerPortOptions options;
  options.name = kPortName;
  options.security = PortSecurity::everyone();
  options.on_connect = [&](ClientPort& port, const ConnectRequest&, void*&) {
    std::lock_guard lock(mutex);
    client = std::move(port);
    connected.notify_all();
    return Status(STATUS_SUCCESS);
  };
  // The service starts first and retries its connect: no fork while this process runs threads.
  ChildProcess child([service] { return service(); });
  auto port = ServerPort::create(std::move(options));
  if (!port) throw std::runtime_error("cannot create the benchmark port: " + port.status().to_string());
  {
    std::unique_lock lock(mutex);
    if (!connected.wait_for(lock, std::chrono::seconds(10), [&] { return client.is_open(); })) {
      throw std::runtime_error("the benchmark service did not connect");
    }
  }
  std::byte request[kRequestSize] = {std::byte{1}};
  std::byte reply[kReplySize];
  auto stats = measure(
      name, warmup, iterations,
      [&] {
        auto replied = client.send(request, reply);
        if (!replied || replied->length != kReplySize) throw std::runtime_error("round trip failed");
      },
      [&] { return child.cpu_seconds(); });
  client.close();
  if (child.wait_or_kill(std::chrono::seconds(5)) != 0)
    throw std::runtime_error("the benchmark service failed");
  return stats;
}

}  // namespace

int main(int argc, char** argv) {
  size_t iterations = 200000;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--iterations" && i + 1 < argc) {
      iterations = std::stoul(argv[++i]);
    } else if (arg == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--iterations N] [--json PATH]\n", argv[0]);
      return 2;
    }
  }
  const size_t warmup = 1000;
  char directory[] = "/tmp/fltport-bench-XXXXXX";
  if (mkdtemp(directory) == nullptr) return 1;
  setenv("FLTPORT_RUNTIME_DIR", directory, 1);

  std::vector<LatencyStats> rows;
  try {
    rows.push_back(busy_poll_pingpong(warmup, iterations, kRequestSize, kReplySize));
    rows.push_back(spin_futex_pingpong(warmup, iterations, kRequestSize, kReplySize));
    rows.push_back(seqpacket_pingpong(warmup, iterations, kRequestSize, kReplySize));
    rows.push_back(port_round_trips("fltport socket, reply_and_get", cpp_service, warmup, iterations));
    rows.push_back(port_round_trips("fltport socket, C Get+Reply", c_service, warmup, iterations));
    rows.push_back(zmq_reqrep(warmup, std::min<size_t>(iterations, 50000), kRequestSize, kReplySize));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "benchmark failed: %s\n", error.what());
    std::filesystem::remove_all(directory);
    return 1;
  }
  std::filesystem::remove_all(directory);  // the port left its lock file there

  std::printf("\n%zu round trips of a %zu-byte request and a %zu-byte reply between two processes\n",
              iterations, kRequestSize, kReplySize);
  print_table(rows, kBusyPollName);
  auto p50 = [&rows](const std::string& name) {
    for (const auto& row : rows) {
      if (row.name == name) return row.p50_us;
    }
    return 0.0;
  };
  const double socket = p50(kSeqpacketName);
  std::printf(
      "\nport overhead over its own transport (p50 / bare seqpacket p50): reply_and_get x%.2f, "
      "C Get+Reply x%.2f\n",
      p50("fltport socket, reply_and_get") / socket, p50("fltport socket, C Get+Reply") / socket);
  if (!json_path.empty()) write_json(rows, json_path);
  return 0;
}
