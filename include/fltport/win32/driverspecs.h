/*
 * fltport compatibility <DriverSpecs.h>: the Windows Driver Kit's static-analysis annotations,
 * as no-ops (the SAL annotations themselves come with <windows.h>).
 */
#ifndef FLTPORT_COMPAT_DRIVERSPECS_H
#define FLTPORT_COMPAT_DRIVERSPECS_H

#include "windows.h"

#ifndef _Analysis_mode_
#define _Analysis_mode_(mode)
#endif
#ifndef __drv_maxIRQL
#define __drv_maxIRQL(irql)
#define __drv_requiresIRQL(irql)
#define __drv_dispatchType(type)
#endif

#endif /* FLTPORT_COMPAT_DRIVERSPECS_H */
