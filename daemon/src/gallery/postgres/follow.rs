//! Keeping this node's index in step with the shared gallery: the change log, applied in
//! order, woken by NOTIFY, caught up from the last change applied after any gap.
//!
//! Every write appends its changes to `changes` in its own transaction, under one advisory
//! lock, so change numbers are gapless and in commit order. A node remembers the last number
//! it applied; reading `seq > last` then gives exactly what it misses, whether it was asleep
//! for a millisecond or cut off for an hour. A log that no longer reaches back that far (the
//! oldest changes were pruned), or a `reload` change (a restore, a re-embedding), makes the
//! node read the whole gallery again, in one snapshot together with the newest number.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, IsolationLevel};

use super::schema::CHANNEL;
use super::settings::GalleryUrl;
use crate::gallery::error::with_causes;
use crate::gallery::index::Index;
use crate::gallery::sqlite::schema::decode_embedding;
use crate::gallery::{GalleryError, StoreHealth};

/// Most changes applied one by one; a node further behind reads the gallery again.
const MAX_INCREMENTAL: i64 = 10_000;
/// How long the follower waits for a NOTIFY before it asks anyway (a lost wake-up costs at
/// most this; the query is also how a dead connection is noticed).
const POLL_EVERY: Duration = Duration::from_millis(1000);
/// Reconnection backoff, doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// Changes older than this are pruned (the newest always stays): a node away for longer
/// finds a gap and reads the gallery again.
const KEEP_CHANGES_MS: i64 = 7 * 24 * 3600 * 1000;
/// How often a node prunes (and when it connects).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What the node and its follower thread share.
pub struct Shared {
    index: RwLock<Index>,
    /// The last change the index holds. Its lock also serialises applying changes.
    applied: Mutex<i64>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    unreachable: Option<String>,
}

impl Shared {
    /// Loads the whole gallery through `client`.
    pub fn load(client: &mut Client) -> Result<Shared, GalleryError> {
        let (index, seq) = load_all(client)?;
        Ok(Shared {
            index: RwLock::new(index),
            applied: Mutex::new(seq),
            health: Mutex::new(Health::default()),
        })
    }

    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn applied(&self) -> MutexGuard<'_, i64> {
        self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn health_mut(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn health(&self) -> StoreHealth {
        let unreachable = self.health_mut().unreachable.clone();
        StoreHealth {
            store: "postgresql",
            reachable: unreachable.is_none(),
            error: unreachable,
            applied_change: Some(*self.applied()),
        }
    }

    /// Records that the store cannot be reached (logged once per outage).
    pub fn set_unreachable(&self, why: String) {
        let mut health = self.health_mut();
        if health.unreachable.is_none() {
            log::error!(
                "gallery: PostgreSQL unreachable ({why}): recognition answers from the last \
                 index, writes are refused until it is back"
            );
        }
        health.unreachable = Some(why);
    }

    fn set_reachable(&self) {
        if self.health_mut().unreachable.take().is_some() {
            log::info!("gallery: PostgreSQL reachable again; caught up");
        }
    }

    /// Applies every change after the last applied one.
    pub fn catch_up(&self, client: &mut Client) -> Result<(), GalleryError> {
        let mut applied = self.applied();
        let rows = client.query(
            "SELECT seq, kind, userid, other, sample_id, embedding, negative FROM changes
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&*applied, &MAX_INCREMENTAL],
        )?;
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let gap = first.get::<_, i64>(0) != *applied + 1;
        let reload = rows.iter().any(|row| row.get::<_, &str>(1) == "reload");
        if gap || reload || rows.len() as i64 == MAX_INCREMENTAL {
            let (index, seq) = load_all(client)?;
            log::info!(
                "gallery: read the shared gallery again at change {seq} ({})",
                if reload {
                    "restored or re-embedded"
                } else {
                    "too far behind the change log"
                }
            );
            *self.index_mut() = index;
            *applied = seq;
            return Ok(());
        }
        let mut index = self.index_mut();
        for row in &rows {
            let seq: i64 = row.get(0);
            let userid: Option<&str> = row.get(2);
            let userid = userid.unwrap_or_default();
            match row.get::<_, &str>(1) {
                "add" => {
                    let (id, embedding) = sample_of(row)?;
                    if !index.has_sample(id) {
                        index.add(userid, id, row.get(6), &embedding);
                    }
                }
                "delete_user" => {
                    index.remove_user(userid);
                }
                "delete_sample" => {
                    let (id, embedding) = sample_of(row)?;
                    index.remove_sample(id, &embedding);
                }
                "rename" => {
                    let to: Option<&str> = row.get(3);
                    index.rename_user(userid, to.unwrap_or_default());
                }
                other => {
                    return Err(GalleryError::Corrupt(format!(
                        "change {seq} is of an unknown kind {other:?}"
                    )))
                }
            }
            *applied = seq;
        }
        Ok(())
    }
}

