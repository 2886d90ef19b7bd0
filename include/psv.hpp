/*
 * psv.hpp — header-only C++17 RAII wrapper over psv.h (libpsv's C API).
 *
 *   psv::Saver saver;                                   // psv_saver_new / psv_saver_free
 *   saver.add("x", xs.data(), {1000, 3});               // T -> PSV_DTYPE_* at compile time
 *   saver.save("out.npz", psv::SaveOptions().threads(4));
 *   psv::Archive a = psv::restore("out.npz");           // psv_restore / psv_free
 *   psv::View<double> x = a.view<double>("x");          // throws psv::Error unless x is float64
 *   for (psv::Entry e : a) std::cout << e.key() << ' ' << e.descr() << '\n';
 *
 * Ownership and lifetimes are those of psv.h, made explicit:
 *   - Saver, SaveOptions, RestoreOptions and Archive own one handle each; they are move-only and
 *     free it in their destructor. A moved-from object holds no handle (options then act as
 *     "defaults", an archive as empty).
 *   - Saver::add borrows the array memory, zero-copy: it must stay valid and unchanged until the
 *     Saver is destroyed (rvalue vectors are refused at compile time for that reason).
 *   - Everything an Archive hands out (View, Span, std::string_view, Entry) points into it and is
 *     valid until the Archive is destroyed or assigned to.
 *
 * Progress: SaveOptions/RestoreOptions::progress(fn) take a std::function<bool(done, total)>
 * (false cancels: PSV_ERR_ABORTED); it runs on the calling thread, and an exception it throws is
 * caught before it reaches libpsv and rethrown from save()/restore().
 *
 * Errors: every failing C call throws psv::Error, which carries the psv_status, the message of
 * psv_last_error_message() and the errno of psv_last_error_os_code(), read on the same thread
 * right after the call. Index errors throw
 * std::out_of_range; a failed allocation of a handle throws std::bad_alloc.
 *
 * Thread safety is that of psv.h: const Archive members may run concurrently from many threads;
 * a Saver or an options object is used by one thread at a time.
 *
 * Spans: psv::Span<T> is std::span<T> when the standard library has it (__cpp_lib_span, C++20),
 * otherwise a minimal pointer + size view with the same data()/size()/begin()/end()/operator[].
 */

#ifndef PSV_HPP
#define PSV_HPP

#include "psv.h"

#include <array>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <istream>
#include <iterator>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__has_include)
#if __has_include(<version>)
#include <version>
#endif
#endif

#if defined(__cpp_lib_span) && __cpp_lib_span >= 202002L
#include <span>
#define PSV_HPP_STD_SPAN 1
#else
#define PSV_HPP_STD_SPAN 0
#endif

namespace psv {

// ------------------------------------------------------------------------------------------------
// Span

#if PSV_HPP_STD_SPAN
template <class T>
using Span = std::span<T>;
#else
/// A non-owning view of `size()` contiguous `T`s (the subset of std::span that psv needs).
template <class T>
class Span {
public:
    using element_type = T;
    using value_type = std::remove_cv_t<T>;
    using size_type = std::size_t;
    using difference_type = std::ptrdiff_t;
    using pointer = T *;
    using reference = T &;
    using iterator = T *;

    constexpr Span() noexcept = default;
    constexpr Span(T *data, std::size_t size) noexcept : data_(data), size_(size) {}

    constexpr T *data() const noexcept { return data_; }
    constexpr std::size_t size() const noexcept { return size_; }
    constexpr std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
    constexpr bool empty() const noexcept { return size_ == 0; }
    constexpr T *begin() const noexcept { return data_; }
    constexpr T *end() const noexcept { return data_ + size_; }
    constexpr T &operator[](std::size_t i) const noexcept { return data_[i]; }
    constexpr T &front() const noexcept { return data_[0]; }
    constexpr T &back() const noexcept { return data_[size_ - 1]; }

private:
    T *data_ = nullptr;
    std::size_t size_ = 0;
};
#endif

// ------------------------------------------------------------------------------------------------
// Errors

/// A failed libpsv call: the status code, the library's message (which names the path, key,
/// member or offset involved) and, when the OS reported the error, its errno. what() is
/// "<call>: <PSV_ERR_NAME>: <message>".
class Error : public std::runtime_error {
public:
    Error(psv_status status, const std::string &context, std::string message,
          std::int32_t os_code = 0)
        : std::runtime_error(context + ": " + psv_status_str(status) +
                             (message.empty() ? std::string() : ": " + message)),
          status_(status), os_code_(os_code), message_(std::move(message))
    {
    }

    /// The PSV_ERR_* code.
    psv_status status() const noexcept { return status_; }
    /// The code's name, e.g. "PSV_ERR_IO" (static storage).
    const char *status_name() const noexcept { return psv_status_str(status_); }
    /// The library's message alone (psv_last_error_message), possibly empty.
    const std::string &message() const noexcept { return message_; }
    /// The OS error number (psv_last_error_os_code), e.g. ENOENT, when the operating system
    /// reported the error (PSV_ERR_IO, or PSV_ERR_NOMEM from the OS); 0 otherwise.
    std::int32_t os_code() const noexcept { return os_code_; }

private:
    psv_status status_;
    std::int32_t os_code_;
    std::string message_;
};

namespace detail {

/// The calling thread's last libpsv error message, in full (however long it is).
inline std::string last_error_message()
{
    const std::size_t n = psv_last_error_message(nullptr, 0);
    std::vector<char> buf(n + 1, '\0');
    const std::size_t written = psv_last_error_message(buf.data(), buf.size());
    return std::string(buf.data(), written < n ? written : n);
}

[[noreturn]] inline void raise(psv_status status, const char *context)
{
    // Read the message and the errno first: nothing in between may call into libpsv on this
    // thread.
    std::string message = last_error_message();
    const std::int32_t os_code = psv_last_error_os_code();
    throw Error(status, context, std::move(message), os_code);
}

inline void check(psv_status status, const char *context)
{
    if (status != PSV_OK) {
        raise(status, context);
    }
}

/// Pointer and length columns over byte blobs (psv_collective_new and _commit take them); the
/// blobs are borrowed and must outlive the columns' use.
struct BlobColumns {
    explicit BlobColumns(const std::vector<std::vector<std::uint8_t>> &blobs)
    {
        ptrs.reserve(blobs.size());
        lens.reserve(blobs.size());
        for (const auto &b : blobs) {
            ptrs.push_back(b.data());
            lens.push_back(b.size());
        }
    }
    std::vector<const void *> ptrs;
    std::vector<std::size_t> lens;
};

/// The bytes of a library buffer, copied out; the buffer is freed in every case.
inline std::vector<std::uint8_t> take_buffer(psv_buffer *b)
{
    const auto *data = static_cast<const std::uint8_t *>(psv_buffer_data(b));
    std::vector<std::uint8_t> bytes;
    try {
        bytes.assign(data, data + psv_buffer_len(b));
    } catch (...) {
        psv_buffer_free(b);
        throw;
    }
    psv_buffer_free(b);
    return bytes;
}

} // namespace detail

/// The library's version string, e.g. "0.1.0" (compare with PSV_VERSION_*).
inline std::string_view version() noexcept { return psv_version(); }

/// True when the loaded library is ABI-compatible with the psv.h this code was compiled with.
inline bool abi_compatible() noexcept { return psv_abi_version() == PSV_ABI_VERSION; }

// ------------------------------------------------------------------------------------------------
// Element types: dtype_traits<T>::value is T's PSV_DTYPE_* code.
//
// Provided for bool, the signed and unsigned integer types (by size; not the character types
// char, wchar_t, char8/16/32_t), float, double, std::complex<float> and std::complex<double>.
// Specialize it for your own layout-compatible types, e.g. a 16-bit half:
//   template <> struct psv::dtype_traits<my_half> { static constexpr psv_dtype value = PSV_DTYPE_F16; };

namespace detail {

template <class T>
constexpr bool is_char_type()
{
    return std::is_same_v<T, char> || std::is_same_v<T, wchar_t> || std::is_same_v<T, char16_t> ||
#if defined(__cpp_char8_t)
           std::is_same_v<T, char8_t> ||
#endif
           std::is_same_v<T, char32_t>;
}

template <class T>
constexpr psv_dtype integer_code()
{
    if constexpr (std::is_signed_v<T>) {
        return sizeof(T) == 1   ? PSV_DTYPE_I8
               : sizeof(T) == 2 ? PSV_DTYPE_I16
               : sizeof(T) == 4 ? PSV_DTYPE_I32
               : sizeof(T) == 8 ? PSV_DTYPE_I64
                                : PSV_DTYPE_INVALID;
    } else {
        return sizeof(T) == 1   ? PSV_DTYPE_U8
               : sizeof(T) == 2 ? PSV_DTYPE_U16
               : sizeof(T) == 4 ? PSV_DTYPE_U32
               : sizeof(T) == 8 ? PSV_DTYPE_U64
                                : PSV_DTYPE_INVALID;
    }
}

template <class T>
constexpr bool is_psv_integer()
{
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool> && !is_char_type<T>()) {
        return integer_code<T>() != PSV_DTYPE_INVALID;
    } else {
        return false;
    }
}

} // namespace detail

