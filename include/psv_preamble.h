/*
 * psv.h — libpsv: save many arrays into one .npz in parallel; restore any .npz into one
 * 64-byte-aligned block with a view per key.
 *
 * Ownership
 *   - Every handle (psv_saver, psv_archive, psv_save_options, psv_restore_options) is created
 *     and freed by libpsv: psv_saver_new/psv_saver_free, psv_restore/psv_free,
 *     psv_*_options_new/psv_*_options_free. Each _free accepts NULL.
 *   - psv_saver_add borrows the array memory until psv_saver_free: zero copies.
 *   - Every pointer an archive hands out (data, keys, descrs, shapes, the block) lives until
 *     psv_free of that archive. Never free() them.
 *   - Failing functions set pointer out-parameters to NULL and leave scalar ones untouched.
 *
 * Errors
 *   - Fallible functions return psv_status: PSV_OK (0) or a PSV_ERR_* code (> 0); codes are
 *     never renumbered. psv_last_error_message() gives the calling thread's message, which
 *     names the path, key, member or offset involved, and psv_last_error_os_code() the errno
 *     when the OS reported the error. Nothing aborts the host process: NULL
 *     arguments, bad codes, hostile files and internal panics all come back as status codes.
 *
 * Thread safety
 *   - A saver or an options handle is used by one thread at a time; it may move between threads.
 *   - An archive is immutable: its accessors (const psv_archive *) may run concurrently from
 *     many threads; psv_free must not race any other call on it.
 *   - Independent saves and restores may run concurrently. They run on libpsv's private worker
 *     pool (never a host's global rayon pool) and block the calling thread until done,
 *     except the asynchronous saves (psv_saver_save*_async), which return a psv_job at once:
 *     its wait/done/progress/cancel/error calls may run from any threads; see psv_job.
 *   - Array memory passed to psv_saver_add must not be modified while psv_saver_save runs
 *     (nor, for an asynchronous save without snapshot, until its job has finished).
 *   - No callback runs on a library thread, except the write callback of
 *     psv_saver_save_stream_async (on the job's thread).
 */
