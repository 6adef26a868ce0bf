//! The task between a limit's services and Redis.
//!
//! Services queue their checks on a channel; the worker takes everything
//! queued at once, folds the checks of one key together and the keys into
//! script calls of up to 64 (a global limit's whole batch is one call, with
//! one key), and sends the calls as one pipeline, with a read of the fleet's
//! quota in front (on a Redis Cluster, one pipeline per hash slot and one
//! for the quota). While one batch is under way the next gathers, so a busy
//! instance pays one round trip per batch, not per request, and never has
//! more than [`IN_FLIGHT`] batches out.
//!
//! State machine: *connected* (batches flow) until a command fails, a
//! connection breaks or checks keep timing out; then *fallback* (the
//! services decide locally and queue nothing; what was queued is dropped,
//! which answers its callers at once), probing every `probe_interval`:
//! connect if need be, load the script, read the quota, each within the
//! timeout. The first probe that passes returns to *connected*.

use std::{collections::HashMap, hash::Hash, sync::Arc, time::Duration};

use futures_util::future::join_all;
use redis::{Pipeline, RedisError, Script, Value, cluster_routing::Slot};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    time::Instant,
};

use super::{
    conn::{Conn, RedisClient},
    name::{instances_key, quota_key},
    script::{
        ANNOUNCE, Answer, GCRA, INSTANCE_TTL, KEYS_PER_CALL, Reply, decode_quota, encode_quota,
        quota_args,
    },
    shared::{Cause, Shared},
};
use crate::rate::Quota;

/// Pipelines one instance has out at once. More would only queue behind
/// the others in Redis; fewer would leave the connection idle during a
/// round trip.
pub(super) const IN_FLIGHT: usize = 4;

/// The most checks in one pipeline.
pub(super) const MAX_BATCH: usize = 512;

/// How often an instance announces itself to the count of instances.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// How long a pipeline may take before it is given up (its callers have
/// long since been answered by the fallback): a bound on what a hung
/// connection holds.
const PIPELINE_TIMEOUT: Duration = Duration::from_secs(2);

/// One check waiting for Redis.
#[derive(Debug)]
pub(crate) struct Check {
    pub(super) bucket: String,
    pub(super) reply: oneshot::Sender<Answer>,
}

/// The worker's parts, kept until the first check starts it on the runtime
/// that serves the requests.
pub(crate) struct Worker {
    pub(super) client: RedisClient,
    pub(super) checks: mpsc::Receiver<Check>,
    pub(super) shared: Arc<Shared>,
    /// Gives the local fallback its share: of a quota Redis holds, or among
    /// a new count of instances.
    pub(super) adopted: Box<dyn Fn(Quota) + Send + Sync>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("prefix", &self.shared.prefix)
            .finish_non_exhaustive()
    }
}

/// What each pipeline task needs.
struct Link {
    conn: Conn,
    script: Arc<Script>,
    quota_key: Arc<str>,
    instances_key: Arc<str>,
    shared: Arc<Shared>,
    adopted: Arc<dyn Fn(Quota) + Send + Sync>,
}

/// What every pipeline task shares, to make a [`Link`] of a connection.
struct Parts {
    script: Arc<Script>,
    quota_key: Arc<str>,
    instances_key: Arc<str>,
    shared: Arc<Shared>,
    adopted: Arc<dyn Fn(Quota) + Send + Sync>,
}

impl Parts {
    fn link(&self, conn: Conn) -> Link {
        Link {
            conn,
            script: Arc::clone(&self.script),
            quota_key: Arc::clone(&self.quota_key),
            instances_key: Arc::clone(&self.instances_key),
            shared: Arc::clone(&self.shared),
            adopted: Arc::clone(&self.adopted),
        }
    }
}