template <class T, class Enable = void>
struct dtype_traits {}; // no `value`: T is not a psv element type

template <>
struct dtype_traits<bool> {
    static_assert(sizeof(bool) == 1, "numpy bool is one byte");
    static constexpr psv_dtype value = PSV_DTYPE_BOOL;
};

template <class T>
struct dtype_traits<T, std::enable_if_t<detail::is_psv_integer<T>()>> {
    static constexpr psv_dtype value = detail::integer_code<T>();
};

template <>
struct dtype_traits<float> {
    static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4, "float is IEEE binary32");
    static constexpr psv_dtype value = PSV_DTYPE_F32;
};

template <>
struct dtype_traits<double> {
    static_assert(std::numeric_limits<double>::is_iec559 && sizeof(double) == 8, "double is IEEE binary64");
    static constexpr psv_dtype value = PSV_DTYPE_F64;
};

template <>
struct dtype_traits<std::complex<float>> {
    static constexpr psv_dtype value = PSV_DTYPE_C64;
};

template <>
struct dtype_traits<std::complex<double>> {
    static constexpr psv_dtype value = PSV_DTYPE_C128;
};

namespace detail {
template <class T, class = void>
struct has_dtype : std::false_type {};
template <class T>
struct has_dtype<T, std::void_t<decltype(dtype_traits<T>::value)>> : std::true_type {};
} // namespace detail

/// True if T (cv-qualifiers ignored) maps to a PSV_DTYPE_* code.
template <class T>
inline constexpr bool is_dtype_v = detail::has_dtype<std::remove_cv_t<T>>::value;

/// T's PSV_DTYPE_* code.
template <class T>
inline constexpr psv_dtype dtype_v = dtype_traits<std::remove_cv_t<T>>::value;

// ------------------------------------------------------------------------------------------------
// Progress callbacks

/// Called on the thread that saves or restores (never on a worker) with the bytes done and the
/// total; return true to go on, false to cancel (the call then throws psv::Error with
/// PSV_ERR_ABORTED). An exception thrown by the callback cancels the operation too and is
/// rethrown from save()/restore() once libpsv has returned: it never unwinds through libpsv.
using ProgressFn = std::function<bool(std::uint64_t done, std::uint64_t total)>;

namespace detail {
struct ProgressState {
    ProgressFn fn;
    std::exception_ptr error;
};

/// Rethrows what a progress callback threw during the last call, if anything.
inline void rethrow_progress_error(ProgressState *state)
{
    if (state != nullptr && state->error) {
        std::exception_ptr e = std::exchange(state->error, nullptr);
        std::rethrow_exception(e);
    }
}
} // namespace detail

} // namespace psv

/* The C-linkage trampoline psv_progress_cb points at; userdata is a psv::detail::ProgressState. */
extern "C" inline int psv_hpp_progress_trampoline(void *userdata, uint64_t done, uint64_t total) noexcept
{
    auto *state = static_cast<psv::detail::ProgressState *>(userdata);
    try {
        return state->fn(done, total) ? 0 : 1;
    } catch (...) {
        state->error = std::current_exception();
        return 1;
    }
}

namespace psv {

namespace detail {
/// Installs `fn` through `set(cb, userdata)` (a psv_*_options_set_progress call) and keeps its
/// state in `slot`; an empty `fn` removes the callback.
template <class Set>
void install_progress(std::unique_ptr<ProgressState> &slot, ProgressFn fn, Set set)
{
    if (!fn) {
        check(set(nullptr, nullptr), "psv_*_options_set_progress");
        slot.reset();
        return;
    }
    // The state lives on the heap, so its address (libpsv's userdata) survives moves.
    auto state = std::make_unique<ProgressState>();
    state->fn = std::move(fn);
    check(set(&psv_hpp_progress_trampoline, state.get()), "psv_*_options_set_progress");
    slot = std::move(state); // the old state (if any) is no longer referenced by libpsv
}
} // namespace detail

// ------------------------------------------------------------------------------------------------
// Options

/// Settings for Saver::save (RAII over psv_save_options). Fluent:
///   saver.save(path, psv::SaveOptions().threads(4).fsync(true));
class SaveOptions {
public:
    SaveOptions() : h_(psv_save_options_new())
    {
        if (h_ == nullptr) {
            throw std::bad_alloc();
        }
    }
    ~SaveOptions() { psv_save_options_free(h_); }
    SaveOptions(SaveOptions &&other) noexcept
        : h_(std::exchange(other.h_, nullptr)), progress_(std::move(other.progress_))
    {
    }
    SaveOptions &operator=(SaveOptions &&other) noexcept
    {
        if (this != &other) {
            psv_save_options_free(h_);
            h_ = std::exchange(other.h_, nullptr);
            progress_ = std::move(other.progress_);
        }
        return *this;
    }
    SaveOptions(const SaveOptions &) = delete;
    SaveOptions &operator=(const SaveOptions &) = delete;

    /// Worker threads; 0 (the default) means one per core.
    SaveOptions &threads(std::size_t n) &
    {
        detail::check(psv_save_options_set_threads(h_, n), "psv_save_options_set_threads");
        return *this;
    }
    SaveOptions &&threads(std::size_t n) && { return std::move(threads(n)); }

    /// fsync the file before the rename and its directory after it (default false).
    SaveOptions &fsync(bool on) &
    {
        detail::check(psv_save_options_set_fsync(h_, on), "psv_save_options_set_fsync");
        return *this;
    }
    SaveOptions &&fsync(bool on) && { return std::move(fsync(on)); }

