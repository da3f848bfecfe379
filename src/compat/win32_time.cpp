// FILETIME and SYSTEMTIME: 100 ns ticks since 1601-01-01 UTC, and their calendar form. The
// calendar is the proleptic Gregorian one Windows uses; the local conversions take the offset the
// time zone has now (Windows documents that FileTimeToLocalFileTime does not look at the date).
#include <fltport/win32/windows.h>

#include <time.h>

#include <cstdint>

namespace {

constexpr uint64_t kTicksPerMillisecond = 10'000;
constexpr uint64_t kTicksPerSecond = 10'000'000;
constexpr uint64_t kSecondsPerDay = 86'400;
// 1601-01-01 to 1970-01-01.
constexpr uint64_t kUnixEpochTicks = 116'444'736'000'000'000ull;
constexpr int64_t kDays1601To1970 = 134'774;

uint64_t ticks_of(const FILETIME& time) {
  return (static_cast<uint64_t>(time.dwHighDateTime) << 32) | time.dwLowDateTime;
}

FILETIME file_time(uint64_t ticks) {
  FILETIME time;
  time.dwLowDateTime = static_cast<DWORD>(ticks & 0xFFFFFFFFu);
  time.dwHighDateTime = static_cast<DWORD>(ticks >> 32);
  return time;
}

bool leap(int64_t year) {
  return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

unsigned days_in_month(int64_t year, unsigned month) {
  static constexpr unsigned kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && leap(year) ? 29 : kDays[month - 1];
}

// Days since 1970-01-01 of a Gregorian date, and back: the calendar repeats every 400 years
// (146097 days); counting from March 1st puts the leap day at the end of each year.
int64_t days_from_civil(int64_t year, unsigned month, unsigned day) {
  year -= month <= 2 ? 1 : 0;
  const int64_t era = (year >= 0 ? year : year - 399) / 400;
  const auto year_of_era = static_cast<unsigned>(year - era * 400);
  const unsigned day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const unsigned day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + static_cast<int64_t>(day_of_era) - 719468;
}

void civil_from_days(int64_t days, int64_t& year, unsigned& month, unsigned& day) {
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto day_of_era = static_cast<unsigned>(days - era * 146097);
  const unsigned year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  const unsigned day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const unsigned shifted_month = (5 * day_of_year + 2) / 153;
  day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
  month = shifted_month < 10 ? shifted_month + 3 : shifted_month - 9;
  year = static_cast<int64_t>(year_of_era) + era * 400 + (month <= 2 ? 1 : 0);
}

uint64_t now_ticks() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<uint64_t>(now.tv_sec) * kTicksPerSecond + static_cast<uint64_t>(now.tv_nsec) / 100 +
         kUnixEpochTicks;
}

// The local time zone's offset from UTC now, in ticks (east positive).
int64_t local_offset_ticks() {
  tzset();  // the zone in effect now ($TZ may have changed): localtime_r need not look
  const time_t now = time(nullptr);
  tm local{};
  if (localtime_r(&now, &local) == nullptr) return 0;
  return static_cast<int64_t>(local.tm_gmtoff) * static_cast<int64_t>(kTicksPerSecond);
}

BOOL invalid() {
  SetLastError(ERROR_INVALID_PARAMETER);
  return FALSE;
}

}  // namespace

