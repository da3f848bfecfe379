/*
 * fltport compatibility <fltuser.h>: the Filter Manager user-mode API (FilterConnectCommunicationPort,
 * FilterGetMessage, FilterReplyMessage, FilterSendMessage, the management calls) from
 * <fltport/fltuser.h>. On Windows a program includes <windows.h> first; here this header does it,
 * so either order compiles.
 */
#ifndef FLTPORT_COMPAT_FLTUSER_H
#define FLTPORT_COMPAT_FLTUSER_H

#include "windows.h"

#include <fltport/fltuser.h>

#endif /* FLTPORT_COMPAT_FLTUSER_H */
