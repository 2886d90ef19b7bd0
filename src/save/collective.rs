//! The collective save: N processes (MPI ranks, torch.distributed workers, anything) write ONE
//! `.npz` together. The library never talks to the other processes: the host exchanges the
//! small blobs of [`super::manifest`] with its own collectives.
//!
//! 1. each rank: [`Saver::manifest`]; the host allgathers the manifests;
//! 2. each rank: [`Collective::new`] with every manifest in rank order: the same global plan
//!    everywhere (rank order, then add order; keys unique across ranks), and its
//!    [`Collective::plan_id`], which the host compares across ranks;
//! 3. rank 0: [`Collective::create`]: the temporary file, named from the target and the plan
//!    id ([`Collective::temp_path`]), reserved to the archive's length; host barrier;
//! 4. each rank: [`Collective::write`]: its own members (local headers and data) at their
//!    planned offsets, in parallel; returns its CRC report; the host gathers them to rank 0;
//! 5. rank 0: [`Collective::commit`]: central directory, end records, fsync when asked, rename.
//!    On any rank's failure, rank 0 [`Collective::abort`]s: the temporary file is removed and the
//!    target is untouched.
//!
//! The file is byte-identical to [`Saver::save`] of the same arrays in the same global order
//! with the same options: the plan is the same pure function of the same members.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::manifest::{self, PLAN_ID_LEN};
use super::{stored, Member, Saver};
use crate::dest::tempfile::{self, TempFile};
use crate::dest::FileDestination;
use crate::error::{Error, Result};
use crate::npz::{self, plan::Plan};
use crate::options::{Layout, SaveOptions};
use crate::pool;
use crate::progress::{self, ProgressFn};

/// Where a collective save stands, as this process sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Committed,
    Aborted,
}

/// One process's part in a collective save of one `.npz` (see the module documentation for the
/// flow). Every rank holds the whole plan; each writes only its own members.
pub struct Collective {
    target: PathBuf,
    temp: PathBuf,
    rank: usize,
    /// Member numbers: rank `r` owns `bounds[r] .. bounds[r + 1]`.
    bounds: Vec<usize>,
    /// Which rank's manifest listed each member, for messages.
    members: Vec<Member>,
    plan: Plan,
    id: [u8; PLAN_ID_LEN],
    opts: SaveOptions,
    /// Rank 0's handle of the temporary file it created (removes it when dropped uncommitted).
    created: Option<TempFile>,
    state: State,
}

impl Saver<'_> {
    /// This saver's manifest for a collective save: a compact, versioned description of its
    /// arrays (member names, `.npy` headers, byte counts; no data), to be exchanged with the
    /// other processes and passed to [`Collective::new`].
    ///
    /// # Errors
    /// [`crate::ErrorKind::NoMem`].
    pub fn manifest(&self) -> Result<Vec<u8>> {
        manifest::encode_manifest(&self.members)
    }
}

impl Collective {
    /// The collective save of every rank's arrays into `path` (`.npz` appended if missing), as
    /// rank `rank` of `manifests.len()`: `manifests[r]` is rank `r`'s [`Saver::manifest`].
    /// Every rank computes the same plan from the same manifests; no I/O happens here.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidArg`] for no manifests, a rank out of range, a compressed save
    /// or the directory layout (collective saves are stored `.npz`), a bad alignment, or a key in
    /// two manifests (the message names both ranks); [`crate::ErrorKind::Format`],
    /// [`crate::ErrorKind::Unsupported`] or [`crate::ErrorKind::Limit`] for a malformed
    /// manifest (the message names its rank); [`crate::ErrorKind::Overflow`].
    pub fn new(
        path: impl AsRef<Path>,
        manifests: &[&[u8]],
        rank: usize,
        opts: &SaveOptions,
    ) -> Result<Collective> {
        let nranks = manifests.len();
        if nranks == 0 || rank >= nranks {
            return Err(Error::invalid_arg(format!(
                "rank {rank} is not one of {nranks} ranks"
            )));
        }
        if opts.compression > 0 || opts.layout != Layout::Npz {
            return Err(Error::invalid_arg(
                "a collective save writes a stored .npz (no compression, no directory layout)",
            ));
        }
        let mut members = Vec::new();
        let mut bounds = vec![0];
        for (r, blob) in manifests.iter().enumerate() {
            let mut m = manifest::parse_manifest(blob)
                .map_err(|e| e.context(format!("manifest of rank {r}")))?;
            members
                .try_reserve(m.len())
                .map_err(|_| Error::nomem("cannot allocate the global plan"))?;
            members.append(&mut m);
            bounds.push(members.len());
        }
        check_unique(&members, &bounds)?;
        let plan = super::plan(&members, opts.alignment)?;
        let id = plan_id(&members, &bounds, &plan, opts.alignment);
        let target = npz::npz_path(path.as_ref());
        let temp = tempfile::temp_path(&target, &hex(&id))?;
        Ok(Collective {
            target,
            temp,
            rank,
            bounds,
            members,
            plan,
            id,
            opts: opts.clone(),
            created: None,
            state: State::Open,
        })
    }

