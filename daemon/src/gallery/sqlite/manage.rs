//! Looking after the gallery one person or one sample at a time: who is registered with how
//! many samples, removing one bad sample, renaming (and, only when asked, merging) a user.
//!
//! Every change commits in SQLite first; the index is then rebuilt from what was committed
//! (while the connection lock is still held, so no registration interleaves) and swapped in
//! whole. A rebuild reads every embedding, which is fine for changes made by hand.

use super::{schema, SqliteGallery};
use crate::gallery::{GalleryError, RenameOutcome, UserSummary};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

impl SqliteGallery {
    /// Every user with its sample count, sorted by userid (bytewise).
    pub fn user_summaries(&self) -> Result<Vec<UserSummary>, GalleryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT u.userid, count(s.id), u.created_at, max(s.added_at), max(s.id),
                    (SELECT count(*) FROM samples n WHERE n.user_id = u.id AND n.negative)
             FROM users u LEFT JOIN samples s ON s.user_id = u.id AND NOT s.negative
             GROUP BY u.id ORDER BY u.userid",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(UserSummary {
                userid: row.get(0)?,
                samples: row.get::<_, i64>(1)? as usize,
                created_at: row.get(2)?,
                last_added_at: row.get(3)?,
                newest_sample: row.get(4)?,
                negatives: row.get::<_, i64>(5)? as usize,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether `userid` is registered.
    pub fn has_user(&self, userid: &str) -> Result<bool, GalleryError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT 1 FROM users WHERE userid = ?1",
                [userid],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Removes one sample; `Ok(false)` if there is no such sample. The user stays, also
    /// when this was its last sample (it then matches nobody until it gets a new one).
    pub fn delete_sample(&self, sample_id: i64) -> Result<bool, GalleryError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The embedding leaves its user's template too.
        let Some(blob) = tx
            .query_row(
                "DELETE FROM samples WHERE id = ?1 RETURNING embedding",
                [sample_id],
                |row| row.get::<_, Vec<u8>>(0),
            )
            .optional()?
        else {
            return Ok(false);
        };
        let embedding = schema::decode_embedding(&blob).ok_or_else(|| {
            GalleryError::Corrupt(format!("sample {sample_id} has a malformed embedding"))
        })?;
        tx.commit()?;
        // Still under the connection lock: the index changes in commit order.
        self.index_mut().remove_sample(sample_id, &embedding);
        Ok(true)
    }

    /// Renames `from` to `to`. When `to` exists the rename is refused with
    /// [`GalleryError::UserExists`] unless `merge` is set: then `from`'s samples move to `to`
    /// and `from` is removed.
    pub fn rename_user(
        &self,
        from: &str,
        to: &str,
        merge: bool,
    ) -> Result<RenameOutcome, GalleryError> {
        // An empty `to` is refused by `Gallery::rename_user` for both stores.
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id_of = |userid: &str| {
            tx.query_row("SELECT id FROM users WHERE userid = ?1", [userid], |row| {
                row.get::<_, i64>(0)
            })
            .optional()
        };
        let source = id_of(from)?.ok_or(GalleryError::UnknownUser)?;
        if from == to {
            return Ok(RenameOutcome::Unchanged);
        }
        let outcome = match id_of(to)? {
            Some(_) if !merge => return Err(GalleryError::UserExists),
            Some(target) => {
                tx.execute(
                    "UPDATE samples SET user_id = ?1 WHERE user_id = ?2",
                    params![target, source],
                )?;
                tx.execute("DELETE FROM users WHERE id = ?1", [source])?;
                RenameOutcome::Merged
            }
            None => {
                tx.execute(
                    "UPDATE users SET userid = ?1 WHERE id = ?2",
                    params![to, source],
                )?;
                RenameOutcome::Renamed
            }
        };
        tx.commit()?;
        self.index_mut().rename_user(from, to);
        Ok(outcome)
    }
}
