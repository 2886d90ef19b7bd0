//! Checked element and byte counts for array shapes.

use crate::error::{Error, Result};

/// Most dimensions an array may have (numpy's NPY_MAXDIMS is 64 since numpy 2.0).
pub const MAX_NDIM: usize = 64;

/// Bytes of an array of `shape` with `itemsize`-byte elements; at most `isize::MAX`.
///
/// A 0-d shape holds one element; any zero dimension makes the array empty (checked first, so
/// `(0, huge, huge)` is a valid empty array, as in numpy).
pub fn byte_count(shape: &[u64], itemsize: usize) -> Result<usize> {
    if shape.len() > MAX_NDIM {
        return Err(Error::overflow(format!(
            "ndim {} exceeds the maximum of {MAX_NDIM}",
            shape.len()
        )));
    }
    let too_big = || {
        Error::overflow(format!(
            "shape {shape:?} with itemsize {itemsize} does not fit in memory (byte count overflows)"
        ))
    };
    // numpy itself refuses shapes whose element count overflows npy_intp, even if empty.
    let elements = shape
        .iter()
        .try_fold(
            1u64,
            |acc, &d| if d == 0 { Some(0) } else { acc.checked_mul(d) },
        )
        .ok_or_else(too_big)?;
    if shape.iter().any(|&d| d > isize::MAX as u64) {
        return Err(too_big());
    }
    let elements = usize::try_from(elements).map_err(|_| too_big())?;
    elements
        .checked_mul(itemsize)
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(too_big)
}

/// Converts C `int64_t` dimensions to `u64`, rejecting negative ones.
pub fn dims_from_i64(dims: &[i64]) -> Result<Vec<u64>> {
    if dims.len() > MAX_NDIM {
        return Err(Error::overflow(format!(
            "ndim {} exceeds the maximum of {MAX_NDIM}",
            dims.len()
        )));
    }
    dims.iter()
        .enumerate()
        .map(|(i, &d)| {
            u64::try_from(d)
                .map_err(|_| Error::overflow(format!("dimension {i} is negative ({d})")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(byte_count(&[], 8).unwrap(), 8);
        assert_eq!(byte_count(&[2, 3], 4).unwrap(), 24);
        assert_eq!(byte_count(&[0, 5], 4).unwrap(), 0);
        assert_eq!(byte_count(&[3], 0).unwrap(), 0);
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(byte_count(&[u64::MAX, 2], 1).is_err());
        assert!(byte_count(&[1 << 62], 4).is_err());
        assert!(byte_count(&[1; 65], 1).is_err());
        assert!(dims_from_i64(&[3, -1]).is_err());
        assert_eq!(dims_from_i64(&[3, 0]).unwrap(), vec![3, 0]);
    }
}