    /// The plan id: a 128-bit hash of the global plan (every member's name, `.npy` header,
    /// size and offsets, which rank writes it, the alignment, the archive's length). Equal on
    /// every rank exactly when they hold the same plan; hosts compare it before any write.
    pub fn plan_id(&self) -> [u8; PLAN_ID_LEN] {
        self.id
    }

    /// The temporary file's path: `.<16 hex digits>.psv-tmp` beside the target, the digits a
    /// hash of the target's file name and the plan id, so every rank knows it.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The final path (the given path with `.npz` appended if missing).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The archive's length in bytes.
    pub fn len(&self) -> u64 {
        self.plan.total_len
    }

    /// True when no rank has an array (the archive is still a valid, empty `.npz`).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member numbers this rank writes, in the global order.
    fn own(&self) -> std::ops::Range<usize> {
        self.bounds[self.rank]..self.bounds[self.rank + 1]
    }

    fn check_open(&self, what: &str) -> Result<()> {
        match self.state {
            State::Open => Ok(()),
            State::Committed => Err(Error::invalid_arg(format!(
                "cannot {what}: this collective save is committed"
            ))),
            State::Aborted => Err(Error::invalid_arg(format!(
                "cannot {what}: this collective save was aborted"
            ))),
        }
    }

    fn check_rank_0(&self, what: &str) -> Result<()> {
        if self.rank != 0 {
            return Err(Error::invalid_arg(format!(
                "rank {} cannot {what}: rank 0 creates and commits a collective save",
                self.rank
            )));
        }
        Ok(())
    }

