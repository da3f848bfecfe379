// FilterSendMessage: the service runs the port's MessageNotify in the filter process.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "support/c_filter.hpp"
#include "support/process.hpp"

namespace fltport::test {
namespace {

class SendMessage : public PortTest {};

struct Observed {
  std::atomic<ULONG> input_length{0xFFFFFFFF};
  std::atomic<ULONG> output_length{0xFFFFFFFF};
  std::atomic<bool> input_intact{false};
  std::atomic<bool> input_null{false};
  std::atomic<bool> output_null{false};
};

TEST_F(SendMessage, RunsMessageNotifyWithTheInputAndAnOutputBufferOfTheCallersSize) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    std::vector<uint8_t> input = pattern(77, 31);
    std::vector<uint8_t> output(100 + 64, 0xCC);
    DWORD returned = 0xFFFFFFFF;
    notify_code(results, FilterSendMessage(port, input.data(), 77, output.data(), 100, &returned));
    results.notify(returned);
    results.notify(matches_pattern(output.data(), 42, 32) ? 1 : 0);
    size_t written_past = 0;
    for (size_t i = 100; i < output.size(); ++i) written_past += output[i] != 0xCC;
    results.notify(written_past);
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  Observed observed;
  filter.set_message_callback([&](ConnectionRecord&, const uint8_t* input, ULONG input_length, uint8_t* output,
                                  ULONG output_length, ULONG* returned) -> NTSTATUS {
    observed.input_length = input_length;
    observed.output_length = output_length;
    observed.input_intact = input != nullptr && input_length == 77 && matches_pattern(input, 77, 31);
    if (output == nullptr || output_length < 42) return STATUS_BUFFER_TOO_SMALL;
    const std::vector<uint8_t> answer = pattern(42, 32);
    std::memcpy(output, answer.data(), answer.size());
    *returned = 42;
    return STATUS_SUCCESS;
  });
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_EQ(wait_number(results), 42) << "lpBytesReturned";
  EXPECT_EQ(wait_number(results), 1) << "output bytes";
  EXPECT_EQ(wait_number(results), 0) << "bytes written past the output buffer";
  EXPECT_EQ(observed.input_length.load(), 77u);
  EXPECT_EQ(observed.output_length.load(), 100u);
  EXPECT_TRUE(observed.input_intact.load());
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(SendMessage, NoInputAndNoOutputAreAllowed) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    DWORD returned = 0xFFFFFFFF;
    notify_code(results, FilterSendMessage(port, nullptr, 0, nullptr, 0, &returned));
    results.notify(returned);
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  Observed observed;
  filter.set_message_callback([&](ConnectionRecord&, const uint8_t*, ULONG input_length, uint8_t*,
                                  ULONG output_length, ULONG* returned) -> NTSTATUS {
    observed.input_length = input_length;
    observed.output_length = output_length;
    *returned = 0;
    return STATUS_SUCCESS;
  });
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_EQ(wait_number(results), 0) << "lpBytesReturned";
  EXPECT_EQ(observed.input_length.load(), 0u);
  EXPECT_EQ(observed.output_length.load(), 0u);
  EXPECT_TRUE(ExitsCleanly(service));
}

struct Failure {
  NTSTATUS status;
  HRESULT expected;
  const char* name;
};
void PrintTo(const Failure& failure, std::ostream* os) { *os << failure.name; }

class SendMessageFailure : public PortTest, public ::testing::WithParamInterface<Failure> {};

TEST_P(SendMessageFailure, MessageNotifyStatusComesBackAsHResult) {
  const Failure failure = GetParam();
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    uint8_t in[8] = {}, out[8] = {};
    DWORD returned = 0;
    notify_code(results, FilterSendMessage(port, in, sizeof in, out, sizeof out, &returned));
    // The connection survives a failed request.
    notify_code(results, FilterSendMessage(port, in, 1, out, sizeof out, &returned));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  filter.set_message_callback([&](ConnectionRecord&, const uint8_t*, ULONG input_length, uint8_t*, ULONG,
                                  ULONG* returned) -> NTSTATUS {
    *returned = 0;
    return input_length == 8 ? failure.status : STATUS_SUCCESS;
  });
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  const HRESULT hr = wait_code(results);
  EXPECT_CODE(hr, failure.expected);
  EXPECT_CODE(hr, FltportHResultFromNtStatus(failure.status));
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_TRUE(ExitsCleanly(service));
}

INSTANTIATE_TEST_SUITE_P(
    Statuses, SendMessageFailure,
    ::testing::Values(Failure{STATUS_ACCESS_DENIED, E_ACCESSDENIED, "AccessDenied"},
                      Failure{STATUS_INVALID_PARAMETER, E_INVALIDARG, "InvalidParameter"},
                      Failure{STATUS_OBJECT_NAME_NOT_FOUND, HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND), "NameNotFound"},
                      Failure{STATUS_INSUFFICIENT_RESOURCES, HRESULT_FROM_WIN32(ERROR_NO_SYSTEM_RESOURCES),
                              "InsufficientResources"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(SendMessage, PortWithoutMessageNotifyIsInvalidParameter) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    uint8_t in[8] = {}, out[8] = {};
    DWORD returned = 0;
    notify_code(results, FilterSendMessage(port, in, sizeof in, out, sizeof out, &returned));
    notify_code(results, FilterSendMessage(port, nullptr, 0, nullptr, 0, &returned));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port({.message_notify = false}), STATUS_SUCCESS);
  port_ready.notify();
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER));
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER));
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(SendMessage, BytesReturnedNeverExceedsTheOutputSize) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    uint8_t in[4] = {};
    std::vector<uint8_t> out(16 + 64, 0xCC);
    DWORD returned = 0;
    const HRESULT hr = FilterSendMessage(port, in, sizeof in, out.data(), 16, &returned);
    results.notify(returned);
    size_t written_past = 0;
    for (size_t i = 16; i < out.size(); ++i) written_past += out[i] != 0xCC;
    results.notify(written_past);
    std::fprintf(stderr, "FilterSendMessage with an oversized ReturnOutputBufferLength: 0x%08X\n",
                 static_cast<unsigned>(hr));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  // A misbehaving filter claims more output than the buffer holds.
  filter.set_message_callback([&](ConnectionRecord&, const uint8_t*, ULONG, uint8_t* output, ULONG output_length,
                                  ULONG* returned) -> NTSTATUS {
    if (output != nullptr) std::memset(output, 0xAB, output_length);
    *returned = output_length + 1000;
    return STATUS_SUCCESS;
  });
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  const long long returned = wait_number(results);
  EXPECT_GE(returned, 0);
  EXPECT_LE(returned, 16) << "lpBytesReturned exceeds dwOutBufferSize";
  EXPECT_EQ(wait_number(results), 0) << "bytes written past the output buffer";
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(SendMessage, ManyServiceThreadsAtOnceEachGetTheirOwnAnswer) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100;
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    std::atomic<int> right{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          uint32_t in[2] = {static_cast<uint32_t>(t), static_cast<uint32_t>(i)};
          uint32_t out[2] = {};
          DWORD returned = 0;
          const HRESULT hr = FilterSendMessage(port, in, sizeof in, out, sizeof out, &returned);
          if (hr == S_OK && returned == sizeof out && out[0] == ~in[0] && out[1] == ~in[1]) right++;
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    results.notify(static_cast<uint64_t>(right.load()));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  filter.set_message_callback([&](ConnectionRecord&, const uint8_t* input, ULONG input_length, uint8_t* output,
                                  ULONG output_length, ULONG* returned) -> NTSTATUS {
    if (input_length != 8 || output_length < 8) return STATUS_INVALID_PARAMETER;
    uint32_t words[2];
    std::memcpy(words, input, 8);
    words[0] = ~words[0];
    words[1] = ~words[1];
    std::memcpy(output, words, 8);
    *returned = 8;
    return STATUS_SUCCESS;
  });
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  EXPECT_EQ(wait_number(results, std::chrono::seconds(20)), kThreads * kPerThread);
  EXPECT_TRUE(ExitsCleanly(service));
}

