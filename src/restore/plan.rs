//! The restore plan: which members are arrays, what each holds (phase A), and where each goes in
//! the block. Metadata-only restores stop here.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rayon::prelude::*;

use super::inspect::{Image, Inspected, Located, Staging};
use super::source::Reader;
use crate::archive::ArrayInfo;
use crate::error::{Error, Result};
use crate::memory::{self, AnonMap, FileMap, BLOCK_ALIGN};
use crate::npz::{self, index::MemberInfo, index::Method};
use crate::options::{self, RestoreOptions};

/// Everything the fill needs, and the archive's description.
pub(super) struct RestorePlan {
    /// The arrays, in restore order, with their offsets in the block (or the mapping).
    pub(super) arrays: Vec<ArrayInfo>,
    /// Per array (same order): its member's index in the listing, and what phase A found.
    pub(super) located: Vec<(usize, Located)>,
    /// Names of the members that are not arrays, in listing order.
    pub(super) skipped: Vec<String>,
    /// Bytes of block the arrays need (for a metadata-only plan too: the size of caller memory).
    pub(super) block_len: usize,
    /// In image mode, the image of the file's data region that phase A read small members into
    /// (their final place): the block's first bytes; the whole block unless some arrays go
    /// after the image.
    pub(super) staged: Option<AnonMap>,
}

impl Reader<'_> {
    /// Plans the restore of `members` (a central directory, or a directory archive's listing
    /// when `dir` is given); `map` is the file mapping in mmap mode.
    pub(super) fn plan(
        &self,
        pool: &rayon::ThreadPool,
        members: &[MemberInfo],
        map: Option<&FileMap>,
        dir: Option<&Path>,
        image_allowed: bool,
    ) -> Result<RestorePlan> {
        let opts = self.opts;
        let (candidates, skipped) = select_members(members, self.shown, opts)?;
        let limit = opts
            .max_total_bytes
            .unwrap_or_else(options::physical_memory);
        // Image mode: phase A reads runs of small members straight into an image of the file's
        // data region, which becomes the block (or its first part, when some array turns out
        // not to be aligned in place and goes after it: psv never writes such files).
        if image_allowed && dir.is_none() && map.is_none() {
            if let Some(image) = self.plan_image(members, &candidates, limit) {
                // Sized as the block will be when every array is in place (the image padded
                // to 64), so that it becomes the block as it is.
                let padded = memory::align_up(image.len())
                    .ok_or_else(|| Error::limit("block size overflows"))?;
                let mut staged = AnonMap::new(padded)?;
                let staging = Staging::Image(image, &mut staged.as_mut_slice()[..image.len()]);
                let inspected = self.inspect_all(pool, members, &candidates, staging)?;
                let mut plan = self.place(
                    members,
                    &candidates,
                    inspected,
                    skipped,
                    None,
                    Some(image),
                    limit,
                )?;
                plan.staged = Some(staged);
                return Ok(plan);
            }
        }
        let inspected = match dir {
            Some(dir) => pool.install(|| {
                candidates
                    .par_iter()
                    .map(|&i| {
                        self.inspect_dir_file(dir, &members[i])
                            .map(Inspected::Array)
                            .map_err(|e| self.in_member(&members[i], e))
                    })
                    .collect::<Result<Vec<_>>>()
            })?,
            None => {
                let staging = match map {
                    Some(map) => Staging::Mapped(&map.as_slice()[..self.file_len as usize]),
                    None => Staging::Regions,
                };
                self.inspect_all(pool, members, &candidates, staging)?
            }
        };
        self.place(members, &candidates, inspected, skipped, map, None, limit)
    }

    /// Places every inspected array: mapped (mmap mode), in place in the `image` (when its data
    /// is aligned inside it), or at the next 64-aligned offset of the block after the image.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &self,
        members: &[MemberInfo],
        candidates: &[usize],
        inspected: Vec<Inspected>,
        mut skipped: Vec<usize>,
        map: Option<&FileMap>,
        image: Option<Image>,
        limit: u64,
    ) -> Result<RestorePlan> {
        let (shown, opts) = (self.shown, self.opts);
        if let Some(central_start) = self.central_start {
            self.check_overlaps(members, candidates, &inspected, central_start)?;
        }
        let mut arrays = Vec::with_capacity(candidates.len());
        let mut located = Vec::with_capacity(candidates.len());
        let mut end: usize = image.map_or(0, |img| img.len());
        for (&i, found) in candidates.iter().zip(inspected) {
            let m = &members[i];
            let mut loc = match found {
                Inspected::Array(loc) => loc,
                Inspected::NotArray { payload_start } => {
                    if opts.keys.is_some() {
                        return Err(Error::format(format!(
                            "{shown}: member {:?} is not a .npy array",
                            m.name
                        )));
                    }
                    // numpy returns such members as raw bytes, CRC-checked: a flipped bit in
                    // the magic must not make an array vanish silently.
                    if opts.verify_crc {
                        self.check_raw_member_crc(m, payload_start)
                            .map_err(|e| self.in_member(m, e))?;
                    }
                    skipped.push(i);
                    continue;
                }
            };
            let file_offset = (loc.method == Method::Stored)
                .then(|| loc.payload_start + loc.header.header_len as u64);
            // Mapped views are the file's bytes: members that must be byte-swapped are copied.
            let mapped = map.is_some()
                && file_offset.is_some_and(|o| o % 64 == 0)
                && loc.swap_units.is_empty();
            // In image mode, aligned stored data stays where phase A (or the fill) puts it.
            let in_image = image.zip(file_offset).and_then(|(img, o)| {
                let fits = o % BLOCK_ALIGN as u64 == 0
                    && o >= img.start
                    && o.checked_add(loc.header.nbytes as u64)
                        .is_some_and(|e| e <= img.end);
                fits.then(|| (o - img.start) as usize)
            });
            if in_image.is_none() {
                // Phase A only marks members whose data is aligned inside the image.
                debug_assert!(!loc.in_image);
                loc.in_image = false;
            }
            let offset = if mapped {
                file_offset.unwrap_or(0) as usize
            } else if let Some(offset) = in_image {
                offset
            } else {
                let offset =
                    memory::align_up(end).ok_or_else(|| Error::limit("block size overflows"))?;
                end = offset
                    .checked_add(loc.header.nbytes)
                    .filter(|&e| {
                        (memory::align_up(e).is_some_and(|padded| padded as u64 <= limit)
                            || opts.metadata_only)
                            && e <= isize::MAX as usize
                    })
                    .ok_or_else(|| {
                        Error::limit(format!(
                            "{shown}: the arrays need more than the block limit of {limit} bytes"
                        ))
                    })?;
                offset
            };
            let descr = if opts.native_endian {
                // The header's descr stays: swapping reads its item size.
                loc.header.descr.to_native()
            } else {
                // Nothing reads the header's descr after this point without native_endian; an
                // empty record list is a placeholder that costs no allocation.
                std::mem::replace(
                    &mut loc.header.descr,
                    crate::descr::Descr::Record(Vec::new()),
                )
            };
            arrays.push(ArrayInfo {
                key: npz::key_of(&m.name).unwrap_or(&m.name).to_owned(),
                descr_string: descr.to_descr_string(),
                dtype: descr.numeric(),
                descr,
                // Nothing reads the header's shape after this point.
                shape: std::mem::take(&mut loc.header.shape),
                fortran_order: loc.header.fortran_order,
                offset,
                nbytes: loc.header.nbytes,
                mapped,
                file_offset,
                compressed: loc.method != Method::Stored,
                method: loc.method,
            });
            located.push((i, loc));
        }
        // Also for a metadata-only plan: it is the size caller memory must have.
        let block_len =
            memory::align_up(end).ok_or_else(|| Error::limit("block size overflows"))?;
        // Central-directory order, whichever way a member was found not to be an array.
        skipped.sort_unstable();
        Ok(RestorePlan {
            arrays,
            located,
            skipped: skipped
                .into_iter()
                .map(|i| members[i].name.clone())
                .collect(),
            block_len,
            staged: None,
        })
    }
}