    /// Rank 0: creates the temporary file ([`Collective::temp_path`]) and reserves the
    /// archive's length in it (a full disk fails here, before any rank writes). A file left
    /// under that name by an earlier, killed collective save of the same plan is replaced.
    /// Other ranks may write once this returned on rank 0 (the host's barrier).
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidArg`] on another rank, twice, or after commit or abort;
    /// [`crate::ErrorKind::Io`] (a read-only target is refused, as [`Saver::save`] does).
    pub fn create(&mut self) -> Result<()> {
        self.check_rank_0("create the file")?;
        self.check_open("create the file")?;
        if self.created.is_some() {
            return Err(Error::invalid_arg("the collective file is already created"));
        }
        tempfile::remove(&self.temp)?;
        let tmp = TempFile::create_with_token(&self.target, &hex(&self.id))?;
        tmp.preallocate(self.plan.total_len)?;
        self.created = Some(tmp);
        Ok(())
    }

    /// Writes this rank's members of `saver` (its arrays, which must be those its manifest
    /// described: same keys, order, types and shapes) at their planned offsets, in parallel;
    /// fsyncs them when the options ask. Returns this rank's CRC report, for rank 0's
    /// [`Collective::commit`]. A rank with no arrays writes nothing and reports no CRCs.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidArg`] when `saver` differs from the manifest (the message
    /// names the key), after commit or abort; [`crate::ErrorKind::Io`] when the temporary file
    /// is missing (rank 0 has not created it, or it was aborted) or not of this plan's length;
    /// [`crate::ErrorKind::Aborted`] when `progress` cancels.
    pub fn write(
        &mut self,
        saver: &Saver<'_>,
        progress: Option<&mut ProgressFn<'_>>,
    ) -> Result<Vec<u8>> {
        self.check_open("write")?;
        let own = self.own();
        self.check_saver(saver, own.clone())?;
        let opened;
        let file = match &self.created {
            Some(tmp) => &tmp.file,
            None => {
                opened = TempFile::open(&self.temp).map_err(|e| {
                    e.context(format!(
                        "rank {}: the collective file is not there (rank 0 creates it first)",
                        self.rank
                    ))
                })?;
                &opened.file
            }
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", self.temp.display()), e))?
            .len();
        if len != self.plan.total_len {
            return Err(Error::invalid_arg(format!(
                "{} holds {len} bytes, not the {} of this plan: another save's file",
                self.temp.display(),
                self.plan.total_len
            )));
        }
        let shown = self.temp.display().to_string();
        let dest = FileDestination::new(file, 0, &shown);
        let pool = pool::get(self.opts.threads)?;
        let total: u64 = self.members[own.clone()]
            .iter()
            .map(Member::payload_len)
            .sum();
        let mut progress = progress;
        let crcs = progress::run(&pool, total, progress.as_deref_mut(), |tracker| {
            stored::write_members(
                &dest,
                &self.plan,
                &self.members,
                own.start,
                &saver.data,
                tracker,
            )
        })?;
        progress::finish(progress, total)?;
        if self.opts.fsync && !own.is_empty() {
            // Each rank flushes what it wrote: on a shared file system, rank 0's fsync covers
            // only its own node's dirty pages.
            file.sync_data()
                .map_err(|e| Error::io(format!("cannot fsync {shown}"), e))?;
        }
        Ok(manifest::encode_crcs(
            self.rank as u32,
            &self.id,
            own.start as u64,
            &crcs,
        ))
    }

    /// `saver` holds exactly the members `own` of the plan (its manifest's).
    fn check_saver(&self, saver: &Saver<'_>, own: std::ops::Range<usize>) -> Result<()> {
        let planned = &self.members[own];
        if saver.members.len() != planned.len() {
            return Err(Error::invalid_arg(format!(
                "rank {}: the saver holds {} arrays, its manifest {}",
                self.rank,
                saver.members.len(),
                planned.len()
            )));
        }
        for (m, p) in saver.members.iter().zip(planned) {
            if m.name != p.name {
                return Err(Error::invalid_arg(format!(
                    "rank {}: the saver has key {:?} where its manifest has {:?}",
                    self.rank,
                    m.key(),
                    p.key()
                )));
            }
            if m.header != p.header || m.data_len != p.data_len {
                return Err(Error::invalid_arg(format!(
                    "rank {}: key {:?} changed type, shape or order since the manifest",
                    self.rank,
                    m.key()
                )));
            }
        }
        Ok(())
    }

    /// Rank 0, once every rank's write succeeded: checks every rank's CRC report (`reports[r]`
    /// from rank `r`), writes the central directory and the end records, fsyncs when asked and
    /// renames the file over the target. Returns the target's path.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidArg`] on another rank, before [`Collective::create`], after
    /// commit or abort, or for reports that are not one per rank of this plan in rank order;
    /// [`crate::ErrorKind::Format`] for a malformed report; [`crate::ErrorKind::Io`]. After a
    /// refused report or a failed write of the records the temporary file stays until
    /// [`Collective::abort`] (or this handle's drop); a failed fsync or rename removes it.
    pub fn commit(&mut self, reports: &[&[u8]]) -> Result<PathBuf> {
        self.check_rank_0("commit")?;
        self.check_open("commit")?;
        if self.created.is_none() {
            return Err(Error::invalid_arg(
                "commit before create: rank 0 creates the collective file first",
            ));
        }
        let nranks = self.bounds.len() - 1;
        if reports.len() != nranks {
            return Err(Error::invalid_arg(format!(
                "{} CRC reports for {nranks} ranks",
                reports.len()
            )));
        }
        let mut crcs = Vec::new();
        crcs.try_reserve_exact(self.members.len())
            .map_err(|_| Error::nomem("cannot allocate the CRCs"))?;
        for (r, blob) in reports.iter().enumerate() {
            let report =
                manifest::parse_crcs(blob).map_err(|e| e.context(format!("CRC report {r}")))?;
            if report.plan_id != self.id {
                return Err(Error::invalid_arg(format!(
                    "CRC report {r} is from another plan (plan id {} here, {} there)",
                    hex(&self.id),
                    hex(&report.plan_id)
                )));
            }
            let (first, end) = (self.bounds[r], self.bounds[r + 1]);
            if report.rank as usize != r
                || report.first != first as u64
                || report.crcs.len() != end - first
            {
                return Err(Error::invalid_arg(format!(
                    "CRC report {r} is rank {}'s for {} arrays from {}; rank {r} writes {} \
                     from {first}",
                    report.rank,
                    report.crcs.len(),
                    report.first,
                    end - first
                )));
            }
            crcs.extend_from_slice(&report.crcs);
        }
        let tmp = self.created.take().expect("checked above");
        let shown = self.temp.display().to_string();
        let dest = FileDestination::new(&tmp.file, 0, &shown);
        if let Err(e) = super::write_records(&dest, &self.plan, &self.members, &crcs) {
            self.created = Some(tmp);
            return Err(e);
        }
        // On failure the temporary file is removed (the handle drops armed): commit failed
        // after every rank wrote, and nothing can finish this save any more.
        tmp.commit(&self.target, self.opts.fsync)?;
        self.state = State::Committed;
        Ok(self.target.clone())
    }

    /// Removes the temporary file (by name: any rank may call it, and a missing file is not an
    /// error); the target is untouched. Afterwards this save can only be freed. Aborting a
    /// committed save does nothing.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Io`] when the file exists but cannot be removed.
    pub fn abort(&mut self) -> Result<()> {
        if self.state == State::Committed {
            return Ok(());
        }
        self.state = State::Aborted;
        if let Some(mut tmp) = self.created.take() {
            tmp.keep();
        }
        tempfile::remove(&self.temp)
    }
}

/// Keys must be unique across ranks: the first duplicate is an error naming both ranks.
fn check_unique(members: &[Member], bounds: &[usize]) -> Result<()> {
    let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(members.len());
    for r in 0..bounds.len() - 1 {
        for m in &members[bounds[r]..bounds[r + 1]] {
            if let Some(other) = seen.insert(&m.name, r) {
                let where_ = if other == r {
                    format!("twice in the manifest of rank {r}")
                } else {
                    format!("in the manifests of rank {other} and rank {r}")
                };
                return Err(Error::invalid_arg(format!(
                    "duplicate key {:?}: {where_}",
                    m.key()
                )));
            }
        }
    }
    Ok(())
}

/// FNV-1a, 128 bits: a fixed, documented hash every build computes alike.
struct Fnv128(u128);

impl Fnv128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// The plan id (see [`Collective::plan_id`]). Each distinct `.npy` header is hashed once and
/// stands in the stream by its digest.
fn plan_id(members: &[Member], bounds: &[usize], plan: &Plan, align: u64) -> [u8; PLAN_ID_LEN] {
    let mut digests: HashMap<*const u8, u128> = HashMap::new();
    let mut h = Fnv128(Fnv128::OFFSET);
    h.bytes(b"psv collective plan 1");
    h.u64(align);
    h.u64(bounds.len() as u64 - 1);
    for &b in bounds {
        h.u64(b as u64);
    }
    for (m, at) in members.iter().zip(&plan.members) {
        let digest = *digests.entry(m.header.as_ptr()).or_insert_with(|| {
            let mut d = Fnv128(Fnv128::OFFSET);
            d.bytes(&m.header);
            d.0
        });
        h.u64(m.name.len() as u64);
        h.bytes(&m.name);
        h.bytes(&digest.to_le_bytes());
        h.u64(m.data_len as u64);
        h.u64(at.header_offset);
        h.u64(at.payload_offset);
    }
    h.u64(plan.central_offset);
    h.u64(plan.total_len);
    h.0.to_be_bytes()
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
