//! Who leads the tracker cluster (§8): this tracker's own address, the leader it
//! follows (or that it is), the candidate announced by 66 NOTIFY_NEXT_LEADER, and — on
//! the leader — the followers that joined with 58 and ping with 65.
//!
//! Pure state and the election ranking; the network side lives in `peers` (the
//! election / ping task) and `tracker_cmds` (the commands peers send us).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::IpAddr;

use fdfs_proto::errno;
use fdfs_proto::msg::{ConnCounts, JoinLeader, TrackerStatus};
use tracing::info;

use crate::refusal::Refusal;

/// Running time and restart interval go on the wire rounded down to this many seconds,
/// so trackers started within a few minutes of each other rank by address.
pub const STATUS_ROUNDING: i64 = 300;

/// A follower that pinged within this many seconds counts as active (96).
pub const FOLLOWER_ACTIVE_SECS: i64 = 5;

pub fn round_down(secs: i64) -> i64 {
    secs.max(0) / STATUS_ROUNDING * STATUS_ROUNDING
}

/// `ip:port`, or `[v6]:port`.
pub fn host_of(ip: IpAddr, port: u16) -> String {
    fdfs_proto::addr::HostPort::from_ip(ip, port).to_string()
}

/// Splits `ip:port` / `[v6]:port` into the address text and the port (0 if none).
pub fn split_host(host: &str) -> (&str, u16) {
    let (ip, port) = fdfs_proto::addr::split(host);
    (ip, port.and_then(|p| p.parse().ok()).unwrap_or(0))
}

/// One tracker's answer to 64 GET_STATUS, with its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub status: TrackerStatus,
}

/// The election order (ascending; the greatest wins): an existing leader first, then the
/// longest running time, then the shortest previous downtime, then the greatest IP text,
/// then the greatest port.
pub fn rank(a: &Candidate, b: &Candidate) -> Ordering {
    let (ip_a, port_a) = split_host(&a.host);
    let (ip_b, port_b) = split_host(&b.host);
    a.status
        .if_leader
        .cmp(&b.status.if_leader)
        .then(a.status.running_time.cmp(&b.status.running_time))
        .then(b.status.restart_interval.cmp(&a.status.restart_interval))
        .then(ip_a.cmp(ip_b))
        .then(port_a.cmp(&port_b))
}

/// The winner among the trackers that answered, if any did.
pub fn elect(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates.iter().max_by(|a, b| rank(a, b))
}

/// What the leader knows about a follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    pub up_time: i64,
    pub version: String,
    pub connections: ConnCounts,
    pub last_ping: i64,
}

#[derive(Debug, Default)]
pub struct Relationship {
    me: Option<String>,
    leader: Option<String>,
    /// Bumped on every leader change, so each storage connection learns a new leader
    /// once (beat reply flag 0x01).
    version: u64,
    next_leader: Option<String>,
    followers: BTreeMap<String, Follower>,
}

impl Relationship {
    pub fn new(me: Option<String>) -> Self {
        Relationship {
            me,
            ..Relationship::default()
        }
    }

    /// This tracker's own `ip:port`, once known (bind_addr, or the address a storage
    /// reached it on).
    pub fn me(&self) -> Option<&str> {
        self.me.as_deref()
    }

