/* SPDX-License-Identifier: Apache-2.0 */
/* Error names and messages, generated from the single SL_ERRNO_MAP list. */
#include "sluice/common.h"

const char *sl_strerror(int err) {
  switch (err) {
  case SL_OK:
    return "success";
#define SL__ERR_MSG(name, val, msg)                                            \
  case SL_ERR_##name:                                                          \
    return msg;
    SL_ERRNO_MAP(SL__ERR_MSG)
#undef SL__ERR_MSG
  }
  return "unknown error";
}

const char *sl_err_name(int err) {
  switch (err) {
  case SL_OK:
    return "SL_OK";
#define SL__ERR_NAME(name, val, msg)                                           \
  case SL_ERR_##name:                                                          \
    return "SL_ERR_" #name;
    SL_ERRNO_MAP(SL__ERR_NAME)
#undef SL__ERR_NAME
  }
  return "SL_ERR_UNKNOWN";
}
