//! The trunk server's allocator: which regions of the group's trunk files are free.
//!
//! It keeps the regions as upstream's trunk server does, so the trunk binlog it writes
//! reads the same to a C storage that becomes trunk server later and replays it:
//!
//! - free regions are indexed by store path and size; a request takes the smallest size
//!   that fits, and of that size the region freed last;
//! - the front of the region is handed out and the rest stays free (`D` the region, `A`
//!   the rest), unless the rest would be smaller than `slot_min_size`: then the whole
//!   region is handed out;
//! - a slot handed out is *held* until the storage that asked confirms it wrote there
//!   (28): it is logged as free (`A`) when handed out and as taken (`D`) when confirmed,
//!   so a trunk server that stops in between frees it again;
//! - a region freed (29) is added as it is, never merged with its neighbours.
//!
//! Two regions never overlap: a free that would overlap a free or held region is
//! refused (EEXIST), and so is a replayed line that would.

use std::collections::{BTreeMap, HashMap};

use fdfs_proto::errno;
use fdfs_proto::trunk::Slot;

use super::binlog::{Line, Op};

/// Sizes the trunk server works with (the tracker's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub slot_min_size: u32,
    pub slot_max_size: u32,
    pub trunk_file_size: u32,
    pub alignment: u32,
}

impl Sizes {
    /// The size a request for `size` bytes (content and header) is given.
    pub fn aligned(&self, size: u32) -> u32 {
        if size <= self.slot_min_size {
            self.slot_min_size
        } else if self.alignment == 0 {
            size
        } else {
            size.div_ceil(self.alignment).saturating_mul(self.alignment)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Held,
    /// Free by a binlog another trunk server wrote, whose last lines may be missing: a
    /// file may be there that this storage has not received yet. Never handed out.
    Unsure,
}

#[derive(Default)]
pub struct Allocator {
    /// (store path, size) → regions of that size, the newest last.
    by_size: BTreeMap<(u8, u32), Vec<(Slot, State)>>,
    /// Trunk file (store path, directories, id) → offset → size of every free or held
    /// region.
    by_file: HashMap<(u8, u8, u8, u32), BTreeMap<u32, u32>>,
    /// Bytes free or held.
    free_bytes: u64,
}

/// What the caller must do for an allocation that found no free region.
#[derive(Debug, PartialEq, Eq)]
pub struct NeedTrunkFile;

impl Allocator {
    /// Rebuilds the free regions from a whole trunk binlog, as upstream's full reload
    /// does: regions are keyed by where they start; `A` adds one (a second `A` at the
    /// same start is ignored), `D` removes the one starting there.
    ///
    /// With `trusted` false (another trunk server wrote the last lines) the regions are
    /// kept but not handed out: see [`State::Unsure`].
    pub fn replay(
        lines: impl IntoIterator<Item = Line>,
        sizes: &Sizes,
        trusted: bool,
    ) -> (Allocator, Replayed) {
        let mut regions: BTreeMap<(u8, u8, u8, u32, u32), u32> = BTreeMap::new();
        let mut report = Replayed::default();
        for line in lines {
            let s = line.slot;
            let key = (s.path, s.high, s.low, s.trunk_id, s.offset);
            match line.op {
                // A second `A` at the same start keeps the first, as upstream does.
                Op::Add => match regions.entry(key) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(s.size);
                    }
                    std::collections::btree_map::Entry::Occupied(_) => report.repeated += 1,
                },
                Op::Del => {
                    if regions.remove(&key).is_none() {
                        report.unknown += 1;
                    }
                }
            }
            report.lines += 1;
        }
        let mut alloc = Allocator::default();
        for ((path, high, low, trunk_id, offset), size) in regions {
            let slot = Slot {
                path,
                high,
                low,
                trunk_id,
                offset,
                size,
            };
            let state = if trusted { State::Free } else { State::Unsure };
            if size < sizes.slot_min_size || alloc.insert(slot, state).is_err() {
                report.dropped += 1;
            }
        }
        (alloc, report)
    }

    /// Bytes free (held slots included, as upstream counts them).
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    /// Every free region, for a check of what the disk holds there.
    pub fn free_slots(&self) -> Vec<Slot> {
        self.by_size
            .values()
            .flatten()
            .filter(|(_, s)| *s != State::Held)
            .map(|(slot, _)| *slot)
            .collect()
    }