    /// Deflate level 1..9 for every member; 0 (the default) stores them uncompressed.
    SaveOptions &compression(int level) &
    {
        detail::check(psv_save_options_set_compression(h_, level), "psv_save_options_set_compression");
        return *this;
    }
    SaveOptions &&compression(int level) && { return std::move(compression(level)); }

    /// The container: PSV_LAYOUT_NPZ (default) or PSV_LAYOUT_DIR (a directory of .npy files).
    SaveOptions &layout(psv_layout code) &
    {
        detail::check(psv_save_options_set_layout(h_, code), "psv_save_options_set_layout");
        return *this;
    }
    SaveOptions &&layout(psv_layout code) && { return std::move(layout(code)); }

    /// Alignment in the file of large stored arrays' data: a power of two from 64 (the default)
    /// to 1 MiB; every stored array of at least that many bytes starts at a multiple of it
    /// (psv_save_options_set_alignment).
    SaveOptions &alignment(std::size_t bytes) &
    {
        detail::check(psv_save_options_set_alignment(h_, bytes), "psv_save_options_set_alignment");
        return *this;
    }
    SaveOptions &&alignment(std::size_t bytes) && { return std::move(alignment(bytes)); }

    /// Asynchronous saves (Saver::save_async) copy the arrays into the saver's staging area
    /// before returning, so the caller may change them at once (default false: the job borrows
    /// the arrays until done, and Saver::add throws PSV_ERR_BUSY meanwhile).
    SaveOptions &snapshot(bool on) &
    {
        detail::check(psv_save_options_set_snapshot(h_, on), "psv_save_options_set_snapshot");
        return *this;
    }
    SaveOptions &&snapshot(bool on) && { return std::move(snapshot(on)); }

    /// A progress callback (see ProgressFn); an empty function removes it.
    SaveOptions &progress(ProgressFn fn) &
    {
        detail::install_progress(progress_, std::move(fn), [this](psv_progress_cb cb, void *ud) {
            return psv_save_options_set_progress(h_, cb, ud);
        });
        return *this;
    }
    SaveOptions &&progress(ProgressFn fn) && { return std::move(progress(std::move(fn))); }

    const psv_save_options *get() const noexcept { return h_; }
    psv_save_options *get() noexcept { return h_; }
    /// The progress callback's state (nullptr without one); used by Saver::save.
    detail::ProgressState *progress_state() const noexcept { return progress_.get(); }

private:
    psv_save_options *h_;
    std::unique_ptr<detail::ProgressState> progress_;
};

/// Settings for psv::restore (RAII over psv_restore_options). Fluent:
///   psv::restore(path, psv::RestoreOptions().threads(2).max_total_bytes(1ull << 30));
///
/// psv_restore_options_set_limits sets all three limits at once (0 = that limit's default), so
/// this class remembers the three values and resends them all from each limit setter.
class RestoreOptions {
public:
    RestoreOptions() : h_(psv_restore_options_new())
    {
        if (h_ == nullptr) {
            throw std::bad_alloc();
        }
    }
    ~RestoreOptions() { psv_restore_options_free(h_); }
    RestoreOptions(RestoreOptions &&other) noexcept
        : h_(std::exchange(other.h_, nullptr)), progress_(std::move(other.progress_)),
          max_total_bytes_(other.max_total_bytes_), max_members_(other.max_members_),
          max_header_len_(other.max_header_len_)
    {
    }
    RestoreOptions &operator=(RestoreOptions &&other) noexcept
    {
        if (this != &other) {
            psv_restore_options_free(h_);
            h_ = std::exchange(other.h_, nullptr);
            progress_ = std::move(other.progress_);
            max_total_bytes_ = other.max_total_bytes_;
            max_members_ = other.max_members_;
            max_header_len_ = other.max_header_len_;
        }
        return *this;
    }
    RestoreOptions(const RestoreOptions &) = delete;
    RestoreOptions &operator=(const RestoreOptions &) = delete;

    /// Worker threads; 0 (the default) means one per core.
    RestoreOptions &threads(std::size_t n) &
    {
        detail::check(psv_restore_options_set_threads(h_, n), "psv_restore_options_set_threads");
        return *this;
    }
    RestoreOptions &&threads(std::size_t n) && { return std::move(threads(n)); }

    /// Check each member's CRC-32 (default true).
    RestoreOptions &verify_crc(bool on) &
    {
        detail::check(psv_restore_options_set_verify_crc(h_, on), "psv_restore_options_set_verify_crc");
        return *this;
    }
    RestoreOptions &&verify_crc(bool on) && { return std::move(verify_crc(on)); }

    /// All three limits at once; 0 means that limit's default (see psv.h).
    RestoreOptions &limits(std::uint64_t max_total_bytes, std::uint64_t max_members,
                           std::uint64_t max_header_len) &
    {
        detail::check(psv_restore_options_set_limits(h_, max_total_bytes, max_members, max_header_len),
                      "psv_restore_options_set_limits");
        max_total_bytes_ = max_total_bytes;
        max_members_ = max_members;
        max_header_len_ = max_header_len;
        return *this;
    }
    RestoreOptions &&limits(std::uint64_t max_total_bytes, std::uint64_t max_members,
                            std::uint64_t max_header_len) &&
    {
        return std::move(limits(max_total_bytes, max_members, max_header_len));
    }

    /// The block's size limit (all arrays, each padded to 64); 0 = default (physical memory).
    RestoreOptions &max_total_bytes(std::uint64_t n) & { return limits(n, max_members_, max_header_len_); }
    RestoreOptions &&max_total_bytes(std::uint64_t n) && { return std::move(max_total_bytes(n)); }

    /// The member count limit; 0 = default.
    RestoreOptions &max_members(std::uint64_t n) & { return limits(max_total_bytes_, n, max_header_len_); }
    RestoreOptions &&max_members(std::uint64_t n) && { return std::move(max_members(n)); }

    /// The .npy HEADER_LEN limit; 0 = default.
    RestoreOptions &max_header_len(std::uint64_t n) & { return limits(max_total_bytes_, max_members_, n); }
    RestoreOptions &&max_header_len(std::uint64_t n) && { return std::move(max_header_len(n)); }

    /// Restore only these arrays, in this order (the keys are copied); empty restores all.
    RestoreOptions &keys(const std::vector<std::string> &names) &
    {
        std::vector<const char *> ptrs;
        ptrs.reserve(names.size());
        for (const std::string &k : names) {
            ptrs.push_back(k.c_str());
        }
        detail::check(psv_restore_options_set_keys(h_, ptrs.empty() ? nullptr : ptrs.data(), ptrs.size()),
                      "psv_restore_options_set_keys");
        return *this;
    }
    RestoreOptions &&keys(const std::vector<std::string> &names) && { return std::move(keys(names)); }

    /// Read only the directory and headers: accessors work, data() is nullptr (view() throws).
    RestoreOptions &metadata_only(bool on) &
    {
        detail::check(psv_restore_options_set_metadata_only(h_, on), "psv_restore_options_set_metadata_only");
        return *this;
    }
    RestoreOptions &&metadata_only(bool on) && { return std::move(metadata_only(on)); }

    /// Byte-swap non-native arrays into native order (reported with native descr and code).
    RestoreOptions &native_endian(bool on) &
    {
        detail::check(psv_restore_options_set_native_endian(h_, on), "psv_restore_options_set_native_endian");
        return *this;
    }
    RestoreOptions &&native_endian(bool on) && { return std::move(native_endian(on)); }

