/* Forwards to the real <fltport/status.h>, two directories up, so that the compatibility directory
 * alone on the include path (-I$(pkg-config --variable=win32includedir fltport)) finds the
 * <fltport/...> headers the compatibility headers and the public headers include. */
#include "../../status.h"