    /// Bytes free but not handed out (see [`State::Unsure`]).
    pub fn unsure_bytes(&self) -> u64 {
        self.by_size
            .values()
            .flatten()
            .filter(|(_, s)| *s == State::Unsure)
            .map(|(slot, _)| slot.size as u64)
            .sum()
    }

    fn overlaps(&self, slot: &Slot) -> bool {
        let Some(file) = self.by_file.get(&file_key(slot)) else {
            return false;
        };
        let end = slot.offset as u64 + slot.size as u64;
        // The region starting at or before ours, and the first after it.
        if let Some((o, s)) = file.range(..=slot.offset).next_back() {
            if *o as u64 + *s as u64 > slot.offset as u64 {
                return true;
            }
        }
        file.range(slot.offset..)
            .next()
            .is_some_and(|(o, _)| (*o as u64) < end)
    }

    fn insert(&mut self, slot: Slot, state: State) -> Result<(), u8> {
        if slot.size == 0 || self.overlaps(&slot) {
            return Err(errno::EEXIST);
        }
        self.by_file
            .entry(file_key(&slot))
            .or_default()
            .insert(slot.offset, slot.size);
        self.by_size
            .entry((slot.path, slot.size))
            .or_default()
            .push((slot, state));
        self.free_bytes += slot.size as u64;
        Ok(())
    }

    /// Takes out the region `slot` exactly, if it is in `state`.
    fn take(&mut self, slot: &Slot, state: State) -> bool {
        let key = (slot.path, slot.size);
        let Some(chain) = self.by_size.get_mut(&key) else {
            return false;
        };
        let Some(i) = chain.iter().rposition(|(s, st)| s == slot && *st == state) else {
            return false;
        };
        chain.remove(i);
        if chain.is_empty() {
            self.by_size.remove(&key);
        }
        if let Some(file) = self.by_file.get_mut(&file_key(slot)) {
            file.remove(&slot.offset);
            if file.is_empty() {
                self.by_file.remove(&file_key(slot));
            }
        }
        self.free_bytes -= slot.size as u64;
        true
    }

    /// Hands out a slot of at least `size` bytes in store path `path`, held until it is
    /// confirmed; appends its binlog lines to `log`. `NeedTrunkFile` when no free region
    /// fits: the caller creates a trunk file and calls [`Allocator::alloc_in_new`].
    pub fn alloc(
        &mut self,
        path: u8,
        size: u32,
        sizes: &Sizes,
        now: i64,
        log: &mut Vec<Line>,
    ) -> Result<Slot, NeedTrunkFile> {
        let want = sizes.aligned(size);
        let found = self
            .by_size
            .range((path, want)..=(path, u32::MAX))
            .find_map(|(_, chain)| {
                chain
                    .iter()
                    .rev()
                    .find(|(_, st)| *st == State::Free)
                    .map(|(s, _)| *s)
            });
        let Some(region) = found else {
            return Err(NeedTrunkFile);
        };
        self.take(&region, State::Free);
        // The region was in the index: its parts fit where it was.
        Ok(self
            .split(region, want, sizes, now, log)
            .expect("a free region's parts do not overlap"))
    }

    /// [`Allocator::alloc`] from `file`, a whole new trunk file's region; EEXIST if the
    /// index knows regions of a trunk file at the same place (its id was used before).
    pub fn alloc_in_new(
        &mut self,
        file: Slot,
        size: u32,
        sizes: &Sizes,
        now: i64,
        log: &mut Vec<Line>,
    ) -> Result<Slot, u8> {
        if self.overlaps(&file) {
            return Err(errno::EEXIST);
        }
        log.push(Line::new(now, Op::Add, file));
        self.split(file, sizes.aligned(size), sizes, now, log)
    }

    fn split(
        &mut self,
        region: Slot,
        want: u32,
        sizes: &Sizes,
        now: i64,
        log: &mut Vec<Line>,
    ) -> Result<Slot, u8> {
        log.push(Line::new(now, Op::Del, region));
        let mut slot = region;
        if region.size - want.min(region.size) >= sizes.slot_min_size {
            let rest = Slot {
                offset: region.offset + want,
                size: region.size - want,
                ..region
            };
            self.insert(rest, State::Free)?;
            log.push(Line::new(now, Op::Add, rest));
            slot.size = want;
        }
        // Held: logged as free until it is confirmed.
        self.insert(slot, State::Held)?;
        log.push(Line::new(now, Op::Add, slot));
        Ok(slot)
    }

