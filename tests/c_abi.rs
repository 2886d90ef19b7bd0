//! The C ABI driven from Rust: status codes, out-parameter rules, the last-error store, and a
//! round trip, exactly as a C caller sees them.

mod common;

use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

use psv::ffi::types::*;
use psv::ffi::*;

fn last_error() -> String {
    let n = psv_last_error_message(null_mut(), 0);
    let mut buf = vec![0u8; n + 1];
    assert_eq!(
        psv_last_error_message(buf.as_mut_ptr().cast(), buf.len()),
        n
    );
    CStr::from_bytes_until_nul(&buf)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

fn scratch(name: &str) -> std::path::PathBuf {
    common::scratch("cabi", name)
}

#[test]
fn round_trip_through_the_c_abi() {
    let dir = scratch("rt");
    let path = CString::new(dir.join("f").to_str().unwrap()).unwrap();
    let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
    let shape = [10i64, 100];
    let s = psv_saver_new();
    let key = CString::new("w").unwrap();
    assert_eq!(
        psv_saver_add(
            s,
            key.as_ptr(),
            data.as_ptr().cast(),
            PSV_DTYPE_F32,
            shape.as_ptr(),
            2
        ),
        PSV_OK
    );
    let descr = CString::new(">i2").unwrap();
    let be: [u8; 6] = [0, 1, 0, 2, 0, 3];
    let k2 = CString::new("be").unwrap();
    assert_eq!(
        psv_saver_add_descr(
            s,
            k2.as_ptr(),
            be.as_ptr().cast(),
            6,
            descr.as_ptr(),
            [3i64].as_ptr(),
            1,
            false
        ),
        PSV_OK
    );
    let fdata: Vec<i32> = (0..6).collect();
    let kf = CString::new("fortran").unwrap();
    assert_eq!(
        psv_saver_add_fortran(
            s,
            kf.as_ptr(),
            fdata.as_ptr().cast(),
            PSV_DTYPE_I32,
            [2i64, 3].as_ptr(),
            2
        ),
        PSV_OK
    );
    assert_eq!(psv_saver_count(s), 3);
    let opts = psv_save_options_new();
    assert_eq!(psv_save_options_set_threads(opts, 2), PSV_OK);
    assert_eq!(psv_saver_save(s, path.as_ptr(), opts), PSV_OK);
    assert_eq!(psv_last_error_message(null_mut(), 0), 0);
    psv_save_options_free(opts);
    psv_saver_free(s);

    let mut a: *mut psv_archive = null_mut();
    assert_eq!(psv_restore(path.as_ptr(), null(), &mut a), PSV_OK);
    assert_eq!(psv_archive_count(a), 3);
    assert!(psv_archive_fortran_order(a, 2));
    assert!(!psv_archive_fortran_order(a, 0));
    let mut i = usize::MAX;
    assert_eq!(psv_archive_find(a, key.as_ptr(), &mut i), PSV_OK);
    assert_eq!(i, 0);
    assert_eq!(psv_archive_dtype(a, 0), PSV_DTYPE_F32);
    assert_eq!(psv_archive_ndim(a, 0), 2);
    // SAFETY (test): shape has ndim elements, data has nbytes bytes, both live until psv_free.
    unsafe {
        assert_eq!(
            std::slice::from_raw_parts(psv_archive_shape(a, 0), 2),
            &shape
        );
        let p = psv_archive_data(a, 0);
        assert_eq!(p as usize % 64, 0);
        assert_eq!(std::slice::from_raw_parts(p.cast::<f32>(), 1000), &data[..]);
        assert_eq!(
            CStr::from_ptr(psv_archive_descr(a, 1)).to_str().unwrap(),
            ">i2"
        );
    }
    assert_eq!(psv_archive_dtype(a, 1), PSV_DTYPE_OTHER);
    assert_eq!(psv_archive_itemsize(a, 1), 2);
    // The bulk accessors agree with the per-array ones.
    let mut data_ptrs = [std::ptr::null(); 3];
    let mut nbytes = [0usize; 3];
    let mut dtypes = [0i32; 3];
    let mut ndims = [0usize; 3];
    let mut fortran = [true; 3];
    assert_eq!(psv_archive_total_ndim(a), 5);
    let mut dims = [0i64; 5];
    assert_eq!(
        psv_archive_describe(
            a,
            data_ptrs.as_mut_ptr(),
            nbytes.as_mut_ptr(),
            dtypes.as_mut_ptr(),
            ndims.as_mut_ptr(),
            fortran.as_mut_ptr(),
            dims.as_mut_ptr()
        ),
        PSV_OK
    );
    assert_eq!(data_ptrs[0], psv_archive_data(a, 0));
    assert_eq!(nbytes, [4000, 6, 24]);
    assert_eq!(dtypes, [PSV_DTYPE_F32, PSV_DTYPE_OTHER, PSV_DTYPE_I32]);
    assert_eq!(ndims, [2, 1, 2]);
    assert_eq!(fortran, [false, false, true]);
    assert_eq!(dims, [10, 100, 3, 2, 3]);
    assert_eq!(
        psv_archive_describe(
            a,
            null_mut(),
            null_mut(),
            null_mut(),
            null_mut(),
            null_mut(),
            null_mut()
        ),
        PSV_OK
    );
    assert_eq!(
        psv_archive_describe(
            null(),
            null_mut(),
            null_mut(),
            null_mut(),
            null_mut(),
            null_mut(),
            null_mut()
        ),
        PSV_ERR_NULL_ARG
    );
    let mut list_len = 0usize;
    let keys = psv_archive_key_list(a, &mut list_len);
    // SAFETY (test): the list has list_len bytes, valid until psv_free.
    assert_eq!(
        unsafe { std::slice::from_raw_parts(keys.cast::<u8>(), list_len) },
        b"w\0be\0fortran\0"
    );
    let descrs = psv_archive_descr_list(a, &mut list_len);
    // SAFETY (test): as above.
    assert_eq!(
        unsafe { std::slice::from_raw_parts(descrs.cast::<u8>(), list_len) },
        b"<f4\0>i2\0<i4\0"
            .as_slice()
            .iter()
            .map(|&b| if b == b'<' && cfg!(target_endian = "big") {
                b'>'
            } else {
                b
            })
            .collect::<Vec<u8>>()
            .as_slice()
    );
    assert!(psv_archive_key_list(null(), &mut list_len).is_null());

    let mut len = 0usize;
    let block = psv_archive_block(a, &mut len);
    assert!(!block.is_null() && len >= 4000 + 6);
    psv_free(a);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn null_arguments_and_bad_codes_give_their_status() {
    let s = psv_saver_new();
    let key = CString::new("k").unwrap();
    let shape = [4i64];
    let data = [0u8; 16];
    assert_eq!(
        psv_saver_add(
            null_mut(),
            key.as_ptr(),
            data.as_ptr().cast(),
            PSV_DTYPE_U8,
            shape.as_ptr(),
            1
        ),
        PSV_ERR_NULL_ARG
    );
    assert!(last_error().contains("saver"));
    assert_eq!(
        psv_saver_add(
            s,
            null(),
            data.as_ptr().cast(),
            PSV_DTYPE_U8,
            shape.as_ptr(),
            1
        ),
        PSV_ERR_NULL_ARG
    );
    assert_eq!(
        psv_saver_add(s, key.as_ptr(), null(), PSV_DTYPE_U8, shape.as_ptr(), 1),
        PSV_ERR_NULL_ARG
    );
    assert_eq!(
        psv_saver_add(
            s,
            key.as_ptr(),
            data.as_ptr().cast(),
            PSV_DTYPE_U8,
            null(),
            1
        ),
        PSV_ERR_NULL_ARG
    );
    for bad in [0, -1, PSV_DTYPE_OTHER, 16, 1000] {
        assert_eq!(
            psv_saver_add(
                s,
                key.as_ptr(),
                data.as_ptr().cast(),
                bad,
                shape.as_ptr(),
                1
            ),
            PSV_ERR_BAD_DTYPE
        );
    }
    assert_eq!(
        psv_saver_add(
            s,
            key.as_ptr(),
            data.as_ptr().cast(),
            PSV_DTYPE_U8,
            shape.as_ptr(),
            65
        ),
        PSV_ERR_OVERFLOW
    );
    assert_eq!(
        psv_saver_add(
            s,
            key.as_ptr(),
            data.as_ptr().cast(),
            PSV_DTYPE_U8,
            [-1i64].as_ptr(),
            1
        ),
        PSV_ERR_OVERFLOW
    );
    assert_eq!(
        psv_saver_add(
            s,
            key.as_ptr(),
            data.as_ptr().cast(),
            PSV_DTYPE_F64,
            [i64::MAX, 2].as_ptr(),
            2
        ),
        PSV_ERR_OVERFLOW
    );
    let bad_utf8 = b"\xff\xfe\0";
    assert_eq!(
        psv_saver_add(
            s,
            bad_utf8.as_ptr().cast(),
            data.as_ptr().cast(),
            PSV_DTYPE_U8,
            shape.as_ptr(),
            1
        ),
        PSV_ERR_INVALID_ARG
    );
    // NULL data is fine for zero bytes; NULL shape is fine for 0-d.
    assert_eq!(
        psv_saver_add(s, key.as_ptr(), null(), PSV_DTYPE_U8, [0i64].as_ptr(), 1),
        PSV_OK
    );
    assert_eq!(psv_last_error_message(null_mut(), 0), 0);
    let k0 = CString::new("zero-d").unwrap();
    assert_eq!(
        psv_saver_add(
            s,
            k0.as_ptr(),
            data.as_ptr().cast(),
            PSV_DTYPE_F64,
            null(),
            0
        ),
        PSV_OK
    );
    assert_eq!(
        psv_saver_add(
            s,
            key.as_ptr(),
            data.as_ptr().cast(),
            PSV_DTYPE_U8,
            shape.as_ptr(),
            1
        ),
        PSV_ERR_INVALID_ARG
    );
    assert!(last_error().contains("duplicate"));
    assert_eq!(psv_saver_save(s, null(), null()), PSV_ERR_NULL_ARG);
    psv_saver_free(s);
    psv_saver_free(null_mut());
    psv_free(null_mut());
    psv_save_options_free(null_mut());
    psv_restore_options_free(null_mut());

    let mut out: *mut psv_archive = std::ptr::dangling_mut();
    let missing = CString::new("/nonexistent/psv/file").unwrap();
    assert_eq!(psv_restore(missing.as_ptr(), null(), &mut out), PSV_ERR_IO);
    assert!(out.is_null(), "out must be NULL after a failure");
    // Named as given: neither the path nor path + ".npz" exists (issue 13: paths are opened
    // as given, ".npz" is only a fallback).
    assert!(
        last_error().contains("cannot open /nonexistent/psv/file:"),
        "{}",
        last_error()
    );
    assert_eq!(
        psv_restore(missing.as_ptr(), null(), null_mut()),
        PSV_ERR_NULL_ARG
    );
    assert_eq!(psv_restore(null(), null(), &mut out), PSV_ERR_NULL_ARG);

    assert_eq!(psv_archive_count(null()), 0);
    assert!(psv_archive_key(null(), 0).is_null());
    assert!(psv_archive_data(null(), 0).is_null());
    assert_eq!(psv_archive_dtype(null(), 0), PSV_DTYPE_INVALID);
    let mut idx = 0usize;
    assert_eq!(
        psv_archive_find(null(), key.as_ptr(), &mut idx),
        PSV_ERR_NULL_ARG
    );
    assert_eq!(
        psv_save_options_set_threads(null_mut(), 1),
        PSV_ERR_NULL_ARG
    );
    assert_eq!(
        psv_restore_options_set_verify_crc(null_mut(), true),
        PSV_ERR_NULL_ARG
    );
}

#[test]
fn status_strings_and_versions() {
    let names = [
        "PSV_OK",
        "PSV_ERR_NULL_ARG",
        "PSV_ERR_INVALID_ARG",
        "PSV_ERR_BAD_DTYPE",
        "PSV_ERR_OVERFLOW",
        "PSV_ERR_IO",
        "PSV_ERR_FORMAT",
        "PSV_ERR_UNSUPPORTED",
        "PSV_ERR_LIMIT",
        "PSV_ERR_NOT_FOUND",
        "PSV_ERR_NOMEM",
        "PSV_ERR_ABORTED",
        "PSV_ERR_PANIC",
        "PSV_ERR_CRC",
    ];
    for (code, name) in names.iter().enumerate() {
        // SAFETY (test): psv_status_str returns a static NUL-terminated string.
        let got = unsafe { CStr::from_ptr(psv_status_str(code as i32)) };
        assert_eq!(got.to_str().unwrap(), *name);
    }
    // SAFETY (test): as above.
    assert_eq!(
        unsafe { CStr::from_ptr(psv_status_str(999)) }
            .to_str()
            .unwrap(),
        "PSV_ERR_UNKNOWN"
    );
    // SAFETY (test): psv_version returns a static NUL-terminated string.
    assert_eq!(
        unsafe { CStr::from_ptr(psv_version()) }.to_str().unwrap(),
        env!("CARGO_PKG_VERSION")
    );
    let header =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/psv.h")).unwrap();
    let macro_value = |name: &str| -> u32 {
        let line = header
            .lines()
            .find(|l| l.starts_with(&format!("#define {name} ")))
            .unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let (major, minor, patch) = (
        macro_value("PSV_VERSION_MAJOR"),
        macro_value("PSV_VERSION_MINOR"),
        macro_value("PSV_VERSION_PATCH"),
    );
    assert_eq!(
        format!("{major}.{minor}.{patch}"),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        macro_value("PSV_VERSION_NUMBER"),
        major * 10000 + minor * 100 + patch
    );
    assert_eq!(macro_value("PSV_ABI_VERSION"), psv_abi_version());
}

#[test]
fn last_error_message_truncates_like_snprintf() {
    let mut out: *mut psv_archive = null_mut();
    let missing = CString::new("/nonexistent/x").unwrap();
    assert_eq!(psv_restore(missing.as_ptr(), null(), &mut out), PSV_ERR_IO);
    let full = last_error();
    let mut small = [0x55u8; 8];
    assert_eq!(
        psv_last_error_message(small.as_mut_ptr().cast(), small.len()),
        full.len()
    );
    assert_eq!(&small[..7], &full.as_bytes()[..7]);
    assert_eq!(small[7], 0);
    // The message is per thread.
    std::thread::spawn(|| assert_eq!(psv_last_error_message(null_mut(), 0), 0))
        .join()
        .unwrap();
}

#[test]
fn last_error_os_code_is_the_errno_of_os_failures_only() {
    let dir = scratch("oscode");
    let data = [1.0f64, 2.0];
    let shape = [2i64];
    let key = CString::new("x").unwrap();
    let s = psv_saver_new();
    assert_eq!(
        psv_saver_add(
            s,
            key.as_ptr(),
            data.as_ptr().cast(),
            PSV_DTYPE_F64,
            shape.as_ptr(),
            1
        ),
        PSV_OK
    );
    assert_eq!(psv_last_error_os_code(), 0);

    // Saving into a directory that does not exist: the OS says ENOENT.
    let missing = CString::new(dir.join("no/such/dir/x").to_str().unwrap()).unwrap();
    assert_eq!(psv_saver_save(s, missing.as_ptr(), null()), PSV_ERR_IO);
    assert_eq!(psv_last_error_os_code(), libc::ENOENT, "{}", last_error());
    assert_eq!(
        psv_last_error_os_code(),
        libc::ENOENT,
        "reading does not clear it"
    );
    // Per thread, like the message.
    std::thread::spawn(|| assert_eq!(psv_last_error_os_code(), 0))
        .join()
        .unwrap();

    // A failure that is not the OS's sets 0 (and its own message).
    assert_eq!(psv_saver_save(s, null(), null()), PSV_ERR_NULL_ARG);
    assert_eq!(psv_last_error_os_code(), 0);

    // A success clears it together with the message.
    assert_eq!(psv_saver_save(s, missing.as_ptr(), null()), PSV_ERR_IO);
    let good = CString::new(dir.join("x").to_str().unwrap()).unwrap();
    assert_eq!(psv_saver_save(s, good.as_ptr(), null()), PSV_OK);
    assert_eq!(psv_last_error_os_code(), 0);
    assert_eq!(psv_last_error_message(null_mut(), 0), 0);

    // Restoring a missing file: ENOENT as well.
    let mut out: *mut psv_archive = null_mut();
    let gone = CString::new(dir.join("gone").to_str().unwrap()).unwrap();
    assert_eq!(psv_restore(gone.as_ptr(), null(), &mut out), PSV_ERR_IO);
    assert_eq!(psv_last_error_os_code(), libc::ENOENT);
    psv_saver_free(s);
}

#[test]
fn add_many_adds_in_order_and_is_all_or_nothing() {
    let dir = scratch("many");
    let path = CString::new(dir.join("m.npz").to_str().unwrap()).unwrap();
    let a: Vec<i32> = (0..6).collect();
    let b: Vec<f64> = vec![1.5, -2.0];
    let c: Vec<u8> = vec![7];
    let names = ["first", "second", "scalar"].map(|k| CString::new(k).unwrap());
    let keys: Vec<*const std::ffi::c_char> = names.iter().map(|k| k.as_ptr()).collect();
    let data: Vec<*const std::ffi::c_void> =
        vec![a.as_ptr().cast(), b.as_ptr().cast(), c.as_ptr().cast()];
    let dtypes = [PSV_DTYPE_I32, PSV_DTYPE_F64, PSV_DTYPE_U8];
    let shapes = [2i64, 3, 2]; // (2, 3), (2,), ()
    let ndims = [2usize, 1, 0];
    let s = psv_saver_new();
    let many = |s, n: usize, dtypes: &[psv_dtype], shapes: &[i64]| {
        psv_saver_add_many(
            s,
            n,
            keys.as_ptr(),
            data.as_ptr(),
            dtypes.as_ptr(),
            shapes.as_ptr(),
            ndims.as_ptr(),
        )
    };

    // A bad dtype at index 2: nothing is added, the message names the index.
    let bad = [PSV_DTYPE_I32, PSV_DTYPE_F64, 99];
    assert_eq!(many(s, 3, &bad, &shapes), PSV_ERR_BAD_DTYPE);
    assert!(last_error().contains("array 2"), "{}", last_error());
    assert_eq!(psv_saver_count(s), 0);
    // A negative dim in the second array: nothing is added.
    assert_eq!(many(s, 3, &dtypes, &[2, 3, -2]), PSV_ERR_OVERFLOW);
    assert_eq!(psv_saver_count(s), 0);
    // Count 0 is a no-op even with NULL arrays; NULL arrays with a count are NULL_ARG.
    assert_eq!(
        psv_saver_add_many(s, 0, null(), null(), null(), null(), null()),
        PSV_OK
    );
    assert_eq!(
        psv_saver_add_many(
            s,
            3,
            null(),
            data.as_ptr(),
            dtypes.as_ptr(),
            shapes.as_ptr(),
            ndims.as_ptr()
        ),
        PSV_ERR_NULL_ARG
    );
    assert_eq!(
        psv_saver_add_many(null_mut(), 0, null(), null(), null(), null(), null()),
        PSV_ERR_NULL_ARG
    );
    // A count no array can have is refused before anything is read.
    assert_eq!(
        psv_saver_add_many(
            s,
            usize::MAX / 2,
            keys.as_ptr(),
            data.as_ptr(),
            dtypes.as_ptr(),
            shapes.as_ptr(),
            ndims.as_ptr()
        ),
        PSV_ERR_OVERFLOW
    );
    assert_eq!(psv_saver_count(s), 0);

    // The first two succeed; re-adding all three then fails on the duplicate and rolls back
    // only its own additions, so "scalar" can still be added afterwards.
    assert_eq!(many(s, 2, &dtypes, &shapes), PSV_OK);
    assert_eq!(psv_saver_count(s), 2);
    assert_eq!(many(s, 3, &dtypes, &shapes), PSV_ERR_INVALID_ARG);
    assert!(last_error().contains("duplicate"), "{}", last_error());
    assert_eq!(psv_saver_count(s), 2);
    let scalar_shape: [i64; 0] = [];
    assert_eq!(
        psv_saver_add(s, keys[2], data[2], PSV_DTYPE_U8, scalar_shape.as_ptr(), 0),
        PSV_OK
    );
    assert_eq!(psv_saver_save(s, path.as_ptr(), null()), PSV_OK);
    psv_saver_free(s);

    let mut ar: *mut psv_archive = null_mut();
    assert_eq!(psv_restore(path.as_ptr(), null(), &mut ar), PSV_OK);
    assert_eq!(psv_archive_count(ar), 3);
    for (i, name) in ["first", "second", "scalar"].iter().enumerate() {
        // SAFETY: the key is a NUL-terminated string owned by the archive.
        let key = unsafe { CStr::from_ptr(psv_archive_key(ar, i)) };
        assert_eq!(key.to_str().unwrap(), *name);
    }
    assert_eq!(psv_archive_ndim(ar, 0), 2);
    // SAFETY: shape 0 has ndim (2) elements while the archive lives.
    let shape0 = unsafe { std::slice::from_raw_parts(psv_archive_shape(ar, 0), 2) };
    assert_eq!(shape0, &[2, 3]);
    // SAFETY: array 0 holds 6 int32 and array 1 two float64, 64-aligned, while the archive lives.
    let (got_a, got_b) = unsafe {
        (
            std::slice::from_raw_parts(psv_archive_data(ar, 0).cast::<i32>(), 6),
            std::slice::from_raw_parts(psv_archive_data(ar, 1).cast::<f64>(), 2),
        )
    };
    assert_eq!(got_a, &a[..]);
    assert_eq!(got_b, &b[..]);
    assert_eq!(psv_archive_dtype(ar, 2), PSV_DTYPE_U8);
    assert_eq!(psv_archive_ndim(ar, 2), 0);
    psv_free(ar);
    let _ = std::fs::remove_dir_all(&dir);
}