impl Worker {
    /// Runs until every sender (the layer and its services) is gone.
    pub(crate) async fn run(self) {
        let Worker {
            client,
            mut checks,
            shared,
            adopted,
        } = self;
        let parts = Parts {
            script: Arc::new(Script::new(GCRA)),
            quota_key: Arc::from(quota_key(&shared.prefix)),
            instances_key: Arc::from(instances_key(&shared.prefix)),
            shared: Arc::clone(&shared),
            adopted: Arc::from(adopted),
        };
        let permits = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut conn: Option<Conn> = None;
        // The first batch announces this instance; then one a second, with
        // a batch of checks or on its own. One timer, reset at each
        // announcement, not one per batch.
        let announce_due = tokio::time::sleep_until(Instant::now());
        tokio::pin!(announce_due);
        loop {
            if conn.is_none() || shared.in_fallback() {
                // Probe: on the connection there is, or a new one.
                let link = match conn.take() {
                    Some(c) => parts.link(c),
                    None => match client.connect(CONNECT_TIMEOUT, PIPELINE_TIMEOUT).await {
                        Ok(c) => parts.link(c),
                        Err(e) => {
                            shared.failed(&e);
                            if !idle(&mut checks, shared.probe_interval).await {
                                return;
                            }
                            continue;
                        }
                    },
                };
                match link.probe().await {
                    Ok(()) => {
                        shared.leave_fallback();
                        conn = Some(link.conn);
                    }
                    Err(broken) => {
                        // A connection that was only slow is probed again;
                        // a broken one is replaced at the next probe.
                        if !broken {
                            conn = Some(link.conn);
                        }
                        shared.enter_fallback(Cause::Timeout);
                        if !idle(&mut checks, shared.probe_interval).await {
                            return;
                        }
                    }
                }
                continue;
            }
            let first = tokio::select! {
                check = checks.recv() => match check {
                    Some(check) => Some(check),
                    None => return,
                },
                () = shared.wake.notified() => None,
                () = &mut announce_due => None,
            };
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            if shared.in_fallback() {
                // Entered while waiting for a permit: what is queued has been
                // or will be answered locally.
                continue;
            }
            let mut batch = Vec::with_capacity(16);
            batch.extend(first.filter(|c| !c.reply.is_closed()));
            while batch.len() < MAX_BATCH {
                match checks.try_recv() {
                    Ok(check) if !check.reply.is_closed() => batch.push(check),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            let head = Head {
                pending: shared.pending(),
                announce: now >= announce_due.deadline(),
            };
            if head.announce {
                announce_due.as_mut().reset(now + ANNOUNCE_EVERY);
            }
            if batch.is_empty() && head.pending.is_none() && !head.announce {
                continue;
            }
            if let Some(c) = conn.clone() {
                // A pipeline that fails puts the limit in fallback, and the
                // next turn of the loop probes.
                tokio::spawn(parts.link(c).send(batch, head, permit));
            }
        }
    }
}

/// How long a connection attempt may take. Requests never wait for one
/// (they wait at most the check's timeout, then fall back), so this only
/// bounds how long a probe of an unreachable host holds the worker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Waits `period`, dropping the checks queued meanwhile (which answers
/// their callers at once: they decide by the fallback). `false` once every
/// sender is gone.
async fn idle(checks: &mut mpsc::Receiver<Check>, period: Duration) -> bool {
    let sleep = tokio::time::sleep(period);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return true,
            check = checks.recv() => if check.is_none() { return false },
        }
    }
}

/// A bucket and the callers waiting for its checks, in arrival order.
pub(super) type Group = (String, Vec<oneshot::Sender<Answer>>);

/// Each item split into a key and a value, the values grouped by key:
/// groups in order of their key's first item, each group's values in order.
fn ordered_groups<T, K: Hash + Eq + Clone, V>(
    items: impl IntoIterator<Item = T>,
    split: impl Fn(T) -> (K, V),
) -> Vec<(K, Vec<V>)> {
    let mut groups: Vec<(K, Vec<V>)> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    for item in items {
        let (key, value) = split(item);
        match index.get(&key) {
            Some(&i) => groups[i].1.push(value),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![value]));
            }
        }
    }
    groups
}

/// The checks of one batch, grouped by bucket in order of first arrival.
pub(super) fn group(batch: Vec<Check>) -> Vec<Group> {
    ordered_groups(batch, |check| (check.bucket, check.reply))
}

/// A batch's buckets grouped by their hash slot, in order of each slot's
/// first bucket: on a cluster, one script call may only touch one slot.
pub(super) fn by_slot(groups: Vec<Group>) -> Vec<Vec<Group>> {
    ordered_groups(groups, |group| (Slot::for_key(&group.0), group))
        .into_iter()
        .map(|(_, groups)| groups)
        .collect()
}