extern "C" BOOL WINAPI FileTimeToSystemTime(const FILETIME* lpFileTime, LPSYSTEMTIME lpSystemTime) {
  if (lpFileTime == nullptr || lpSystemTime == nullptr) return invalid();
  const uint64_t ticks = ticks_of(*lpFileTime);
  if ((ticks >> 63) != 0) return invalid();
  const uint64_t seconds = ticks / kTicksPerSecond;
  const uint64_t days = seconds / kSecondsPerDay;
  const uint64_t second_of_day = seconds % kSecondsPerDay;
  int64_t year;
  unsigned month, day;
  civil_from_days(static_cast<int64_t>(days) - kDays1601To1970, year, month, day);
  lpSystemTime->wYear = static_cast<WORD>(year);
  lpSystemTime->wMonth = static_cast<WORD>(month);
  lpSystemTime->wDay = static_cast<WORD>(day);
  lpSystemTime->wDayOfWeek = static_cast<WORD>((days + 1) % 7);  // 1601-01-01 was a Monday
  lpSystemTime->wHour = static_cast<WORD>(second_of_day / 3600);
  lpSystemTime->wMinute = static_cast<WORD>(second_of_day / 60 % 60);
  lpSystemTime->wSecond = static_cast<WORD>(second_of_day % 60);
  lpSystemTime->wMilliseconds = static_cast<WORD>(ticks / kTicksPerMillisecond % 1000);
  return TRUE;
}

extern "C" BOOL WINAPI SystemTimeToFileTime(const SYSTEMTIME* lpSystemTime, LPFILETIME lpFileTime) {
  if (lpSystemTime == nullptr || lpFileTime == nullptr) return invalid();
  const SYSTEMTIME& t = *lpSystemTime;
  if (t.wYear < 1601 || t.wYear > 30827 || t.wMonth < 1 || t.wMonth > 12 || t.wDay < 1 ||
      t.wDay > days_in_month(t.wYear, t.wMonth) || t.wHour > 23 || t.wMinute > 59 || t.wSecond > 59 ||
      t.wMilliseconds > 999)
    return invalid();
  const int64_t days = days_from_civil(t.wYear, t.wMonth, t.wDay) + kDays1601To1970;
  const uint64_t seconds =
      static_cast<uint64_t>(days) * kSecondsPerDay + t.wHour * 3600u + t.wMinute * 60u + t.wSecond;
  *lpFileTime = file_time(seconds * kTicksPerSecond + t.wMilliseconds * kTicksPerMillisecond);
  return TRUE;
}

// The offset is added modulo 2^64, as Windows adds it: a result past the range is caught by
// FileTimeToSystemTime.
extern "C" BOOL WINAPI FileTimeToLocalFileTime(const FILETIME* lpFileTime, LPFILETIME lpLocalFileTime) {
  if (lpFileTime == nullptr || lpLocalFileTime == nullptr) return invalid();
  *lpLocalFileTime = file_time(ticks_of(*lpFileTime) + static_cast<uint64_t>(local_offset_ticks()));
  return TRUE;
}

extern "C" BOOL WINAPI LocalFileTimeToFileTime(const FILETIME* lpLocalFileTime, LPFILETIME lpFileTime) {
  if (lpLocalFileTime == nullptr || lpFileTime == nullptr) return invalid();
  *lpFileTime = file_time(ticks_of(*lpLocalFileTime) - static_cast<uint64_t>(local_offset_ticks()));
  return TRUE;
}

extern "C" LONG WINAPI CompareFileTime(const FILETIME* lpFileTime1, const FILETIME* lpFileTime2) {
  const uint64_t a = ticks_of(*lpFileTime1), b = ticks_of(*lpFileTime2);
  return a < b ? -1 : a > b ? 1 : 0;
}

extern "C" void WINAPI GetSystemTimeAsFileTime(LPFILETIME lpSystemTimeAsFileTime) {
  *lpSystemTimeAsFileTime = file_time(now_ticks());
}

extern "C" void WINAPI GetSystemTime(LPSYSTEMTIME lpSystemTime) {
  const FILETIME now = file_time(now_ticks());
  FileTimeToSystemTime(&now, lpSystemTime);
}

extern "C" void WINAPI GetLocalTime(LPSYSTEMTIME lpSystemTime) {
  const FILETIME now = file_time(now_ticks() + static_cast<uint64_t>(local_offset_ticks()));
  FileTimeToSystemTime(&now, lpSystemTime);
}
