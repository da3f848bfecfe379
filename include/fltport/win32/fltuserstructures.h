/*
 * fltport compatibility <fltUserStructures.h>: the structures and information classes of the
 * Filter Manager user-mode API (FILTER_MESSAGE_HEADER, FILTER_REPLY_HEADER, FILTER_FULL_INFORMATION,
 * INSTANCE_FULL_INFORMATION, ...). fltport declares them in <fltport/fltuser.h>.
 */
#ifndef FLTPORT_COMPAT_FLTUSERSTRUCTURES_H
#define FLTPORT_COMPAT_FLTUSERSTRUCTURES_H

#include "fltuser.h"

#endif /* FLTPORT_COMPAT_FLTUSERSTRUCTURES_H */
