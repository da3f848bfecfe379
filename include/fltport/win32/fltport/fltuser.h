/* Forwards to the real <fltport/fltuser.h>, two directories up, so that the compatibility directory
 * alone on the include path (-I$(pkg-config --variable=win32includedir fltport)) finds the
 * <fltport/...> headers the compatibility headers and the public headers include. */
#include "../../fltuser.h"
