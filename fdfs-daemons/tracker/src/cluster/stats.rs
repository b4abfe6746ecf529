//! The records of the admin listings: 90/91 (groups), 92 (storages), and the cluster
//! wide 97 (every storage) and 98 (every group's space) of 6.16's stat tools.

use fdfs_proto::msg::{
    ConnCounts, GroupStat, StorageClusterEntry, StorageClusterFilter, StorageClusterStat,
    StorageStat, VolumeEntry, VolumeFilter, VolumeStat,
};

use super::placement::{group_space, reserved_mb};
use super::{Cluster, Group, Storage};
use crate::refusal::Refusal;

impl Cluster {
    fn group_stat(&self, g: &Group) -> GroupStat {
        let space = group_space(g).unwrap_or_default();
        GroupStat {
            group: g.name.clone(),
            total_mb: space.total_mb,
            free_mb: space.free_mb,
            reserved_mb: reserved_mb(&self.placement.reserved_storage_space, space.total_mb),
            trunk_free_mb: g.trunk.free_mb,
            storage_count: g.storages.len() as i64,
            storage_port: g.storage_port as i64,
            readable_server_count: g.storages.values().filter(|s| s.is_readable()).count() as i64,
            writable_server_count: g.storages.values().filter(|s| s.is_writable()).count() as i64,
            current_write_server: g.current_write_server as i64,
            store_path_count: g.store_path_count as i64,
            subdir_count_per_path: g.subdir_count_per_path as i64,
            // -1 without trunk files: fdfs_monitor shows no trunk lines then.
            current_trunk_file_id: if self.trunk_files {
                g.trunk.file_id as i64
            } else {
                -1
            },
        }
    }

    /// 90 (one group; ENOENT if unknown) or 91 (every group, by name).
    pub fn group_stats(&self, only: Option<&str>) -> Result<Vec<GroupStat>, Refusal> {
        match only {
            Some(name) => Ok(vec![self.group_stat(self.group(name)?)]),
            None => Ok(self.groups.values().map(|g| self.group_stat(g)).collect()),
        }
    }

    fn storage_stat(&self, g: &Group, s: &Storage) -> StorageStat {
        let mut counters = s.counters.clone();
        counters.last_synced_timestamp = self.last_synced_timestamp(g, s);
        counters.last_heart_beat_time = s.last_heart_beat_time;
        StorageStat {
            status: s.status,
            rw_mode: s.rw_mode,
            id: s.id.clone(),
            ip: s.ip.clone(),
            sync_src_id: s.sync_src_id.clone(),
            version: s.version.clone(),
            join_time: s.join_time,
            up_time: s.up_time,
            total_mb: s.total_mb,
            free_mb: s.free_mb,
            reserved_mb: reserved_mb(&self.placement.reserved_storage_space, s.total_mb),
            upload_priority: s.upload_priority,
            store_path_count: s.store_path_count as i64,
            subdir_count_per_path: s.subdir_count_per_path as i64,
            current_write_path: s.current_write_path as i64,
            storage_port: s.port as i64,
            counters,
            is_trunk_server: g.trunk.server.as_deref() == Some(s.id.as_str()),
        }
    }

    /// 97: every storage of every group (groups by name, storages by id) that `filter`
    /// accepts.
    pub fn storage_cluster_stat(&self, filter: &StorageClusterFilter) -> StorageClusterStat {
        let trunk = |g: &Group, s: &Storage| g.trunk.server.as_deref() == Some(s.id.as_str());
        let storages = self
            .groups
            .values()
            .flat_map(|g| g.storages.values().map(move |s| (g, s)))
            .filter(|(g, s)| filter.accepts(s.status, trunk(g, s), self.trunk_files))
            .map(|(g, s)| StorageClusterEntry {
                id: s.id.clone(),
                host: if s.ip.contains(':') {
                    format!("[{}]:{}", s.ip, s.port)
                } else {
                    format!("{}:{}", s.ip, s.port)
                },
                is_trunk_server: trunk(g, s),
                status: s.status,
                connections: ConnCounts {
                    alloc: s.counters.conn_alloc,
                    current: s.counters.conn_current,
                    max: s.counters.conn_max,
                },
                version: s.version.clone(),
                up_time: s.up_time,
                last_heartbeat: s.last_heart_beat_time,
            })
            .collect();
        StorageClusterStat {
            use_storage_id: self.ids.is_some(),
            use_trunk_file: self.trunk_files,
            storages,
        }
    }