    /// Map the file and view 64-aligned stored members in place (see psv.h for the caveats).
    RestoreOptions &mmap(bool on) &
    {
        detail::check(psv_restore_options_set_mmap(h_, on), "psv_restore_options_set_mmap");
        return *this;
    }
    RestoreOptions &&mmap(bool on) && { return std::move(mmap(on)); }

    /// A progress callback (see ProgressFn); an empty function removes it.
    RestoreOptions &progress(ProgressFn fn) &
    {
        detail::install_progress(progress_, std::move(fn), [this](psv_progress_cb cb, void *ud) {
            return psv_restore_options_set_progress(h_, cb, ud);
        });
        return *this;
    }
    RestoreOptions &&progress(ProgressFn fn) && { return std::move(progress(std::move(fn))); }

    const psv_restore_options *get() const noexcept { return h_; }
    psv_restore_options *get() noexcept { return h_; }
    /// The progress callback's state (nullptr without one); used by restore().
    detail::ProgressState *progress_state() const noexcept { return progress_.get(); }

private:
    psv_restore_options *h_;
    std::unique_ptr<detail::ProgressState> progress_;
    std::uint64_t max_total_bytes_ = 0;
    std::uint64_t max_members_ = 0;
    std::uint64_t max_header_len_ = 0;
};

// ------------------------------------------------------------------------------------------------
// Job

/// An asynchronous save (RAII over psv_job), from Saver::save_async / save_fd_async /
/// to_bytes_async. Move-only. **The destructor waits** for the save to finish (it never cancels
/// and never throws: call wait() to see the save's error, cancel() to stop it). wait(),
/// wait_for(), done(), progress() and cancel() may run from several threads at once.
class Job {
public:
    Job() noexcept = default;
    explicit Job(psv_job *h) noexcept : h_(h) {}
    ~Job() { reset(); }
    Job(Job &&other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
    Job &operator=(Job &&other) noexcept
    {
        if (this != &other) {
            reset();
            h_ = std::exchange(other.h_, nullptr);
        }
        return *this;
    }
    Job(const Job &) = delete;
    Job &operator=(const Job &) = delete;

    /// Waits for the save; throws psv::Error with the save's status and message (again on every
    /// call; PSV_ERR_ABORTED after cancel()).
    void wait() const { detail::check(psv_job_wait(h_, -1), "psv_job_wait"); }
    /// Waits at most `ms` milliseconds: true when the save has finished (successfully: a failed
    /// save throws), false when the time ran out first.
    bool wait_for(std::int64_t ms) const
    {
        const psv_status st = psv_job_wait(h_, ms < 0 ? 0 : ms);
        if (st == PSV_ERR_TIMEOUT) {
            return false;
        }
        detail::check(st, "psv_job_wait");
        return true;
    }
    /// True once the save has finished (wait() will not block).
    bool done() const noexcept { return psv_job_done(h_); }
    /// Bytes done so far and the total (both 0 until the first report).
    std::pair<std::uint64_t, std::uint64_t> progress() const
    {
        std::uint64_t d = 0, t = 0;
        detail::check(psv_job_progress(h_, &d, &t), "psv_job_progress");
        return {d, t};
    }
    /// Asks the save to stop (returns at once); wait() then throws PSV_ERR_ABORTED.
    void cancel() const { detail::check(psv_job_cancel(h_), "psv_job_cancel"); }
    /// The archive of a finished to_bytes_async() job (once).
    std::vector<std::uint8_t> take_bytes()
    {
        wait();
        psv_buffer *b = nullptr;
        detail::check(psv_job_take_buffer(h_, &b), "psv_job_take_buffer");
        return detail::take_buffer(b);
    }

    psv_job *get() noexcept { return h_; }
    const psv_job *get() const noexcept { return h_; }

private:
    void reset() noexcept
    {
        if (h_ != nullptr) {
            psv_job_wait(h_, -1); // wait, do not cancel: a dropped Job still saves
            psv_job_free(h_);
            h_ = nullptr;
        }
    }
    psv_job *h_ = nullptr;
};

// ------------------------------------------------------------------------------------------------
// Saver

/// Collects borrowed arrays and writes them into one .npz (RAII over psv_saver). Move-only.
///
/// add() does not copy the data: the memory must stay valid and unchanged until the Saver is
/// destroyed. Keys and shapes are copied. Shapes are C order (row-major) unless add_descr says
/// fortran_order.
class Saver {
public:
    Saver() : h_(psv_saver_new())
    {
        if (h_ == nullptr) {
            throw std::bad_alloc();
        }
    }
    ~Saver() { psv_saver_free(h_); }
    Saver(Saver &&other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
    Saver &operator=(Saver &&other) noexcept
    {
        if (this != &other) {
            psv_saver_free(h_);
            h_ = std::exchange(other.h_, nullptr);
        }
        return *this;
    }
    Saver(const Saver &) = delete;
    Saver &operator=(const Saver &) = delete;

    /// Adds the C-order array at `data` with `shape` ({} for a 0-d array holding one element).
    /// `data` may be nullptr only if the shape holds no elements.
    template <class T>
    Saver &add(const std::string &key, const T *data, std::initializer_list<std::int64_t> shape)
    {
        return add(key, data, shape.begin(), shape.size());
    }

    template <class T>
    Saver &add(const std::string &key, const T *data, const std::vector<std::int64_t> &shape)
    {
        return add(key, data, shape.data(), shape.size());
    }

    template <class T>
    Saver &add(const std::string &key, const T *data, const std::int64_t *shape, std::size_t ndim)
    {
        static_assert(is_dtype_v<T>, "psv::Saver::add: T has no PSV_DTYPE_* code; specialize "
                                     "psv::dtype_traits<T> or use add_descr");
        return add_raw(key, data, dtype_v<T>, shape, ndim);
    }

    /// Adds a 1-d array: the vector's elements (borrowed: keep the vector alive and unresized).
    template <class T, class A>
    Saver &add(const std::string &key, const std::vector<T, A> &values)
    {
        static_assert(!std::is_same_v<T, bool>, "std::vector<bool> is not contiguous bytes");
        const std::int64_t n = static_cast<std::int64_t>(values.size());
        return add(key, values.data(), &n, 1);
    }
    /// Refused: the saver would borrow a temporary's memory.
    template <class T, class A>
    Saver &add(const std::string &key, std::vector<T, A> &&values) = delete;

    /// Adds an array by dtype code (e.g. PSV_DTYPE_F16, which has no standard C++ type).
    Saver &add_raw(const std::string &key, const void *data, psv_dtype dtype, const std::int64_t *shape,
                   std::size_t ndim)
    {
        detail::check(psv_saver_add(h_, key.c_str(), data, dtype, ndim == 0 ? nullptr : shape, ndim),
                      "psv_saver_add");
        return *this;
    }

    /// Adds `nbytes` of raw data described by a numpy descr: a type string ("<f8", "|S5", ">i4",
    /// "<M8[ns]") or a record list ("[('x', '<f4'), ('y', '<f4')]").
    Saver &add_descr(const std::string &key, const void *data, std::size_t nbytes,
                     const std::string &numpy_descr, std::initializer_list<std::int64_t> shape,
                     bool fortran_order = false)
    {
        return add_descr(key, data, nbytes, numpy_descr, shape.begin(), shape.size(), fortran_order);
    }

    Saver &add_descr(const std::string &key, const void *data, std::size_t nbytes,
                     const std::string &numpy_descr, const std::vector<std::int64_t> &shape,
                     bool fortran_order = false)
    {
        return add_descr(key, data, nbytes, numpy_descr, shape.data(), shape.size(), fortran_order);
    }

    Saver &add_descr(const std::string &key, const void *data, std::size_t nbytes,
                     const std::string &numpy_descr, const std::int64_t *shape, std::size_t ndim,
                     bool fortran_order = false)
    {
        detail::check(psv_saver_add_descr(h_, key.c_str(), data, nbytes, numpy_descr.c_str(),
                                          ndim == 0 ? nullptr : shape, ndim, fortran_order),
                      "psv_saver_add_descr");
        return *this;
    }

    /// Number of arrays added.
    std::size_t size() const noexcept { return psv_saver_count(h_); }

    /// Writes every array into `path` (".npz" appended unless present); atomic, see psv.h.
    void save(const std::string &path) { detail::check(psv_saver_save(h_, path.c_str(), nullptr), "psv_saver_save"); }
    void save(const std::string &path, const SaveOptions &options)
    {
        const psv_status st = psv_saver_save(h_, path.c_str(), options.get());
        detail::rethrow_progress_error(options.progress_state()); // the callback's own exception
        detail::check(st, "psv_saver_save");
    }

    /// Exact byte count of the stored .npz (psv_saver_size; compressed saves throw INVALID_ARG).
    std::uint64_t byte_size(const SaveOptions &options = SaveOptions()) const
    {
        std::uint64_t n = 0;
        detail::check(psv_saver_size(h_, options.get(), &n), "psv_saver_size");
        return n;
    }

    /// Writes the stored .npz into the first byte_size() bytes of `buf` (psv_saver_save_to_buffer).
    void save_to_buffer(void *buf, std::size_t len, const SaveOptions &options = SaveOptions()) const
    {
        const psv_status st = psv_saver_save_to_buffer(h_, buf, len, options.get());
        detail::rethrow_progress_error(options.progress_state());
        detail::check(st, "psv_saver_save_to_buffer");
    }

    /// The .npz (stored or compressed) as bytes (psv_saver_save_to_alloc, copied out).
    std::vector<std::uint8_t> to_bytes(const SaveOptions &options = SaveOptions()) const
    {
        psv_buffer *b = nullptr;
        const psv_status st = psv_saver_save_to_alloc(h_, options.get(), &b);
        detail::rethrow_progress_error(options.progress_state());
        detail::check(st, "psv_saver_save_to_alloc");
        return detail::take_buffer(b);
    }

    /// Writes the .npz into the caller's open `fd` (psv_saver_save_fd: positional from its
    /// offset when seekable, in order otherwise; the fd stays open).
    void save_fd(int fd, const SaveOptions &options = SaveOptions()) const
    {
        const psv_status st = psv_saver_save_fd(h_, fd, options.get());
        detail::rethrow_progress_error(options.progress_state());
        detail::check(st, "psv_saver_save_fd");
    }

    /// Streams the .npz in file order to `write(const void *buf, std::size_t len)`
    /// (psv_saver_save_stream). An exception from `write` stops the stream and is rethrown here.
    template <class Write>
    void save_stream(Write &&write, const SaveOptions &options = SaveOptions()) const
    {
        struct State {
            Write *write;
            std::exception_ptr error;
        } state{&write, nullptr};
        auto trampoline = [](void *userdata, const void *buf, std::size_t len) noexcept -> int {
            auto *st = static_cast<State *>(userdata);
            try {
                (*st->write)(buf, len);
                return 0;
            } catch (...) {
                st->error = std::current_exception();
                return 1;
            }
        };
        const psv_status st = psv_saver_save_stream(h_, trampoline, &state, options.get());
        if (state.error) {
            std::rethrow_exception(state.error);
        }
        detail::rethrow_progress_error(options.progress_state());
        detail::check(st, "psv_saver_save_stream");
    }

    /// Starts saving into `path` on library threads (psv_saver_save_async) and returns the Job.
    /// With options.snapshot(true) the arrays may change as soon as this returns; without, they
    /// must stay unchanged until the Job is done (add() throws PSV_ERR_BUSY meanwhile, and the
    /// Saver's destructor waits for the job). Options must not have a progress callback.
    Job save_async(const std::string &path, const SaveOptions &options = SaveOptions())
    {
        psv_job *job = nullptr;
        detail::check(psv_saver_save_async(h_, path.c_str(), options.get(), &job), "psv_saver_save_async");
        return Job(job);
    }

    /// save_fd() on library threads (psv_saver_save_fd_async: the job writes through its own
    /// duplicate of `fd`, so the caller may close `fd` at once).
    Job save_fd_async(int fd, const SaveOptions &options = SaveOptions())
    {
        psv_job *job = nullptr;
        detail::check(psv_saver_save_fd_async(h_, fd, options.get(), &job), "psv_saver_save_fd_async");
        return Job(job);
    }

    /// to_bytes() on library threads (psv_saver_save_to_alloc_async): Job::take_bytes().
    Job to_bytes_async(const SaveOptions &options = SaveOptions())
    {
        psv_job *job = nullptr;
        detail::check(psv_saver_save_to_alloc_async(h_, options.get(), &job), "psv_saver_save_to_alloc_async");
        return Job(job);
    }

    /// This saver's manifest for a collective save (psv_saver_manifest): the bytes every rank
    /// gathers from every other rank before constructing a psv::Collective.
    std::vector<std::uint8_t> manifest() const
    {
        psv_buffer *b = nullptr;
        detail::check(psv_saver_manifest(h_, &b), "psv_saver_manifest");
        return detail::take_buffer(b);
    }

    /// Bytes held by the snapshot staging area (psv_saver_staging_bytes).
    std::size_t staging_bytes() const noexcept { return psv_saver_staging_bytes(h_); }

    psv_saver *get() noexcept { return h_; }
    const psv_saver *get() const noexcept { return h_; }

private:
    psv_saver *h_;
};

/// One rank's part in the collective save of every rank's arrays into ONE .npz (RAII over
/// psv_collective). Move-only. The host does the communication (MPI, torch.distributed, ...);
/// the flow, with the host's collectives in brackets:
///
///   auto mine = saver.manifest();                    // [allgather -> manifests, rank order]
///   psv::Collective c(path, manifests, rank, opts);  // [check plan_id() agrees on all ranks]
///   if (rank == 0) c.create();                       // [barrier; share rank 0's outcome]
///   auto report = c.write(saver);                    // [gather reports and outcomes to rank 0]
///   if (rank == 0) every rank ok ? c.commit(reports) : c.abort();   // [broadcast the outcome]
///
/// The file is byte-identical to one Saver::save of all the arrays in rank order. Destroying
/// rank 0's Collective after create() and before commit() removes the temporary file (the
/// target is untouched). See psv.h, psv_collective_new, for every rule and error.
class Collective {
public:
    /// Plans the save of `manifests` (every rank's Saver::manifest, in rank order, the same on
    /// every rank) into `path` as rank `rank`. Throws psv::Error: INVALID_ARG for duplicate keys
    /// across ranks (naming both), a rank out of range, compression or the directory layout;
    /// FORMAT for a malformed manifest (naming its rank).
    Collective(const std::string &path, const std::vector<std::vector<std::uint8_t>> &manifests,
               std::size_t rank, const SaveOptions &options = SaveOptions())
    {
        const detail::BlobColumns cols(manifests);
        detail::check(psv_collective_new(path.c_str(), cols.ptrs.data(), cols.lens.data(), manifests.size(),
                                         rank, options.get(), &h_),
                      "psv_collective_new");
    }
    ~Collective() { psv_collective_free(h_); }
    Collective(Collective &&other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
    Collective &operator=(Collective &&other) noexcept
    {
        if (this != &other) {
            psv_collective_free(h_);
            h_ = std::exchange(other.h_, nullptr);
        }
        return *this;
    }
    Collective(const Collective &) = delete;
    Collective &operator=(const Collective &) = delete;

    /// The plan's id: equal on every rank exactly when they planned the same file.
    std::array<std::uint8_t, PSV_PLAN_ID_LEN> plan_id() const
    {
        std::array<std::uint8_t, PSV_PLAN_ID_LEN> id{};
        detail::check(psv_collective_plan_id(h_, id.data()), "psv_collective_plan_id");
        return id;
    }
    /// The temporary file every rank writes into (the same path on every rank).
    std::string temp_path() const
    {
        const char *p = psv_collective_temp_path(h_);
        return p == nullptr ? std::string() : std::string(p);
    }
    /// Rank 0 only: creates and reserves the temporary file, before any rank writes.
    void create() { detail::check(psv_collective_create(h_), "psv_collective_create"); }
    /// Writes this rank's arrays (`saver`: the one whose manifest this rank contributed) and
    /// returns its CRC report, for rank 0's commit().
    std::vector<std::uint8_t> write(const Saver &saver)
    {
        psv_buffer *b = nullptr;
        detail::check(psv_collective_write(h_, saver.get(), &b), "psv_collective_write");
        return detail::take_buffer(b);
    }
    /// Rank 0 only, once every rank's write() succeeded: `reports` in rank order. Writes the
    /// directory and renames the file over the target atomically; after a throw, call abort().
    void commit(const std::vector<std::vector<std::uint8_t>> &reports)
    {
        const detail::BlobColumns cols(reports);
        detail::check(psv_collective_commit(h_, cols.ptrs.data(), cols.lens.data(), reports.size()),
                      "psv_collective_commit");
    }
    /// Removes the temporary file (the target is untouched); afterwards only destruction.
    void abort() { detail::check(psv_collective_abort(h_), "psv_collective_abort"); }

    psv_collective *get() noexcept { return h_; }
    const psv_collective *get() const noexcept { return h_; }

private:
    psv_collective *h_ = nullptr;
};

/// A prepared save (RAII over psv_prepared): any byte range of the archive, from any thread.
/// Borrows its Saver, which must outlive it unchanged. Move-only.
class Prepared {
public:
    explicit Prepared(const Saver &saver, const SaveOptions &options = SaveOptions())
    {
        const psv_status st = psv_saver_prepare(saver.get(), options.get(), &h_);
        detail::rethrow_progress_error(options.progress_state());
        detail::check(st, "psv_saver_prepare");
    }
    Prepared(const Prepared &) = delete;
    Prepared &operator=(const Prepared &) = delete;
    Prepared(Prepared &&other) noexcept : h_(other.h_) { other.h_ = nullptr; }
    Prepared &operator=(Prepared &&other) noexcept
    {
        if (this != &other) {
            psv_prepared_free(h_);
            h_ = other.h_;
            other.h_ = nullptr;
        }
        return *this;
    }
    ~Prepared() { psv_prepared_free(h_); }