/// Splits the listing into array candidates (by name, in the order to restore) and skipped
/// members; checks name collisions and requested keys.
fn select_members(
    members: &[MemberInfo],
    shown: &str,
    opts: &RestoreOptions,
) -> Result<(Vec<usize>, Vec<usize>)> {
    // Members "k" and "k.npy" would both claim the key "k". The other member of such a pair is
    // either not named *.npy (few, usually none) or, when the key itself ends in ".npy", named
    // *.npy: the set of every name is built only in that rare case (hashing every name is a
    // noticeable part of restoring many small arrays).
    let plain: HashSet<&str> = members
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| npz::key_of(n).is_none())
        .collect();
    let all: Option<HashSet<&str>> = members
        .iter()
        .any(|m| npz::key_of(&m.name).is_some_and(|k| npz::key_of(k).is_some()))
        .then(|| members.iter().map(|m| m.name.as_str()).collect());
    let mut candidates = Vec::with_capacity(members.len());
    let mut skipped = Vec::new();
    for (i, m) in members.iter().enumerate() {
        match npz::key_of(&m.name) {
            Some(key) => {
                if plain.contains(key) || all.as_ref().is_some_and(|all| all.contains(key)) {
                    return Err(Error::format(format!(
                        "{shown}: members {key:?} and {:?} both claim the key {key:?}",
                        m.name
                    )));
                }
                if key.contains('\0') {
                    return Err(Error::format(format!(
                        "{shown}: member name {:?} contains NUL",
                        m.name
                    )));
                }
                candidates.push(i);
            }
            None => skipped.push(i),
        }
    }
    let Some(keys) = &opts.keys else {
        return Ok((candidates, skipped));
    };
    let by_key: HashMap<&str, usize> = candidates
        .iter()
        .filter_map(|&i| Some((npz::key_of(&members[i].name)?, i)))
        .collect();
    let mut wanted = Vec::with_capacity(keys.len());
    let mut seen = HashSet::new();
    for k in keys {
        if !seen.insert(k.as_str()) {
            return Err(Error::invalid_arg(format!("key {k:?} is requested twice")));
        }
        let i = by_key
            .get(k.as_str())
            .ok_or_else(|| Error::not_found(format!("{shown}: no array named {k:?}")))?;
        wanted.push(*i);
    }
    Ok((wanted, Vec::new()))
}