    /// 28: the storage that was given `slot` wrote there (status 0), found it taken by
    /// another file (EEXIST: it stays out of use), or failed (any other status: free
    /// again). ENOENT when `slot` is not held.
    pub fn confirm(
        &mut self,
        slot: &Slot,
        status: u8,
        now: i64,
        log: &mut Vec<Line>,
    ) -> Result<(), u8> {
        if !self.take(slot, State::Held) {
            return Err(errno::ENOENT);
        }
        if status == 0 || status == errno::EEXIST {
            log.push(Line::new(now, Op::Del, *slot));
        } else {
            // Logged as free already.
            let _ = self.insert(*slot, State::Free);
        }
        Ok(())
    }

    /// 29: `slot` is free again. Slots under `slot_min_size` are dropped, as upstream
    /// drops them; one that overlaps a free or held region is refused (EEXIST).
    pub fn free(
        &mut self,
        slot: Slot,
        sizes: &Sizes,
        now: i64,
        log: &mut Vec<Line>,
    ) -> Result<(), u8> {
        if slot.size < sizes.slot_min_size {
            return Ok(());
        }
        self.insert(slot, State::Free)?;
        log.push(Line::new(now, Op::Add, slot));
        Ok(())
    }

    /// Adds a whole new trunk file as free space (created ahead of need).
    pub fn add_free(&mut self, file: Slot, now: i64, log: &mut Vec<Line>) -> Result<(), u8> {
        self.insert(file, State::Free)?;
        log.push(Line::new(now, Op::Add, file));
        Ok(())
    }

    /// Every region, held ones included, as the `A` lines a rewritten binlog holds (a
    /// held region is logged free until its confirmation, as always).
    pub fn snapshot(&self, now: i64) -> Vec<Line> {
        let mut regions: Vec<Slot> = self.by_size.values().flatten().map(|(s, _)| *s).collect();
        regions.sort();
        regions
            .into_iter()
            .map(|s| Line::new(now, Op::Add, s))
            .collect()
    }

    /// Makes neighbouring free regions of a trunk file one (never a held one). With
    /// `whole_file` (the trunk file size), regions that cover a whole trunk file are
    /// taken out and returned: the caller removes those files.
    pub fn merge(&mut self, whole_file: Option<u32>) -> Vec<Slot> {
        let mut all: Vec<(Slot, State)> = std::mem::take(&mut self.by_size)
            .into_values()
            .flatten()
            .collect();
        self.by_file.clear();
        self.free_bytes = 0;
        all.sort_by_key(|(s, _)| (file_key(s), s.offset));
        let mut merged: Vec<(Slot, State)> = Vec::with_capacity(all.len());
        for (slot, state) in all {
            if let Some((last, last_state)) = merged.last_mut() {
                if *last_state == state
                    && state != State::Held
                    && file_key(last) == file_key(&slot)
                    && last.offset as u64 + last.size as u64 == slot.offset as u64
                {
                    last.size += slot.size;
                    continue;
                }
            }
            merged.push((slot, state));
        }
        let mut removed = Vec::new();
        for (slot, state) in merged {
            if state == State::Free && slot.offset == 0 && Some(slot.size) == whole_file {
                removed.push(slot);
                continue;
            }
            let _ = self.insert(slot, state);
        }
        removed
    }

    /// Takes a free region out of use for good (a file occupies it): logged as taken.
    pub fn quarantine(&mut self, slot: &Slot, now: i64, log: &mut Vec<Line>) {
        if self.take(slot, State::Free) || self.take(slot, State::Unsure) {
            log.push(Line::new(now, Op::Del, *slot));
        }
    }
}

fn file_key(slot: &Slot) -> (u8, u8, u8, u32) {
    (slot.path, slot.high, slot.low, slot.trunk_id)
}