/// The groups of a batch split into script calls of at most
/// [`KEYS_PER_CALL`] buckets.
pub(super) fn calls(groups: Vec<Group>) -> Vec<Vec<Group>> {
    let mut calls: Vec<Vec<Group>> = Vec::with_capacity(groups.len().div_ceil(KEYS_PER_CALL));
    for group in groups {
        match calls.last_mut() {
            Some(call) if call.len() < KEYS_PER_CALL => call.push(group),
            _ => calls.push(vec![group]),
        }
    }
    calls
}

fn is_noscript(value: &Value) -> bool {
    matches!(value, Value::ServerError(e)
        if e.kind() == Some(redis::ServerErrorKind::NoScript))
}

/// What a batch says and asks about the fleet, before its checks.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// A quota set here, to write.
    pending: Option<Quota>,
    /// Whether to announce this instance and read the count.
    announce: bool,
}

impl Head {
    /// Its commands: the pending quota's write if any, the read of the
    /// fleet's quota, and the announcement if due.
    fn len(self) -> usize {
        usize::from(self.pending.is_some()) + 1 + usize::from(self.announce)
    }
}

/// One pipeline of a batch: the [`Head`]'s commands if it carries them
/// (a pipeline of script calls alone does not), then one script call per
/// entry of `calls`.
struct Leg {
    pipe: Pipeline,
    head: Option<Head>,
    calls: Vec<Vec<Group>>,
}

impl Link {
    /// Loads the script and reads the quota, within the timeout. `Err(true)`
    /// when the connection is broken, `Err(false)` when it was only slow.
    async fn probe(&self) -> Result<(), bool> {
        // Sent on its own, `SCRIPT LOAD` reaches every node of a cluster.
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(GCRA);
        let pending = self.shared.pending();
        let pipe = self.head_pipe(Head {
            pending,
            announce: false,
        });
        let (mut a, mut b) = (self.conn.clone(), self.conn.clone());
        let both = async { tokio::join!(a.command(&load), b.pipeline(&pipe)) };
        match tokio::time::timeout(self.shared.timeout, both).await {
            Ok((load, values)) => match (load.and_then(Value::extract_error), values) {
                (Ok(_), Ok(values)) => {
                    if let Some(q) = pending {
                        self.shared.confirm(q);
                    }
                    self.read_quota(values.last());
                    Ok(())
                }
                (Err(e), _) | (_, Err(e)) => {
                    self.shared.failed(&e);
                    Err(e.is_unrecoverable_error() || e.is_io_error())
                }
            },
            Err(_) => Err(false),
        }
    }

    /// A pipeline of `head`'s commands. The quota's key and the count's
    /// share a slot: on a cluster they are one pipeline to one node.
    fn head_pipe(&self, head: Head) -> Pipeline {
        let mut pipe = redis::pipe();
        if let Some(q) = head.pending {
            pipe.cmd("SET").arg(&*self.quota_key).arg(encode_quota(&q));
        }
        pipe.cmd("GET").arg(&*self.quota_key);
        if head.announce {
            let ttl = u64::try_from(INSTANCE_TTL.as_millis()).unwrap_or(u64::MAX);
            pipe.cmd("EVAL")
                .arg(ANNOUNCE)
                .arg(1)
                .arg(&*self.instances_key)
                .arg(&self.shared.id)
                .arg(ttl);
        }
        pipe
    }

    /// Reads `head`'s replies (`values` starting with them).
    fn read_head(&self, head: Head, values: &[Value]) {
        if let Some(q) = head.pending {
            self.shared.confirm(q);
        }
        let at = usize::from(head.pending.is_some());
        self.read_quota(values.get(at));
        if head.announce {
            if let Some(&Value::Int(n)) = values.get(at + 1) {
                if self.shared.counted(u32::try_from(n).unwrap_or(u32::MAX)) {
                    (self.adopted)(self.shared.share(&self.shared.fleet().quota));
                }
            }
        }
    }

    fn read_quota(&self, value: Option<&Value>) {
        if let Some(q) = value.and_then(decode_quota) {
            if self.shared.adopt(q) {
                (self.adopted)(self.shared.share(&q));
            }
        }
    }

