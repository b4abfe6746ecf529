//! Trunk servers (`use_trunk_file = true`): one storage per group allocates the slots of
//! the group's trunk files, chosen by the leader tracker (the picking itself, which asks
//! storages over the network, is `crate::trunk`). What the tracker keeps per group, who
//! is told what, and the storages' trunk reports (72, 73, 74).

use fdfs_proto::errno;
use fdfs_proto::msg::StorageBrief;
use fdfs_proto::status::ACTIVE;
use tracing::info;

use super::{Cluster, Joined, Storage};
use crate::refusal::Refusal;

/// A group's trunk state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrunkState {
    /// The trunk server's id (kept as the leader named it, even before that storage
    /// joined this tracker).
    pub server: Option<String>,
    /// The trunk server before (kept when the server is cleared; a new one other than
    /// it is told to forget its peers' trunk marks, 32).
    pub last: String,
    /// The largest trunk file id the trunk servers have reported (72 hands it out).
    pub file_id: i32,
    /// Free space in the trunk files, MB, as the trunk server last reported it (74).
    pub free_mb: i64,
    /// Bumped on every change: each storage connection is told once per value (beat
    /// reply flag 0x02).
    pub version: u64,
    /// A storage 94 asked to make the trunk server; the leader switches to it.
    pub wanted: Option<String>,
}

/// A storage a trunk server may be picked from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub ip: String,
    pub port: u16,
}

impl Candidate {
    fn of(s: &Storage) -> Candidate {
        Candidate {
            id: s.id.clone(),
            ip: s.ip.clone(),
            port: s.port,
        }
    }
}

/// A group that needs a trunk server picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickRequest {
    pub group: String,
    /// The writable ACTIVE storages, by id; the first is the group's store server, whose
    /// trunk binlog the others must beat. A switch asked for with 94 has the one storage.
    pub candidates: Vec<Candidate>,
    /// Asked for with 94: no binlog sizes are compared.
    pub forced: bool,
    /// The trunk server before, if any.
    pub last: String,
}

/// A change of trunk server, as `trunk_server_change.log` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkChange {
    pub group: String,
    pub old: Option<Candidate>,
    pub new: Option<Candidate>,
}

impl Cluster {
    /// Turns trunk servers on (`use_trunk_file`); saved trunk servers are announced
    /// again to every storage. Without trunk files, saved trunk servers are forgotten.
    pub fn use_trunk_files(&mut self, on: bool) {
        self.trunk_files = on;
        for g in self.groups.values_mut() {
            if !on {
                g.trunk.server = None;
            }
            g.trunk.version += 1;
        }
        self.trunk_epoch += 1;
    }

    pub fn trunk_files(&self) -> bool {
        self.trunk_files
    }

    fn trunk_changed(&mut self, group: &str) {
        if let Some(g) = self.groups.get_mut(group) {
            g.trunk.version += 1;
        }
        self.trunk_epoch += 1;
        self.changed();
    }

    /// The groups whose trunk server must be picked (`leading_since`: when this tracker
    /// became the leader): none yet; or the one they had has not been heard of for
    /// `grace` seconds, counted from its last heartbeat or from `leading_since`,
    /// whichever is later (a trunk server restored from saved state, or learnt as a
    /// follower, keeps allocating while no tracker hears it: it is given the grace
    /// under this leader too); or 94 asked for another. Only storages that are ACTIVE
    /// and writable are candidates; a group without any waits.
    pub fn trunk_picks_due(
        &mut self,
        now: i64,
        leading_since: i64,
        grace: i64,
    ) -> Vec<PickRequest> {
        if !self.trunk_files {
            return Vec::new();
        }
        let mut due = Vec::new();
        let mut cleared = Vec::new();
        for g in self.groups.values_mut() {
            if let Some(wanted) = g.trunk.wanted.take() {
                if let Some(s) = g.storages.get(&wanted).filter(|s| s.is_writable()) {
                    due.push(PickRequest {
                        group: g.name.clone(),
                        candidates: vec![Candidate::of(s)],
                        forced: true,
                        last: g.trunk.last.clone(),
                    });
                    continue;
                }
            }
            if let Some(id) = &g.trunk.server {
                let heard = g.storages.get(id).map_or(0, |s| s.last_heart_beat_time);
                let active = g.storages.get(id).is_some_and(|s| s.status == ACTIVE);
                if active || now - heard.max(leading_since) <= grace {
                    continue;
                }
                info!(
                    "group {}: trunk server {id} silent for over {grace} s, picking another",
                    g.name
                );
                g.trunk.server = None;
                cleared.push(g.name.clone());
            }
            let candidates: Vec<Candidate> = g
                .storages
                .values()
                .filter(|s| s.is_writable())
                .map(Candidate::of)
                .collect();
            if candidates.is_empty() {
                continue;
            }
            due.push(PickRequest {
                group: g.name.clone(),
                candidates,
                forced: false,
                last: g.trunk.last.clone(),
            });
        }
        for group in cleared {
            self.trunk_changed(&group);
        }
        due
    }