    /// 98: the space of every group that `filter` accepts, as 91 reports it; a group's
    /// disk is available while its free space is above the reserved space.
    pub fn volume_stat(&self, filter: &VolumeFilter) -> VolumeStat {
        let groups = self
            .groups
            .values()
            .map(|g| {
                let stat = self.group_stat(g);
                let available = stat.free_mb > stat.reserved_mb;
                VolumeEntry {
                    group: stat.group,
                    total_mb: stat.total_mb,
                    free_mb: stat.free_mb,
                    reserved_mb: stat.reserved_mb,
                    avail_mb: if available {
                        stat.free_mb - stat.reserved_mb
                    } else {
                        0
                    },
                    trunk_free_mb: stat.trunk_free_mb,
                    is_disk_available: available,
                    is_trunk_available: self.trunk_files && stat.trunk_free_mb > 0,
                }
            })
            .filter(|v| filter.accepts(v, self.trunk_files))
            .collect();
        VolumeStat {
            use_trunk_file: self.trunk_files,
            groups,
        }
    }

    /// 92: every storage of `group` sorted by id, or just `id` (ENOENT if unknown).
    pub fn storage_stats(
        &self,
        group: &str,
        id: Option<&str>,
    ) -> Result<Vec<StorageStat>, Refusal> {
        let g = self.group(group)?;
        match id {
            Some(id) => Ok(vec![self.storage_stat(g, g.storage(id)?)]),
            None => Ok(g
                .storages
                .values()
                .map(|s| self.storage_stat(g, s))
                .collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::active;
    use super::*;
    use crate::config::Placement;
    use fdfs_proto::config::SpaceLimit;
    use fdfs_proto::errno;
    use fdfs_proto::msg::{StorageCounters, SyncReport};
    use fdfs_proto::status::ACTIVE;

    #[test]
    fn group_and_storage_listings() {
        let mut c = Cluster::new(Placement {
            reserved_storage_space: SpaceLimit::Ratio(0.1),
            ..Placement::default()
        });
        let a = active(&mut c, "g1", "10.0.0.1", 1, 7000);
        let b = active(&mut c, "g1", "10.0.0.2", 1, 5000);
        active(&mut c, "g2", "10.0.0.3", 2, 5000);
        let stats = c.group_stats(None).unwrap();
        assert_eq!(stats.len(), 2);
        let g1 = &stats[0];
        assert_eq!(g1.group, "g1");
        assert_eq!(
            (g1.total_mb, g1.free_mb, g1.reserved_mb),
            (100_000, 5000, 10_000)
        );
        assert_eq!(
            (
                g1.storage_count,
                g1.readable_server_count,
                g1.writable_server_count
            ),
            (2, 2, 2)
        );
        assert_eq!(g1.storage_port, 23000);
        assert_eq!(c.group_stats(Some("g2")).unwrap()[0].store_path_count, 2);
        assert_eq!(
            c.group_stats(Some("nope")).unwrap_err().errno,
            errno::ENOENT
        );

        let mut counters = StorageCounters::default();
        counters.counters[0] = 42;
        c.beat(&a, Some(counters), 500).unwrap();
        c.sync_report(
            &b,
            &SyncReport {
                entries: vec![("10.0.0.1".into(), 444)],
            },
            500,
        )
        .unwrap();
        let list = c.storage_stats("g1", None).unwrap();
        assert_eq!(
            list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["10.0.0.1", "10.0.0.2"]
        );
        assert_eq!(list[0].status, ACTIVE);
        assert_eq!(list[0].counters.counters[0], 42);
        assert_eq!(list[0].counters.last_heart_beat_time, 500);
        assert_eq!(list[1].counters.last_synced_timestamp, 444);
        assert_eq!(list[0].version, "6.16.1");
        assert_eq!(c.storage_stats("g1", Some("10.0.0.2")).unwrap().len(), 1);
        assert_eq!(
            c.storage_stats("g1", Some("10.0.0.9")).unwrap_err().errno,
            errno::ENOENT
        );
    }
}