fn sample_of(row: &postgres::Row) -> Result<(i64, Vec<f32>), GalleryError> {
    let seq: i64 = row.get(0);
    let id: Option<i64> = row.get(4);
    let blob: Option<&[u8]> = row.get(5);
    match (id, blob.and_then(decode_embedding)) {
        (Some(id), Some(embedding)) => Ok((id, embedding)),
        _ => Err(GalleryError::Corrupt(format!(
            "change {seq} has no sample or a malformed embedding"
        ))),
    }
}

/// The whole gallery and the newest change number, from one snapshot.
fn load_all(client: &mut Client) -> Result<(Index, i64), GalleryError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let seq: i64 = tx
        .query_one("SELECT coalesce(max(seq), 0)::bigint FROM changes", &[])?
        .get(0);
    let mut index = Index::new();
    let mut names = std::collections::HashMap::new();
    for row in tx.query("SELECT id, userid FROM users ORDER BY id", &[])? {
        let userid: String = row.get(1);
        index.add_user(&userid);
        names.insert(row.get::<_, i64>(0), userid);
    }
    let none: [&(dyn postgres::types::ToSql + Sync); 0] = [];
    let mut rows = tx.query_raw("SELECT id, user_id, embedding, negative FROM samples", none)?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0);
        let userid = names
            .get(&row.get::<_, i64>(1))
            .ok_or_else(|| GalleryError::Corrupt(format!("sample {id} belongs to no user")))?;
        let embedding = decode_embedding(row.get(2)).ok_or_else(|| {
            GalleryError::Corrupt(format!("sample {id} has a malformed embedding"))
        })?;
        index.add(userid, id, row.get(3), &embedding);
    }
    drop(rows);
    tx.commit()?;
    Ok((index, seq))
}

/// Deletes changes older than [`KEEP_CHANGES_MS`] except the newest, whose number the next
/// write continues from. Any node may do it; doing it twice is harmless.
fn prune(client: &mut Client) -> Result<u64, GalleryError> {
    let before = crate::gallery::now_ms() - KEEP_CHANGES_MS;
    let pruned = client.execute(
        "DELETE FROM changes WHERE at < $1 AND seq < (SELECT max(seq) FROM changes)",
        &[&before],
    )?;
    if pruned > 0 {
        log::info!("gallery: pruned {pruned} changes older than 7 days from the change log");
    }
    Ok(pruned)
}

/// Connects with the settings of `url`.
pub fn connect(url: &GalleryUrl) -> Result<Client, GalleryError> {
    url.connect()
        .map_err(|e| GalleryError::Unavailable(with_causes(&e)))
}

/// The follower: LISTENs on its own connection, applies changes as they are announced (and
/// every [`POLL_EVERY`] in case a wake-up was missed), reconnects with backoff after a fault
/// and catches up. Ends when the gallery is dropped.
pub fn spawn_follower(shared: Weak<Shared>, url: GalleryUrl) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("gallery-follow".into())
        .spawn(move || {
            let mut backoff = BACKOFF_FIRST;
            loop {
                let Some(node) = shared.upgrade() else {
                    return;
                };
                let connected = connect(&url).and_then(|mut client| {
                    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
                    node.catch_up(&mut client)?;
                    Ok(client)
                });
                let mut client = match connected {
                    Ok(client) => client,
                    Err(e) => {
                        node.set_unreachable(e.to_string());
                        drop(node);
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                };
                node.set_reachable();
                backoff = BACKOFF_FIRST;
                drop(node);
                let why = follow(&shared, &mut client);
                match (shared.upgrade(), why) {
                    (Some(node), Some(why)) => node.set_unreachable(why),
                    _ => return,
                }
            }
        })
        .map(drop)
}

/// Follows on a working connection until it fails (the reason) or the gallery is gone (None).
fn follow(shared: &Weak<Shared>, client: &mut Client) -> Option<String> {
    let mut pruned_at: Option<std::time::Instant> = None;
    loop {
        if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            if let Err(e) = prune(client) {
                return Some(e.to_string());
            }
            pruned_at = Some(std::time::Instant::now());
        }
        let woken = client.notifications().timeout_iter(POLL_EVERY).next();
        if let Err(e) = woken {
            return Some(e.to_string());
        }
        // Several writes may have been announced meanwhile; one catch-up serves them all.
        {
            let mut notifications = client.notifications();
            let mut pending = notifications.iter();
            loop {
                match pending.next() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => return Some(e.to_string()),
                }
            }
        }
        let node = shared.upgrade()?;
        if let Err(e) = node.catch_up(client) {
            return Some(e.to_string());
        }
        node.set_reachable();
    }
}
