// The NTSTATUS -> Win32 -> HRESULT table: each pair a user-mode service relies on, with the values
// of the Windows SDK.
#include <fltport/result.hpp>
#include <fltport/status.h>
#include <gtest/gtest.h>

namespace {

TEST(StatusValues, AreThoseOfTheWindowsSdk) {
  EXPECT_EQ(static_cast<uint32_t>(STATUS_BUFFER_OVERFLOW), 0x80000005u);
  EXPECT_EQ(static_cast<uint32_t>(STATUS_PORT_DISCONNECTED), 0xC0000037u);
  EXPECT_EQ(static_cast<uint32_t>(STATUS_CONNECTION_COUNT_LIMIT), 0xC0000246u);
  EXPECT_EQ(static_cast<uint32_t>(STATUS_FLT_NO_WAITER_FOR_REPLY), 0xC01C0020u);
  EXPECT_EQ(static_cast<uint32_t>(E_ACCESSDENIED), 0x80070005u);
  EXPECT_EQ(static_cast<uint32_t>(E_INVALIDARG), 0x80070057u);
  EXPECT_EQ(static_cast<uint32_t>(ERROR_FLT_NO_WAITER_FOR_REPLY), 0x801F0020u);
  EXPECT_EQ(static_cast<uint32_t>(HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)), 0x80070002u);
  EXPECT_EQ(HRESULT_FROM_WIN32(0), S_OK);
  EXPECT_EQ(HRESULT_FROM_WIN32(E_INVALIDARG), E_INVALIDARG) << "negative values pass through";
}

TEST(StatusValues, BufferOverflowIsAWarningThatIsNotSuccess) {
  EXPECT_FALSE(NT_SUCCESS(STATUS_BUFFER_OVERFLOW));
  EXPECT_TRUE(NT_SUCCESS(STATUS_TIMEOUT)) << "STATUS_TIMEOUT is a success code: compare, do not test NT_SUCCESS";
  EXPECT_FALSE(fltport::Status(STATUS_TIMEOUT).ok());
}

struct Pair {
  NTSTATUS status;
  ULONG win32;
};

class NtStatusToWin32 : public ::testing::TestWithParam<Pair> {};

TEST_P(NtStatusToWin32, MapsAsWindowsDoes) {
  EXPECT_EQ(RtlNtStatusToDosError(GetParam().status), GetParam().win32);
  EXPECT_EQ(FltportHResultFromNtStatus(GetParam().status), HRESULT_FROM_WIN32(GetParam().win32));
}

INSTANTIATE_TEST_SUITE_P(
    CommunicationPortStatuses, NtStatusToWin32,
    ::testing::Values(Pair{STATUS_OBJECT_NAME_NOT_FOUND, ERROR_FILE_NOT_FOUND},
                      Pair{STATUS_ACCESS_DENIED, ERROR_ACCESS_DENIED},
                      Pair{STATUS_CONNECTION_COUNT_LIMIT, ERROR_CONNECTION_COUNT_LIMIT},
                      Pair{STATUS_PORT_DISCONNECTED, ERROR_INVALID_HANDLE},
                      Pair{STATUS_BUFFER_OVERFLOW, ERROR_MORE_DATA},
                      Pair{STATUS_THREAD_IS_TERMINATING, ERROR_ACCESS_DENIED},
                      Pair{STATUS_OBJECT_NAME_COLLISION, ERROR_ALREADY_EXISTS},
                      Pair{STATUS_INVALID_PARAMETER, ERROR_INVALID_PARAMETER},
                      Pair{STATUS_INSUFFICIENT_RESOURCES, ERROR_NO_SYSTEM_RESOURCES},
                      Pair{STATUS_CANCELLED, ERROR_OPERATION_ABORTED},
                      Pair{STATUS_TIMEOUT, ERROR_TIMEOUT},
                      Pair{STATUS_IO_TIMEOUT, ERROR_SEM_TIMEOUT},
                      Pair{STATUS_NOT_IMPLEMENTED, ERROR_INVALID_FUNCTION},
                      Pair{STATUS_UNSUCCESSFUL, ERROR_GEN_FAILURE}));

TEST(NtStatusToHResult, SuccessIsSOk) { EXPECT_EQ(FltportHResultFromNtStatus(STATUS_SUCCESS), S_OK); }

TEST(NtStatusToHResult, NoWaiterForReplyBecomesItsFilterManagerHResult) {
  EXPECT_EQ(FltportHResultFromNtStatus(STATUS_FLT_NO_WAITER_FOR_REPLY), ERROR_FLT_NO_WAITER_FOR_REPLY);
}

TEST(NtStatusToHResult, OtherFilterManagerStatusesKeepTheirCode) {
  // STATUS_FLT_INSTANCE_NOT_FOUND 0xC01C0015 -> ERROR_FLT_INSTANCE_NOT_FOUND 0x801F0015.
  EXPECT_EQ(static_cast<uint32_t>(FltportHResultFromNtStatus(static_cast<NTSTATUS>(0xC01C0015u))), 0x801F0015u);
  // The warning STATUS_FLT_BUFFER_TOO_SMALL is the exception Windows makes.
  EXPECT_EQ(RtlNtStatusToDosError(static_cast<NTSTATUS>(0x801C0001u)), static_cast<ULONG>(ERROR_INSUFFICIENT_BUFFER));
}

TEST(NtStatusToWin32Rules, UnknownStatusIsMrMidNotFound) {
  EXPECT_EQ(RtlNtStatusToDosError(static_cast<NTSTATUS>(0xC0FF0123u)), static_cast<ULONG>(ERROR_MR_MID_NOT_FOUND));
}

TEST(NtStatusToWin32Rules, WrappedWin32ErrorsAndCustomerCodesComeBack) {
  EXPECT_EQ(RtlNtStatusToDosError(static_cast<NTSTATUS>(0xC0070005u)), static_cast<ULONG>(ERROR_ACCESS_DENIED));
  EXPECT_EQ(RtlNtStatusToDosError(static_cast<NTSTATUS>(0xE0001234u)), 0xE0001234u);
  EXPECT_EQ(RtlNtStatusToDosError(static_cast<NTSTATUS>(0xD0000022u)), static_cast<ULONG>(ERROR_ACCESS_DENIED));
}

TEST(StatusText, NamesKnownStatuses) {
  EXPECT_EQ(fltport::Status(STATUS_TIMEOUT).to_string(), "STATUS_TIMEOUT (0x00000102)");
  EXPECT_EQ(fltport::Status(static_cast<NTSTATUS>(0xC0FF0123u)).to_string(), "0xC0FF0123");
}

}  // namespace