    /// Records our own address if it is not known yet; true if it was set now.
    pub fn learn_me(&mut self, host: String) -> bool {
        if self.me.is_some() {
            return false;
        }
        info!("this tracker is {host}");
        self.me = Some(host);
        true
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn is_leader(&self) -> bool {
        self.leader.is_some() && self.leader == self.me
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn set_leader(&mut self, leader: Option<String>, why: &str) {
        if self.leader == leader {
            return;
        }
        match &leader {
            Some(l) if Some(l) == self.me.as_ref() => {
                info!("this tracker is now the leader ({why})")
            }
            Some(l) => info!("tracker {l} is the leader ({why})"),
            None => info!(
                "no leader any more (was {}; {why})",
                self.leader.as_deref().unwrap_or("-")
            ),
        }
        self.leader = leader;
        self.version += 1;
        self.next_leader = None;
        if !self.is_leader() {
            self.followers.clear();
        }
    }

    /// Forgets `leader` unless another leader replaced it meanwhile.
    pub fn forget_leader(&mut self, leader: &str, why: &str) {
        if self.leader.as_deref() == Some(leader) {
            self.set_leader(None, why);
        }
    }

    /// 64: our status; ENOENT while we know no group (such a tracker cannot lead).
    pub fn status(
        &self,
        has_groups: bool,
        running_time: i64,
        restart_interval: i64,
    ) -> Result<TrackerStatus, Refusal> {
        if !has_groups {
            return Err(Refusal::not_found("this tracker has no groups yet"));
        }
        Ok(TrackerStatus {
            if_leader: self.is_leader(),
            running_time: round_down(running_time),
            restart_interval: round_down(restart_interval),
        })
    }

    /// 66: `candidate` is about to become the leader. `known`: it is in our tracker list.
    pub fn notify_next(&mut self, candidate: &str, known: bool) -> Result<(), Refusal> {
        if !known && self.me.as_deref() != Some(candidate) {
            return Err(Refusal::not_found(format!(
                "next leader {candidate} is not a known tracker"
            )));
        }
        if self.is_leader() && self.me.as_deref() != Some(candidate) {
            return Err(Refusal::invalid(format!(
                "two leaders: this tracker leads, {candidate} wants to"
            )));
        }
        self.next_leader = Some(candidate.to_string());
        Ok(())
    }

    /// 67: the notified candidate is the leader now.
    pub fn commit_next(&mut self, candidate: &str) -> Result<(), Refusal> {
        if self.next_leader.as_deref() != Some(candidate) {
            return Err(Refusal::invalid(format!(
                "commit of {candidate}, but {} was notified",
                self.next_leader.as_deref().unwrap_or("nobody")
            )));
        }
        self.set_leader(Some(candidate.to_string()), "committed by the new leader");
        Ok(())
    }

    /// 68: a storage or another leader saw two leaders (`why`); a leader steps down so
    /// a new election runs.
    pub fn reselect(&mut self, why: &str) -> bool {
        if !self.is_leader() {
            return false;
        }
        self.set_leader(None, why);
        true
    }

    /// 58 on the leader.
    pub fn follower_joined(
        &mut self,
        host: &str,
        join: &JoinLeader,
        now: i64,
    ) -> Result<(), Refusal> {
        if !self.is_leader() {
            return Err(Refusal::new(
                errno::EOPNOTSUPP,
                "this tracker is not the leader",
            ));
        }
        info!(
            "tracker {host} (version {}) joined as follower",
            join.version
        );
        self.followers.insert(
            host.to_string(),
            Follower {
                up_time: join.up_time,
                version: join.version.clone(),
                connections: ConnCounts::default(),
                last_ping: now,
            },
        );
        Ok(())
    }

    /// 65 on the leader; `host` is known when the follower joined on this connection.
    pub fn follower_pinged(
        &mut self,
        host: Option<&str>,
        counts: Option<ConnCounts>,
        now: i64,
    ) -> Result<(), Refusal> {
        if !self.is_leader() {
            return Err(Refusal::new(
                errno::EOPNOTSUPP,
                "this tracker is not the leader",
            ));
        }
        if let Some(f) = host.and_then(|h| self.followers.get_mut(h)) {
            f.last_ping = now;
            if let Some(c) = counts {
                f.connections = c;
            }
        }
        Ok(())
    }

    pub fn followers(&self) -> &BTreeMap<String, Follower> {
        &self.followers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(host: &str, leader: bool, running: i64, restart: i64) -> Candidate {
        Candidate {
            host: host.into(),
            status: TrackerStatus {
                if_leader: leader,
                running_time: running,
                restart_interval: restart,
            },
        }
    }

    #[test]
    fn election_ranking() {
        let a = cand("10.0.0.1:22122", false, 600, 0);
        let b = cand("10.0.0.2:22122", false, 300, 0);
        let c = cand("10.0.0.3:22122", false, 300, 300);
        // Longest running time wins.
        assert_eq!(
            elect(&[a.clone(), b.clone(), c.clone()]).unwrap().host,
            a.host
        );
        // Same running time: shortest downtime wins.
        assert_eq!(elect(&[b.clone(), c.clone()]).unwrap().host, b.host);
        // An existing leader beats everything.
        let l = cand("10.0.0.0:1", true, 0, 9000);
        assert_eq!(
            elect(&[a.clone(), l.clone(), b.clone()]).unwrap().host,
            l.host
        );
        // Ties: greatest IP text, then greatest port.
        let x = cand("127.0.0.9:22122", false, 0, 0);
        let y = cand("127.0.0.10:22122", false, 0, 0);
        assert_eq!(
            elect(&[x.clone(), y.clone()]).unwrap().host,
            x.host,
            "strcmp order"
        );
        let p1 = cand("127.0.0.9:100", false, 0, 0);
        let p2 = cand("127.0.0.9:99", false, 0, 0);
        assert_eq!(
            elect(&[p1.clone(), p2]).unwrap().host,
            p1.host,
            "numeric port"
        );
        assert!(elect(&[]).is_none());
    }

    #[test]
    fn two_leaders_settle_on_the_election_winner() {
        // A leader that ranks lower than its rival (`rank(me, rival).is_lt()`) steps
        // down; the other keeps leading: both sides agree.
        let old = cand("10.0.0.1:22122", true, 900, 0);
        let young = cand("10.0.0.2:22122", true, 300, 0);
        assert!(rank(&young, &old).is_lt());
        assert!(rank(&old, &young).is_gt());
        // Same ranks but the address: the greater address stays, on both sides.
        let a = cand("127.0.0.9:22122", true, 0, 0);
        let b = cand("127.0.0.10:22122", true, 0, 0);
        assert!(rank(&b, &a).is_lt());
        assert!(rank(&a, &b).is_gt());
    }

    #[test]
    fn hosts() {
        assert_eq!(split_host("10.0.0.1:22122"), ("10.0.0.1", 22122));
        assert_eq!(split_host("[::1]:22122"), ("::1", 22122));
        assert_eq!(split_host("10.0.0.1"), ("10.0.0.1", 0));
        assert_eq!(host_of("10.0.0.1".parse().unwrap(), 1), "10.0.0.1:1");
        assert_eq!(host_of("::1".parse().unwrap(), 2), "[::1]:2");
        assert_eq!(host_of("::ffff:10.0.0.1".parse().unwrap(), 3), "10.0.0.1:3");
        assert_eq!(round_down(599), 300);
        assert_eq!(round_down(-5), 0);
    }

    #[test]
    fn notify_commit_and_step_down() {
        let mut r = Relationship::new(Some("10.0.0.1:22122".into()));
        assert_eq!(r.status(false, 0, 0).unwrap_err().errno, errno::ENOENT);
        let st = r.status(true, 650, 10).unwrap();
        assert_eq!(
            (st.if_leader, st.running_time, st.restart_interval),
            (false, 600, 0)
        );
        // Unknown candidates are refused; commits must match the notification.
        assert_eq!(
            r.notify_next("10.0.0.9:22122", false).unwrap_err().errno,
            errno::ENOENT
        );
        assert_eq!(
            r.commit_next("10.0.0.2:22122").unwrap_err().errno,
            errno::EINVAL
        );
        r.notify_next("10.0.0.2:22122", true).unwrap();
        let v = r.version();
        r.commit_next("10.0.0.2:22122").unwrap();
        assert_eq!(r.leader(), Some("10.0.0.2:22122"));
        assert!(!r.is_leader());
        assert_eq!(r.version(), v + 1);
        // A follower refuses 58/65.
        let join = JoinLeader {
            up_time: 1,
            version: "6.16.1".into(),
            server_port: 22122,
        };
        assert_eq!(
            r.follower_joined("10.0.0.3:22122", &join, 5)
                .unwrap_err()
                .errno,
            errno::EOPNOTSUPP
        );
        assert!(!r.reselect("test"));
        // Becoming the leader ourselves.
        r.notify_next("10.0.0.1:22122", false).unwrap();
        r.commit_next("10.0.0.1:22122").unwrap();
        assert!(r.is_leader());
        assert!(r.status(true, 0, 0).unwrap().if_leader);
        // A leader refuses another candidate.
        assert_eq!(
            r.notify_next("10.0.0.2:22122", true).unwrap_err().errno,
            errno::EINVAL
        );
        r.follower_joined("10.0.0.3:22122", &join, 5).unwrap();
        let counts = ConnCounts {
            alloc: 1,
            current: 1,
            max: 2,
        };
        r.follower_pinged(Some("10.0.0.3:22122"), Some(counts), 9)
            .unwrap();
        assert_eq!(r.followers()["10.0.0.3:22122"].last_ping, 9);
        assert_eq!(r.followers()["10.0.0.3:22122"].connections, counts);
        // 68: step down; followers are forgotten.
        assert!(r.reselect("test"));
        assert_eq!(r.leader(), None);
        assert!(r.followers().is_empty());
        // forget_leader only forgets the named leader.
        r.set_leader(Some("10.0.0.2:22122".into()), "test");
        r.forget_leader("10.0.0.5:22122", "test");
        assert_eq!(r.leader(), Some("10.0.0.2:22122"));
        r.forget_leader("10.0.0.2:22122", "test");
        assert_eq!(r.leader(), None);
    }
}