    /// Makes `id` the trunk server picked for `request`, unless the group changed while
    /// the storages were asked (another pick, 94, a follower's update): `None` then.
    /// `Some(change)` when the trunk server is another than the last one (the log
    /// records it).
    pub fn commit_trunk_pick(
        &mut self,
        request: &PickRequest,
        id: &str,
    ) -> Option<Option<TrunkChange>> {
        let g = self.groups.get(&request.group)?;
        let unchanged = g.trunk.last == request.last
            && (request.forced || g.trunk.server.is_none())
            && g.trunk.wanted.is_none();
        if !unchanged || !g.storages.get(id).is_some_and(|s| s.is_writable()) {
            return None;
        }
        Some(self.set_trunk_server(&request.group, Some(id)))
    }

    /// Makes `id` (or nobody) the trunk server of `group`; the change, when there is one
    /// (the log records it).
    pub fn set_trunk_server(&mut self, group: &str, id: Option<&str>) -> Option<TrunkChange> {
        let g = self.groups.get_mut(group)?;
        let find = |id: &str| g.storages.get(id).map(Candidate::of);
        let old_id = g
            .trunk
            .server
            .clone()
            .or_else(|| (!g.trunk.last.is_empty()).then(|| g.trunk.last.clone()));
        let old = old_id.as_deref().and_then(find);
        let new = id.and_then(find);
        g.trunk.server = id.map(String::from);
        let changed = g.trunk.last.as_str() != id.unwrap_or("");
        if let Some(id) = id {
            g.trunk.last = id.to_string();
        }
        self.trunk_changed(group);
        changed.then(|| TrunkChange {
            group: group.to_string(),
            old,
            new,
        })
    }

    /// The trunk server of `group` and its version, for a beat reply.
    pub fn trunk_brief(&self, group: &str) -> Option<(u64, StorageBrief)> {
        if !self.trunk_files {
            return None;
        }
        let g = self.groups.get(group)?;
        let s = g.storages.get(g.trunk.server.as_ref()?)?;
        Some((g.trunk.version, s.brief()))
    }