/// What a replay found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub lines: u64,
    /// `A` lines for a region already free (upstream: "trunk space already exist").
    pub repeated: u64,
    /// `D` lines for a region not free.
    pub unknown: u64,
    /// Regions left out: too small, or overlapping another.
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: Sizes = Sizes {
        slot_min_size: 256,
        slot_max_size: 1 << 20,
        trunk_file_size: 64 << 20,
        alignment: 0,
    };

    fn file(id: u32) -> Slot {
        Slot {
            path: 0,
            high: 0,
            low: 1,
            trunk_id: id,
            offset: 0,
            size: SIZES.trunk_file_size,
        }
    }

    fn text(log: &[Line]) -> String {
        log.iter().map(|l| l.to_string()).collect()
    }

    /// The worked example of upstream's allocator: a first 15-byte file.
    #[test]
    fn first_file_logs_as_upstream() {
        let mut a = Allocator::default();
        let mut log = Vec::new();
        assert_eq!(a.alloc(0, 39, &SIZES, 7, &mut log), Err(NeedTrunkFile));
        let slot = a.alloc_in_new(file(1), 39, &SIZES, 7, &mut log).unwrap();
        assert_eq!((slot.offset, slot.size), (0, 256));
        a.confirm(&slot, 0, 8, &mut log).unwrap();
        assert_eq!(
            text(&log),
            "7 A 0 0 1 1 0 67108864\n7 D 0 0 1 1 0 67108864\n\
             7 A 0 0 1 1 256 67108608\n7 A 0 0 1 1 0 256\n8 D 0 0 1 1 0 256\n"
        );
        assert_eq!(a.free_bytes(), 64 * 1024 * 1024 - 256);
        // Confirmed once only.
        assert_eq!(a.confirm(&slot, 0, 8, &mut log), Err(errno::ENOENT));
        // The binlog replays to the same free space.
        let (b, r) = Allocator::replay(log.clone(), &SIZES, true);
        assert_eq!(b.free_bytes(), a.free_bytes());
        assert_eq!(r.repeated + r.unknown + r.dropped, 0);
    }

    #[test]
    fn best_fit_then_newest_and_small_rests_go_along() {
        let mut a = Allocator::default();
        let mut log = Vec::new();
        let mut slots = Vec::new();
        let first = a.alloc_in_new(file(1), 1000, &SIZES, 0, &mut log).unwrap();
        slots.push(first);
        for _ in 0..4 {
            let s = a.alloc(0, 1000, &SIZES, 0, &mut log).unwrap();
            slots.push(s);
        }
        for s in &slots {
            a.confirm(s, 0, 0, &mut log).unwrap();
        }
        // Back to back, each 1000 bytes.
        for (i, s) in slots.iter().enumerate() {
            assert_eq!((s.offset, s.size), (1000 * i as u32, 1000));
        }
        a.free(slots[1], &SIZES, 0, &mut log).unwrap();
        a.free(slots[3], &SIZES, 0, &mut log).unwrap();
        // A double free is refused.
        assert_eq!(a.free(slots[3], &SIZES, 0, &mut log), Err(errno::EEXIST));
        // 900 bytes fit a 1000-byte region; the newest freed is taken, whole (the
        // 100-byte rest is under slot_min_size).
        let s = a.alloc(0, 900, &SIZES, 0, &mut log).unwrap();
        assert_eq!((s.offset, s.size), (3000, 1000));
        let s2 = a.alloc(0, 600, &SIZES, 0, &mut log).unwrap();
        assert_eq!((s2.offset, s2.size), (1000, 600));
        // ... and its 400-byte rest is free, handed out whole for 300 bytes (a 100-byte
        // rest would be under slot_min_size).
        let s3 = a.alloc(0, 300, &SIZES, 0, &mut log).unwrap();
        assert_eq!((s3.offset, s3.size), (1600, 400));
        // A failed write frees the slot at once; an occupied one stays out of use.
        a.confirm(&s3, errno::EIO, 0, &mut log).unwrap();
        let again = a.alloc(0, 300, &SIZES, 0, &mut log).unwrap();
        assert_eq!(again, s3);
        a.confirm(&again, errno::EEXIST, 0, &mut log).unwrap();
        let next = a.alloc(0, 300, &SIZES, 0, &mut log).unwrap();
        assert_ne!(next.offset, s3.offset);
        // Replaying everything gives the same free bytes (held slots count as free).
        let (b, _) = Allocator::replay(log.clone(), &SIZES, true);
        assert_eq!(b.free_bytes(), a.free_bytes());
    }

    #[test]
    fn replay_ignores_repeats_and_keeps_regions_apart() {
        let mut log = Vec::new();
        let mut a = Allocator::default();
        let s = a.alloc_in_new(file(1), 39, &SIZES, 0, &mut log).unwrap();
        a.confirm(&s, 0, 0, &mut log).unwrap();
        // The same lines twice (a trunk binlog sent again after a change of trunk
        // server, say): the first copy of each region wins.
        let mut twice = log.clone();
        twice.extend(log.iter().copied());
        let (b, r) = Allocator::replay(twice, &SIZES, true);
        assert!(r.repeated > 0);
        assert_eq!(b.free_bytes(), a.free_bytes());
        // An overlapping region is left out.
        let mut overlapping = log.clone();
        overlapping.push(Line::new(
            0,
            Op::Add,
            Slot {
                offset: 300,
                size: 1000,
                ..s
            },
        ));
        let (c, r) = Allocator::replay(overlapping, &SIZES, true);
        assert_eq!(r.dropped, 1);
        assert_eq!(c.free_bytes(), a.free_bytes());
    }

    /// Regions another trunk server's binlog says are free are kept, not handed out.
    #[test]
    fn unsure_regions_are_not_handed_out() {
        let mut log = Vec::new();
        let mut a = Allocator::default();
        let s = a.alloc_in_new(file(1), 39, &SIZES, 0, &mut log).unwrap();
        a.confirm(&s, 0, 0, &mut log).unwrap();
        let (mut b, _) = Allocator::replay(log.clone(), &SIZES, false);
        assert_eq!(b.free_bytes(), a.free_bytes());
        assert_eq!(b.unsure_bytes(), a.free_bytes());
        let mut more = Vec::new();
        assert_eq!(b.alloc(0, 39, &SIZES, 0, &mut more), Err(NeedTrunkFile));
        // A slot freed meanwhile is handed out again.
        b.free(s, &SIZES, 0, &mut more).unwrap();
        assert_eq!(b.alloc(0, 39, &SIZES, 0, &mut more), Ok(s));
        // A new trunk file where one is known already is refused; in another directory
        // the same id is another file.
        assert_eq!(
            b.alloc_in_new(file(1), 39, &SIZES, 0, &mut more),
            Err(errno::EEXIST)
        );
        let elsewhere = Slot { low: 2, ..file(1) };
        assert!(b.alloc_in_new(elsewhere, 39, &SIZES, 0, &mut more).is_ok());
    }

    #[test]
    fn merging_joins_neighbours_but_never_held_slots() {
        let mut a = Allocator::default();
        let mut log = Vec::new();
        let s1 = a.alloc_in_new(file(1), 1000, &SIZES, 0, &mut log).unwrap();
        let s2 = a.alloc(0, 1000, &SIZES, 0, &mut log).unwrap();
        let s3 = a.alloc(0, 1000, &SIZES, 0, &mut log).unwrap();
        for s in [&s1, &s2] {
            a.confirm(s, 0, 0, &mut log).unwrap();
        }
        // s3 stays held; s1 and s2 are freed: one region of 2000 bytes after merging.
        a.free(s1, &SIZES, 0, &mut log).unwrap();
        a.free(s2, &SIZES, 0, &mut log).unwrap();
        let free_before = a.free_bytes();
        assert!(a.merge(Some(SIZES.trunk_file_size)).is_empty());
        assert_eq!(a.free_bytes(), free_before);
        let snap = a.snapshot(5);
        let regions: Vec<(u32, u32)> = snap.iter().map(|l| (l.slot.offset, l.slot.size)).collect();
        assert_eq!(
            regions,
            vec![
                (0, 2000),
                (2000, 1000),
                (3000, SIZES.trunk_file_size - 3000)
            ]
        );
        // The held slot is still confirmable, and the snapshot replays to the same space.
        a.confirm(&s3, 0, 6, &mut log).unwrap();
        let (b, _) = Allocator::replay(snap, &SIZES, true);
        assert_eq!(b.free_bytes(), free_before);
        // A trunk file wholly free again is handed back for removal.
        let mut c = Allocator::default();
        let t = c.alloc_in_new(file(2), 39, &SIZES, 0, &mut log).unwrap();
        c.confirm(&t, 0, 0, &mut log).unwrap();
        c.free(t, &SIZES, 0, &mut log).unwrap();
        assert_eq!(c.merge(Some(SIZES.trunk_file_size)), vec![file(2)]);
        assert_eq!(c.free_bytes(), 0);
    }

    #[test]
    fn alignment_rounds_up() {
        let sizes = Sizes {
            alignment: 256,
            ..SIZES
        };
        assert_eq!(sizes.aligned(10), 256);
        assert_eq!(sizes.aligned(257), 512);
        assert_eq!(SIZES.aligned(257), 257);
    }
}