// Both directions on one connection at once: the service takes and answers the filter's messages on
// one thread while another thread sends its own requests.
TEST_F(SendMessage, BothDirectionsAtOnceOnOneConnection) {
  constexpr int kCount = 200;
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    std::atomic<int> requests_ok{0}, messages_ok{0};
    std::thread taker([&] {
      for (int i = 0; i < kCount; ++i) {
        MessageBuffer<8> buffer{};
        if (FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr) != S_OK) return;
        if (reply_message(port, buffer.header.MessageId, buffer.data, 8) == S_OK) messages_ok++;
      }
    });
    for (int i = 0; i < kCount; ++i) {
      uint64_t in = static_cast<uint64_t>(i) * 3, out = 0;
      DWORD returned = 0;
      if (FilterSendMessage(port, &in, sizeof in, &out, sizeof out, &returned) == S_OK && out == in) requests_ok++;
    }
    taker.join();
    results.notify(static_cast<uint64_t>(requests_ok.load()));
    results.notify(static_cast<uint64_t>(messages_ok.load()));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;  // default MessageNotify: echo
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  int answered = 0;
  for (int i = 0; i < kCount; ++i) {
    uint64_t message = 0xABCD0000ull + static_cast<uint64_t>(i), reply = 0;
    ULONG reply_length = sizeof reply;
    LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
    if (FltSendMessage(filter.handle(), filter.client_port(0), &message, sizeof message, &reply, &reply_length,
                       &timeout) == STATUS_SUCCESS &&
        reply == message) {
      ++answered;
    }
  }
  EXPECT_EQ(answered, kCount);
  EXPECT_EQ(wait_number(results, std::chrono::seconds(20)), kCount) << "FilterSendMessage requests answered";
  EXPECT_EQ(wait_number(results), kCount) << "messages replied";
  EXPECT_TRUE(ExitsCleanly(service));
}

}  // namespace
}  // namespace fltport::test
