/*
 * fltport compatibility <dontuse.h>: in the Windows Driver Kit it marks unsafe C runtime calls as
 * deprecated for the compiler's analysis. GCC and clang have their own warnings (-Wformat,
 * _FORTIFY_SOURCE), so it is empty here.
 */
#ifndef FLTPORT_COMPAT_DONTUSE_H
#define FLTPORT_COMPAT_DONTUSE_H
#endif /* FLTPORT_COMPAT_DONTUSE_H */