    /// The archive's length in bytes.
    std::uint64_t size() const noexcept { return psv_prepared_size(h_); }
    /// Writes bytes `offset .. offset + len` of the archive into `out` (thread-safe).
    void render(std::uint64_t offset, void *out, std::size_t len) const
    {
        detail::check(psv_prepared_render(h_, offset, len, out), "psv_prepared_render");
    }

private:
    psv_prepared *h_ = nullptr;
};

// ------------------------------------------------------------------------------------------------
// Archive

/// A typed, read-only view of one restored array: pointer, element count and shape. Valid until
/// its Archive is destroyed. Elements are in the stored order (see fortran_order()).
template <class T>
class View {
public:
    using value_type = T;
    using element_type = const T;
    using iterator = const T *;

    View() noexcept = default;
    View(const T *data, std::size_t size, Span<const std::int64_t> shape, bool fortran_order) noexcept
        : data_(data), size_(size), shape_(shape), fortran_order_(fortran_order)
    {
    }

    const T *data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
    bool empty() const noexcept { return size_ == 0; }
    const T *begin() const noexcept { return data_; }
    const T *end() const noexcept { return data_ + size_; }
    const T &operator[](std::size_t i) const noexcept { return data_[i]; }
    const T &at(std::size_t i) const
    {
        if (i >= size_) {
            throw std::out_of_range("psv::View::at: index " + std::to_string(i) + " >= size " +
                                    std::to_string(size_));
        }
        return data_[i];
    }