    /// Whether `id` is the trunk server of `group`.
    pub fn is_trunk_server(&self, group: &str, id: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|g| g.trunk.server.as_deref() == Some(id))
    }

    /// 72: the group's current trunk file id.
    pub fn trunk_file_id(&self, who: &Joined) -> Result<i32, Refusal> {
        Ok(self.group(&who.group)?.trunk.file_id)
    }

    /// On the leader, only the trunk server reports. A follower takes the reports of
    /// any member: it learns a new trunk server from the leader's next 65 reply, up to a
    /// second after the trunk server starts reporting, and upstream's refusal meanwhile
    /// makes the trunk server drop that tracker and join it again.
    fn trunk_server_only(&self, who: &Joined, leader: bool) -> Result<(), Refusal> {
        if leader && !self.is_trunk_server(&who.group, &who.id) {
            return Err(Refusal::invalid(format!(
                "storage {} is not the trunk server of {}",
                who.id, who.group
            )));
        }
        Ok(())
    }

    /// 73: the trunk server created trunk file `id`.
    pub fn report_trunk_file_id(
        &mut self,
        who: &Joined,
        id: i32,
        leader: bool,
    ) -> Result<(), Refusal> {
        self.trunk_server_only(who, leader)?;
        let g = self.group_mut(&who.group)?;
        if id > g.trunk.file_id {
            g.trunk.file_id = id;
            self.changed();
        }
        Ok(())
    }

    /// 74: the trunk server's free trunk space.
    pub fn report_trunk_free(
        &mut self,
        who: &Joined,
        mb: i64,
        leader: bool,
    ) -> Result<(), Refusal> {
        self.trunk_server_only(who, leader)?;
        self.group_mut(&who.group)?.trunk.free_mb = mb;
        self.stats_dirty = true;
        Ok(())
    }

    /// Moves on whenever any group's trunk server changes (65 tells followers then).
    pub fn trunk_epoch(&self) -> u64 {
        self.trunk_epoch
    }

    /// 65's reply: every group's trunk server id (empty for none).
    pub fn trunk_assignments(&self) -> Vec<(String, String)> {
        self.groups
            .values()
            .map(|g| (g.name.clone(), g.trunk.server.clone().unwrap_or_default()))
            .collect()
    }

    /// A follower takes the leader's trunk servers (65), so that it knows them should
    /// it lead. An id is kept as it is, even for a storage that has not joined this
    /// tracker yet.
    pub fn apply_trunk_assignments(&mut self, entries: &[(String, String)]) {
        let mut changed = Vec::new();
        for (group, id) in entries {
            let Some(g) = self.groups.get_mut(group) else {
                continue;
            };
            let id = (!id.is_empty()).then(|| id.clone());
            if g.trunk.server != id {
                if let Some(id) = &id {
                    g.trunk.last = id.clone();
                }
                g.trunk.server = id;
                changed.push(group.clone());
            }
        }
        for group in changed {
            self.trunk_changed(&group);
        }
    }

    /// 94: the trunk server of `group`, or a request to make `id` it: the id of the
    /// trunk server now, or `id`, which the leader's next round (within a second) makes
    /// the trunk server, after telling it to forget its peers' marks (32).
    pub fn set_trunk_server_on_request(
        &mut self,
        group: &str,
        id: Option<&str>,
    ) -> Result<String, Refusal> {
        let g = self.group(group)?;
        let current = g
            .trunk
            .server
            .as_ref()
            .filter(|c| g.storages.get(*c).is_some_and(|s| s.status == ACTIVE));
        let Some(id) = id else {
            return current
                .cloned()
                .ok_or_else(|| Refusal::not_found(format!("group {group} has no trunk server")));
        };
        if let Some(current) = current {
            return Err(if current == id {
                Refusal::new(errno::EALREADY, format!("{id} is the trunk server already"))
            } else {
                Refusal::new(
                    errno::EEXIST,
                    format!("trunk server {current} is active: it is not replaced"),
                )
            });
        }
        let s = g.storage(id)?;
        if s.status != ACTIVE {
            return Err(Refusal::new(
                errno::ENONET,
                format!("storage {id} is not active"),
            ));
        }
        if !s.is_writable() {
            return Err(Refusal::new(
                errno::EACCES,
                format!("storage {id} takes no writes"),
            ));
        }
        self.group_mut(group)?.trunk.wanted = Some(id.to_string());
        Ok(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::active;
    use super::*;
    use crate::config::Placement;

    #[test]
    fn picks_announcements_and_reports() {
        let mut c = Cluster::new(Placement::default());
        c.use_trunk_files(true);
        assert!(c.trunk_picks_due(100, 0, 20).is_empty(), "no group yet");
        let a = active(&mut c, "g", "10.0.0.2", 1, 5000);
        let b = active(&mut c, "g", "10.0.0.1", 1, 5000);
        let due = c.trunk_picks_due(100, 0, 20);
        assert_eq!(due.len(), 1);
        // Candidates by id: the store server first.
        let ids: Vec<&str> = due[0].candidates.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(due[0].last, "");
        assert!(c.trunk_brief("g").is_none());

        let change = c.commit_trunk_pick(&due[0], "10.0.0.2").unwrap().unwrap();
        assert_eq!(change.old, None);
        assert_eq!(change.new.unwrap().id, "10.0.0.2");
        // A second commit of the same round changes nothing.
        assert!(c.commit_trunk_pick(&due[0], "10.0.0.1").is_none());
        let (version, brief) = c.trunk_brief("g").unwrap();
        assert_eq!((brief.id.as_str(), brief.status), ("10.0.0.2", ACTIVE));
        assert!(c.trunk_picks_due(100, 0, 20).is_empty());
        let epoch = c.trunk_epoch();

        // Only the trunk server reports; 72 hands out the largest id reported.
        assert_eq!(
            c.report_trunk_file_id(&b, 3, true).unwrap_err().errno,
            errno::EINVAL
        );
        c.report_trunk_file_id(&a, 3, true).unwrap();
        c.report_trunk_file_id(&a, 2, true).unwrap();
        assert_eq!(c.trunk_file_id(&b).unwrap(), 3);
        c.report_trunk_free(&a, 7, true).unwrap();
        // A follower has not heard of a new trunk server yet: it takes the report.
        c.report_trunk_free(&b, 8, false).unwrap();
        assert_eq!(c.group("g").unwrap().trunk.free_mb, 8);

        // 94: the active trunk server is not replaced.
        assert_eq!(
            c.set_trunk_server_on_request("g", None).unwrap(),
            "10.0.0.2"
        );
        let err = c
            .set_trunk_server_on_request("g", Some("10.0.0.1"))
            .unwrap_err();
        assert_eq!(err.errno, errno::EEXIST);
        let err = c
            .set_trunk_server_on_request("g", Some("10.0.0.2"))
            .unwrap_err();
        assert_eq!(err.errno, errno::EALREADY);

        // It goes silent: cleared after the grace from its last heartbeat (100)...
        c.disconnect(&a);
        assert!(c.trunk_picks_due(110, 0, 20).is_empty(), "within the grace");
        // ... or from when this tracker started leading, if later.
        assert!(
            c.trunk_picks_due(121, 115, 20).is_empty(),
            "a new leader waits too"
        );
        let due = c.trunk_picks_due(121, 0, 20);
        assert!(c.trunk_epoch() > epoch);
        assert_eq!(due[0].last, "10.0.0.2");
        let ids: Vec<&str> = due[0].candidates.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["10.0.0.1"]);
        let change = c.commit_trunk_pick(&due[0], "10.0.0.1").unwrap().unwrap();
        assert_eq!(change.old.unwrap().id, "10.0.0.2");
        let (newer, _) = c.trunk_brief("g").unwrap();
        assert!(newer > version);

        // 94 with the trunk server gone: the switch is the leader's next round.
        c.disconnect(&b);
        active(&mut c, "g", "10.0.0.2", 1, 5000);
        assert_eq!(
            c.set_trunk_server_on_request("g", Some("10.0.0.2"))
                .unwrap(),
            "10.0.0.2"
        );
        let due = c.trunk_picks_due(130, 0, 20);
        assert!(
            due[0].forced && due[0].candidates[0].id == "10.0.0.2",
            "{due:?}"
        );

        // A follower takes the leader's view, ids it has not seen joining included.
        let mut f = Cluster::new(Placement::default());
        f.use_trunk_files(true);
        active(&mut f, "g", "10.0.0.1", 1, 5000);
        f.apply_trunk_assignments(&c.trunk_assignments());
        assert!(f.is_trunk_server("g", "10.0.0.1"));
        f.apply_trunk_assignments(&[("g".into(), "10.0.0.9".into())]);
        assert!(f.is_trunk_server("g", "10.0.0.9"));
        f.apply_trunk_assignments(&[("g".into(), String::new())]);
        assert!(!f.is_trunk_server("g", "10.0.0.9"));
    }
}
