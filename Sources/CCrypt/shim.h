#ifndef CCRYPT_SHIM_H
#define CCRYPT_SHIM_H
// libxcrypt: crypt_r and crypt_gensalt_rn for yescrypt password hashes ($y$).
#include <crypt.h>
#endif