    /// The dimensions (empty for a 0-d array, which holds one element).
    Span<const std::int64_t> shape() const noexcept { return shape_; }
    std::size_t ndim() const noexcept { return shape_.size(); }
    /// True if the elements are column-major (as stored in the file; never reordered).
    bool fortran_order() const noexcept { return fortran_order_; }
    /// The elements as a Span (std::span in C++20).
    Span<const T> span() const noexcept { return Span<const T>(data_, size_); }

private:
    const T *data_ = nullptr;
    std::size_t size_ = 0;
    Span<const std::int64_t> shape_{};
    bool fortran_order_ = false;
};

class Archive;

/// One array of an Archive, by index: what iterating over an Archive yields.
class Entry {
public:
    Entry(const Archive &archive, std::size_t index) noexcept : archive_(&archive), index_(index) {}

    std::size_t index() const noexcept { return index_; }
    std::string_view key() const;
    std::string_view descr() const;
    psv_dtype dtype() const;
    std::size_t itemsize() const;
    std::size_t nbytes() const;
    std::size_t ndim() const;
    Span<const std::int64_t> shape() const;
    bool fortran_order() const;
    bool is_mapped() const;
    const void *data() const;
    Span<const std::byte> bytes() const;
    template <class T>
    bool is() const;
    template <class T>
    View<T> view() const;

private:
    const Archive *archive_;
    std::size_t index_;
};

/// A restored .npz: one 64-byte-aligned block holding every array (RAII over psv_archive; the
/// destructor calls psv_free). Move-only. Const members may run concurrently.
class Archive {
public:
    Archive() noexcept = default;
    /// Adopts a handle from psv_restore (freed by this object).
    explicit Archive(psv_archive *handle) noexcept : h_(handle) {}
    ~Archive() { psv_free(h_); }
    Archive(Archive &&other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
    Archive &operator=(Archive &&other) noexcept
    {
        if (this != &other) {
            psv_free(h_);
            h_ = std::exchange(other.h_, nullptr);
        }
        return *this;
    }
    Archive(const Archive &) = delete;
    Archive &operator=(const Archive &) = delete;

    explicit operator bool() const noexcept { return h_ != nullptr; }
    const psv_archive *get() const noexcept { return h_; }
    /// Gives up ownership: the caller must psv_free the result.
    psv_archive *release() noexcept { return std::exchange(h_, nullptr); }

    /// Number of arrays.
    std::size_t size() const noexcept { return psv_archive_count(h_); }
    bool empty() const noexcept { return size() == 0; }

    /// The index of the array named `key`, or nullopt. Throws psv::Error for other failures.
    std::optional<std::size_t> find(const std::string &key) const
    {
        std::size_t i = 0;
        const psv_status st = psv_archive_find(h_, key.c_str(), &i);
        if (st == PSV_OK) {
            return i;
        }
        if (st == PSV_ERR_NOT_FOUND) {
            return std::nullopt;
        }
        detail::raise(st, "psv_archive_find");
    }

    /// The index of the array named `key`; throws psv::Error (PSV_ERR_NOT_FOUND) if absent.
    std::size_t index(const std::string &key) const
    {
        std::size_t i = 0;
        detail::check(psv_archive_find(h_, key.c_str(), &i), "psv_archive_find");
        return i;
    }

    bool contains(const std::string &key) const { return find(key).has_value(); }

    std::string_view key(std::size_t i) const { return psv_archive_key(h_, checked(i)); }
    /// The numpy descr ("<f8", "|S5", "[('x', '<f4'), ...]").
    std::string_view descr(std::size_t i) const { return psv_archive_descr(h_, checked(i)); }
    psv_dtype dtype(std::size_t i) const { return psv_archive_dtype(h_, checked(i)); }
    std::size_t itemsize(std::size_t i) const { return psv_archive_itemsize(h_, checked(i)); }
    std::size_t nbytes(std::size_t i) const { return psv_archive_nbytes(h_, checked(i)); }
    std::size_t ndim(std::size_t i) const { return psv_archive_ndim(h_, checked(i)); }
    Span<const std::int64_t> shape(std::size_t i) const
    {
        const std::size_t n = ndim(i);
        return Span<const std::int64_t>(n == 0 ? nullptr : psv_archive_shape(h_, i), n);
    }
    bool fortran_order(std::size_t i) const { return psv_archive_fortran_order(h_, checked(i)); }
    /// True if array `i` views the file mapping (mmap mode) rather than a copy in the block.
    bool is_mapped(std::size_t i) const { return psv_archive_is_mapped(h_, checked(i)); }
    /// The array's byte offset inside the block (psv_archive_offset): another process that
    /// maps the same block rebuilds the same views from it.
    std::size_t offset(std::size_t i) const { return psv_archive_offset(h_, checked(i)); }
    /// Bytes of block the arrays need (psv_archive_required_bytes): the size of caller memory
    /// for restore_into, known from a metadata-only restore.
    std::size_t required_bytes() const noexcept { return psv_archive_required_bytes(h_); }
    /// The array's bytes: 64-byte aligned, inside block() (or the file mapping, see is_mapped);
    /// nullptr in a metadata-only archive.
    const void *data(std::size_t i) const { return psv_archive_data(h_, checked(i)); }
    /// The array's bytes; throws psv::Error (PSV_ERR_INVALID_ARG) for a metadata-only archive.
    Span<const std::byte> bytes(std::size_t i) const
    {
        return Span<const std::byte>(static_cast<const std::byte *>(data_or_throw(i)), nbytes(i));
    }

    /// True if array `i` holds T elements.
    template <class T>
    bool is(std::size_t i) const
    {
        static_assert(is_dtype_v<T>, "psv::Archive::is: T has no PSV_DTYPE_* code");
        return dtype(i) == dtype_v<T>;
    }

    /// Array `i` as T elements; throws psv::Error (PSV_ERR_BAD_DTYPE) unless its dtype is T's.
    template <class T>
    View<T> view(std::size_t i) const
    {
        static_assert(is_dtype_v<T>, "psv::Archive::view: T has no PSV_DTYPE_* code; use bytes()");
        const psv_dtype got = dtype(i);
        const std::size_t n = nbytes(i);
        if (got != dtype_v<T> || itemsize(i) != sizeof(T) || n % sizeof(T) != 0) {
            throw Error(PSV_ERR_BAD_DTYPE, "psv::Archive::view",
                        "array '" + std::string(key(i)) + "' has descr " + std::string(descr(i)) +
                            " (dtype code " + std::to_string(got) + "), not the requested dtype code " +
                            std::to_string(dtype_v<T>));
        }
        return View<T>(static_cast<const T *>(data_or_throw(i)), n / sizeof(T), shape(i), fortran_order(i));
    }

    /// The array named `key` as T elements; throws psv::Error if absent or of another dtype.
    template <class T>
    View<T> view(const std::string &key) const
    {
        return view<T>(index(key));
    }

    /// The one block holding every array.
    Span<const std::byte> block() const
    {
        std::size_t len = 0;
        const void *p = psv_archive_block(h_, &len);
        return Span<const std::byte>(static_cast<const std::byte *>(p), p == nullptr ? 0 : len);
    }

    /// Every key, in archive order.
    std::vector<std::string_view> keys() const
    {
        std::vector<std::string_view> out;
        out.reserve(size());
        for (std::size_t i = 0; i < size(); i++) {
            out.emplace_back(psv_archive_key(h_, i));
        }
        return out;
    }

    /// Names of the members that were skipped because they are not arrays.
    std::vector<std::string_view> skipped() const
    {
        std::vector<std::string_view> out;
        const std::size_t n = psv_archive_skipped_count(h_);
        out.reserve(n);
        for (std::size_t i = 0; i < n; i++) {
            out.emplace_back(psv_archive_skipped_name(h_, i));
        }
        return out;
    }

    Entry operator[](std::size_t i) const { return Entry(*this, checked(i)); }
    Entry at(std::size_t i) const { return Entry(*this, checked(i)); }

    /// Iterates over the entries (by value; each refers back to this archive).
    class iterator {
    public:
        using iterator_category = std::input_iterator_tag;
        using value_type = Entry;
        using difference_type = std::ptrdiff_t;
        using pointer = void;
        using reference = Entry;

        iterator(const Archive *archive, std::size_t index) noexcept : archive_(archive), index_(index) {}
        Entry operator*() const noexcept { return Entry(*archive_, index_); }
        iterator &operator++() noexcept
        {
            ++index_;
            return *this;
        }
        iterator operator++(int) noexcept
        {
            iterator old = *this;
            ++index_;
            return old;
        }
        bool operator==(const iterator &o) const noexcept { return archive_ == o.archive_ && index_ == o.index_; }
        bool operator!=(const iterator &o) const noexcept { return !(*this == o); }

    private:
        const Archive *archive_;
        std::size_t index_;
    };

    iterator begin() const noexcept { return iterator(this, 0); }
    iterator end() const noexcept { return iterator(this, size()); }

private:
    const void *data_or_throw(std::size_t i) const
    {
        const void *p = data(i);
        if (p == nullptr) {
            throw Error(PSV_ERR_INVALID_ARG, "psv::Archive",
                        "array '" + std::string(key(i)) + "' has no data (restored metadata-only)");
        }
        return p;
    }

    std::size_t checked(std::size_t i) const
    {
        const std::size_t n = size();
        if (i >= n) {
            throw std::out_of_range("psv::Archive: index " + std::to_string(i) + " out of range (size " +
                                    std::to_string(n) + ")");
        }
        return i;
    }

    psv_archive *h_ = nullptr;
};

inline std::string_view Entry::key() const { return archive_->key(index_); }
inline std::string_view Entry::descr() const { return archive_->descr(index_); }
inline psv_dtype Entry::dtype() const { return archive_->dtype(index_); }
inline std::size_t Entry::itemsize() const { return archive_->itemsize(index_); }
inline std::size_t Entry::nbytes() const { return archive_->nbytes(index_); }
inline std::size_t Entry::ndim() const { return archive_->ndim(index_); }
inline Span<const std::int64_t> Entry::shape() const { return archive_->shape(index_); }
inline bool Entry::fortran_order() const { return archive_->fortran_order(index_); }
inline bool Entry::is_mapped() const { return archive_->is_mapped(index_); }
inline const void *Entry::data() const { return archive_->data(index_); }
inline Span<const std::byte> Entry::bytes() const { return archive_->bytes(index_); }
template <class T>
bool Entry::is() const
{
    return archive_->is<T>(index_);
}
template <class T>
View<T> Entry::view() const
{
    return archive_->view<T>(index_);
}

/// Restores the .npz at `path` (".npz" appended unless present) with default options.
inline Archive restore(const std::string &path)
{
    psv_archive *out = nullptr;
    detail::check(psv_restore(path.c_str(), nullptr, &out), "psv_restore");
    return Archive(out);
}

/// Restores the .npz at `path` with `options`.
inline Archive restore(const std::string &path, const RestoreOptions &options)
{
    psv_archive *out = nullptr;
    const psv_status st = psv_restore(path.c_str(), options.get(), &out);
    Archive archive(out); // owns it from here, whatever happens next
    detail::rethrow_progress_error(options.progress_state());
    detail::check(st, "psv_restore");
    return archive;
}

/// Restores a .npz held in memory (`len` bytes at `buf`, only read during the call).
inline Archive restore_from_memory(const void *buf, std::size_t len)
{
    psv_archive *out = nullptr;
    detail::check(psv_restore_from_memory(buf, len, nullptr, &out), "psv_restore_from_memory");
    return Archive(out);
}

inline Archive restore_from_memory(const void *buf, std::size_t len, const RestoreOptions &options)
{
    psv_archive *out = nullptr;
    const psv_status st = psv_restore_from_memory(buf, len, options.get(), &out);
    Archive archive(out);
    detail::rethrow_progress_error(options.progress_state());
    detail::check(st, "psv_restore_from_memory");
    return archive;
}

/// Restores the archive in the caller's open `fd` (psv_restore_fd; positional reads, the fd's
/// offset does not move).
inline Archive restore_fd(int fd, const RestoreOptions &options = RestoreOptions())
{
    psv_archive *out = nullptr;
    const psv_status st = psv_restore_fd(fd, options.get(), &out);
    Archive archive(out);
    detail::rethrow_progress_error(options.progress_state());
    detail::check(st, "psv_restore_fd");
    return archive;
}

/// Restores the .npz at `path` into the caller's 64-byte-aligned `buf` of `len` bytes
/// (psv_restore_into): at least required_bytes() of a metadata-only restore. The archive's
/// views point into `buf`, which must outlive them; destroying the archive leaves `buf` alone.
inline Archive restore_into(const std::string &path, void *buf, std::size_t len,
                            const RestoreOptions &options = RestoreOptions())
{
    psv_archive *out = nullptr;
    const psv_status st = psv_restore_into(path.c_str(), options.get(), buf, len, &out);
    Archive archive(out);
    detail::rethrow_progress_error(options.progress_state());
    detail::check(st, "psv_restore_into");
    return archive;
}

namespace detail {
/// The state of a stream restore's read callback: the caller's callable and its exception.
template <class Read>
struct ReadState {
    Read *read;
    std::exception_ptr error;
};

/// The psv_read_fn over a ReadState<Read>: `read(buf, len)` returns the bytes it gave (0 at
/// the end); an exception is kept for the caller and stops the stream.
template <class Read>
std::int64_t read_trampoline(void *userdata, void *buf, std::size_t len) noexcept
{
    auto *st = static_cast<ReadState<Read> *>(userdata);
    try {
        const std::size_t n = (*st->read)(buf, len);
        return n > len ? -1 : static_cast<std::int64_t>(n);
    } catch (...) {
        st->error = std::current_exception();
        return -1;
    }
}

/// A callable over a std::istream for the stream restores.
struct IstreamRead {
    std::istream *in;
    std::size_t operator()(void *buf, std::size_t len) const
    {
        if (!in->good()) {
            if (in->bad()) {
                throw std::runtime_error("psv::restore_stream: the std::istream failed");
            }
            return 0;
        }
        in->read(static_cast<char *>(buf), static_cast<std::streamsize>(len));
        if (in->bad()) {
            throw std::runtime_error("psv::restore_stream: the std::istream failed");
        }
        return static_cast<std::size_t>(in->gcount());
    }
};

template <class Read>
using NotIstream = std::enable_if_t<!std::is_base_of_v<std::istream, std::decay_t<Read>>>;
} // namespace detail

/// Restores the archive that `read(void *buf, std::size_t len) -> std::size_t` streams
/// (psv_restore_stream): it copies up to `len` bytes into `buf` and returns how many, 0 at the
/// end. It is read once, front to back, on the calling thread. An exception from `read` stops
/// the stream and is rethrown here.
template <class Read, class = detail::NotIstream<Read>>
Archive restore_stream(Read &&read, const RestoreOptions &options = RestoreOptions())
{
    detail::ReadState<std::remove_reference_t<Read>> state{&read, nullptr};
    psv_archive *out = nullptr;
    const psv_status st = psv_restore_stream(
        detail::read_trampoline<std::remove_reference_t<Read>>, &state, options.get(), &out);
    Archive archive(out);
    if (state.error) {
        std::rethrow_exception(state.error);
    }
    detail::rethrow_progress_error(options.progress_state());
    detail::check(st, "psv_restore_stream");
    return archive;
}

/// Restores the archive that `in` holds from its current position, reading it once (binary
/// mode); reading stops right after the archive's end record.
inline Archive restore_stream(std::istream &in, const RestoreOptions &options = RestoreOptions())
{
    return restore_stream(detail::IstreamRead{&in}, options);
}

/// restore_stream() into the caller's 64-byte-aligned `buf` of `len` bytes
/// (psv_restore_stream_into): at least required_bytes() of a metadata-only restore of the same
/// archive. The views point into `buf`, which must outlive them.
template <class Read, class = detail::NotIstream<Read>>
Archive restore_stream_into(Read &&read, void *buf, std::size_t len,
                            const RestoreOptions &options = RestoreOptions())
{
    detail::ReadState<std::remove_reference_t<Read>> state{&read, nullptr};
    psv_archive *out = nullptr;
    const psv_status st = psv_restore_stream_into(
        detail::read_trampoline<std::remove_reference_t<Read>>, &state, options.get(), buf, len, &out);
    Archive archive(out);
    if (state.error) {
        std::rethrow_exception(state.error);
    }
    detail::rethrow_progress_error(options.progress_state());
    detail::check(st, "psv_restore_stream_into");
    return archive;
}

/// restore_stream_into() from a std::istream.
inline Archive restore_stream_into(std::istream &in, void *buf, std::size_t len,
                                   const RestoreOptions &options = RestoreOptions())
{
    return restore_stream_into(detail::IstreamRead{&in}, buf, len, options);
}

} // namespace psv

#endif /* PSV_HPP */
