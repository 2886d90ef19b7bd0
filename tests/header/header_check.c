/*
 * header_check.c — compiled by `make test-header` as C99 and as C++17 with -Werror (STYLE rules
 * 29, 35). Never linked: it only has to compile. EXPECT_MAJOR/MINOR/PATCH come from Cargo.toml.
 */
#include "psv.h"
#include "psv.h" /* the include guard makes a second inclusion harmless */

#if !defined(EXPECT_MAJOR) || !defined(EXPECT_MINOR) || !defined(EXPECT_PATCH)
#error "compile with -DEXPECT_MAJOR=... -DEXPECT_MINOR=... -DEXPECT_PATCH=... (from Cargo.toml)"
#endif
#if PSV_VERSION_MAJOR != EXPECT_MAJOR
#error "PSV_VERSION_MAJOR does not match Cargo.toml"
#endif
#if PSV_VERSION_MINOR != EXPECT_MINOR
#error "PSV_VERSION_MINOR does not match Cargo.toml"
#endif
#if PSV_VERSION_PATCH != EXPECT_PATCH
#error "PSV_VERSION_PATCH does not match Cargo.toml"
#endif
#if PSV_VERSION_NUMBER != PSV_VERSION_MAJOR * 10000 + PSV_VERSION_MINOR * 100 + PSV_VERSION_PATCH
#error "PSV_VERSION_NUMBER is not MAJOR * 10000 + MINOR * 100 + PATCH"
#endif
#if PSV_VERSION_MAJOR == 0
#if PSV_ABI_VERSION != PSV_VERSION_MINOR * 100
#error "PSV_ABI_VERSION is not MINOR * 100 for a 0.y.z release"
#endif
#elif PSV_ABI_VERSION != PSV_VERSION_MAJOR * 10000
#error "PSV_ABI_VERSION is not MAJOR * 10000"
#endif
#if PSV_VERSION_MINOR > 99 || PSV_VERSION_PATCH > 99
#error "MINOR and PATCH must stay below 100 for the packed PSV_VERSION_NUMBER"
#endif

/* Fixed widths the bindings rely on (a negative array size fails to compile in C99 and C++). */
typedef char check_status_is_32_bits[sizeof(psv_status) == 4 ? 1 : -1];
typedef char check_dtype_is_32_bits[sizeof(psv_dtype) == 4 ? 1 : -1];
typedef char check_dtype_invalid_is_negative[PSV_DTYPE_INVALID < 0 ? 1 : -1];

/* Every declaration is usable with the documented types (taking addresses needs no linking). */
int header_check_use(void);
int header_check_use(void)
{
    psv_status (*add)(psv_saver *, const char *, const void *, psv_dtype, const int64_t *, size_t) =
        psv_saver_add;
    psv_status (*restore)(const char *, const psv_restore_options *, psv_archive **) = psv_restore;
    size_t (*last)(char *, size_t) = psv_last_error_message;
    int32_t (*os_code)(void) = psv_last_error_os_code;
    const void *(*block)(const psv_archive *, size_t *) = psv_archive_block;
    bool (*fortran)(const psv_archive *, size_t) = psv_archive_fortran_order;
    int64_t shape[2] = {2, 3};
    (void)shape;
    return (add != 0) + (restore != 0) + (last != 0) + (os_code != 0) + (block != 0) +
           (fortran != 0) + PSV_OK + PSV_ERR_CRC + PSV_DTYPE_OTHER;
}