    /// Sends one batch and answers every caller: the [`Head`], and one
    /// script call per [`KEYS_PER_CALL`] buckets. On one server that is one pipeline; on a cluster, where a
    /// script may only touch the keys of one hash slot, the quota's
    /// commands are one pipeline and each slot's calls another, all sent at
    /// once.
    async fn send(self, batch: Vec<Check>, head: Head, _permit: OwnedSemaphorePermit) {
        let groups = group(batch);
        let fleet = self.head_pipe(head);
        let mut legs = if self.conn.is_cluster() {
            let mut legs = vec![Leg {
                pipe: fleet,
                head: Some(head),
                calls: Vec::new(),
            }];
            legs.extend(by_slot(groups).into_iter().map(|slot| Leg {
                pipe: redis::pipe(),
                head: None,
                calls: calls(slot),
            }));
            legs
        } else {
            vec![Leg {
                pipe: fleet,
                head: Some(head),
                calls: calls(groups),
            }]
        };
        let (interval, burst) = quota_args(&self.shared.fleet().quota);
        for leg in &mut legs {
            for call in &leg.calls {
                self.eval(&mut leg.pipe, call, interval, burst);
            }
        }
        let answered = join_all(legs.into_iter().map(|leg| self.run(leg, interval, burst))).await;
        if answered.into_iter().any(|a| a) {
            self.shared.answered();
        }
    }

    /// Sends one leg and answers its callers; `false` if it failed (its
    /// callers are then answered by the fallback).
    async fn run(&self, leg: Leg, interval: u64, burst: u32) -> bool {
        let Leg { pipe, head, calls } = leg;
        let values = match self.exchange(&pipe).await {
            Some(values) if values.len() == pipe.len() => values,
            _ => return false,
        };
        if let Some(head) = head {
            self.read_head(head, &values);
        }
        let skip = head.map_or(0, Head::len);
        let mut retry = Vec::new();
        for (call, value) in calls.into_iter().zip(&values[skip..]) {
            if is_noscript(value) {
                retry.push(call);
            } else {
                self.answer(call, value);
            }
        }
        if retry.is_empty() {
            return true;
        }
        // Redis lost its scripts (a restart, `SCRIPT FLUSH`, a node new to
        // the cluster): load it there once and send those calls again.
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(GCRA);
        for call in &retry {
            self.eval(&mut pipe, call, interval, burst);
        }
        let Some(values) = self.exchange(&pipe).await else {
            return false;
        };
        for (call, value) in retry.into_iter().zip(values.iter().skip(1)) {
            self.answer(call, value);
        }
        true
    }

    /// One script call for `call`'s buckets and their counts of checks.
    fn eval(&self, pipe: &mut Pipeline, call: &[Group], interval: u64, burst: u32) {
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(self.script.get_hash())
            .arg(call.len());
        for (bucket, _) in call {
            cmd.arg(bucket.as_str());
        }
        cmd.arg(interval).arg(burst);
        for (_, replies) in call {
            cmd.arg(replies.len());
        }
    }

    /// The pipeline's replies, or `None` (and the limit in fallback) when
    /// it failed or took longer than [`PIPELINE_TIMEOUT`].
    async fn exchange(&self, pipe: &Pipeline) -> Option<Vec<Value>> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(PIPELINE_TIMEOUT, conn.pipeline(pipe)).await {
            Ok(Ok(values)) => Some(values),
            Ok(Err(e)) => {
                self.shared.failed(&e);
                None
            }
            Err(_) => {
                self.shared.enter_fallback(Cause::Timeout);
                None
            }
        }
    }

    /// Answers the callers of one script call, each bucket's in arrival
    /// order (callers gone by now were answered by the fallback; they count
    /// there).
    fn answer(&self, call: Vec<Group>, value: &Value) {
        let Some(replies) = Reply::parse(value, call.len()) else {
            if let Value::ServerError(e) = value {
                let error = RedisError::from(e.clone());
                // The script failing on its data (a bucket key holding
                // something else, `WRONGTYPE`) is these keys' problem, not
                // Redis's: the other keys keep being limited by Redis.
                if matches!(e.code(), "ERR" | "WRONGTYPE") {
                    self.shared.script_failed(&error);
                } else {
                    self.shared.failed(&error);
                }
            }
            // Dropping the senders answers the callers with the fallback.
            return;
        };
        for ((_, senders), reply) in call.into_iter().zip(replies) {
            for (i, tx) in senders.into_iter().enumerate() {
                let _ = tx.send(reply.answer(i));
            }
        }
    }
}
