//! Backups of a PostgreSQL gallery are the same file as those of the SQLite store (an SQLite
//! gallery), so a backup from either store restores into either: `backup_bytes` writes the
//! rows of one snapshot into a fresh SQLite gallery, `restore_from_bytes` validates the file
//! exactly as the SQLite store does, then replaces every row in one transaction whose
//! `reload` change makes every node read the gallery again.

use postgres::IsolationLevel;
use rusqlite::params;

use super::{Change, PostgresGallery};
use crate::gallery::sqlite::{
    self, open_read_only, stage_candidate, TempFile, SAMPLES_COLUMNS, USERS_COLUMNS,
};
use crate::gallery::GalleryError;

impl PostgresGallery {
    /// The whole gallery, from one snapshot, as an SQLite gallery file.
    pub fn backup_bytes(&self) -> Result<Vec<u8>, GalleryError> {
        let tmp = TempFile::new(&self.data_dir, "backup");
        let mut file = rusqlite::Connection::open(&tmp.path)?;
        sqlite::schema::configure_common(&file)?;
        sqlite::schema::migrate(&mut file)?;
        let out = file.transaction()?;
        self.with_client(|client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            {
                let mut insert = out.prepare(&format!(
                    "INSERT INTO users({USERS_COLUMNS}) VALUES (?1, ?2, ?3)"
                ))?;
                for row in tx.query(&format!("SELECT {USERS_COLUMNS} FROM users"), &[])? {
                    let (id, userid, created_at): (i64, String, i64) =
                        (row.get(0), row.get(1), row.get(2));
                    insert.execute(params![id, userid, created_at])?;
                }
            }
            let mut insert = out.prepare(&format!(
                "INSERT INTO samples({SAMPLES_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ))?;
            for row in tx.query(&format!("SELECT {SAMPLES_COLUMNS} FROM samples"), &[])? {
                insert.execute(params![
                    row.get::<_, i64>(0),
                    row.get::<_, i64>(1),
                    row.get::<_, Vec<u8>>(2),
                    row.get::<_, String>(3),
                    row.get::<_, Vec<u8>>(4),
                    row.get::<_, String>(5),
                    row.get::<_, f64>(6),
                    row.get::<_, i64>(7),
                    row.get::<_, Option<f64>>(8),
                    row.get::<_, Option<i32>>(9),
                    row.get::<_, Option<f64>>(10),
                    row.get::<_, Option<f64>>(11),
                    row.get::<_, Option<f64>>(12),
                    row.get::<_, bool>(13),
                ])?;
            }
            tx.commit()?;
            Ok(())
        })?;
        out.commit()?;
        let _mode: String =
            file.pragma_update_and_check(None, "journal_mode", "DELETE", |row| row.get(0))?;
        file.close().map_err(|(_, e)| e)?;
        Ok(std::fs::read(&tmp.path)?)
    }

    /// Replaces the gallery with a backup from either store, or changes nothing.
    pub fn restore_from_bytes(&self, bytes: &[u8]) -> Result<(), GalleryError> {
        let candidate = stage_candidate(&self.data_dir, bytes)?;
        let file = open_read_only(&candidate.path)?;
        type UserRow = (i64, String, i64);
        let users: Vec<UserRow> = file
            .prepare(&format!("SELECT {USERS_COLUMNS} FROM users"))?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut samples_of_file =
            file.prepare(&format!("SELECT {SAMPLES_COLUMNS} FROM samples"))?;
        let mut samples = samples_of_file.query([])?;
        self.write(|tx| {
            tx.batch_execute(
                "DELETE FROM reembed_staging; DELETE FROM samples; DELETE FROM users;",
            )?;
            let insert_user = tx.prepare(&format!(
                "INSERT INTO users({USERS_COLUMNS}) VALUES ($1, $2, $3)"
            ))?;
            for (id, userid, created_at) in &users {
                tx.execute(&insert_user, &[id, userid, created_at])
                    .map_err(invalid_if_constraint)?;
            }
            let insert_sample = tx.prepare(&format!(
                "INSERT INTO samples({SAMPLES_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ))?;
            let mut count = 0usize;
            while let Some(r) = samples.next()? {
                tx.execute(
                    &insert_sample,
                    &[
                        &r.get::<_, i64>(0)?,
                        &r.get::<_, i64>(1)?,
                        &r.get::<_, Vec<u8>>(2)?,
                        &r.get::<_, String>(3)?,
                        &r.get::<_, Vec<u8>>(4)?,
                        &r.get::<_, String>(5)?,
                        &r.get::<_, f64>(6)?,
                        &r.get::<_, i64>(7)?,
                        &r.get::<_, Option<f64>>(8)?,
                        &r.get::<_, Option<i64>>(9)?.map(|px| px as i32),
                        &r.get::<_, Option<f64>>(10)?,
                        &r.get::<_, Option<f64>>(11)?,
                        &r.get::<_, Option<f64>>(12)?,
                        &r.get::<_, bool>(13)?,
                    ],
                )
                .map_err(invalid_if_constraint)?;
                count += 1;
            }
            // Ids are never handed out twice, also after a restore of an older backup.
            tx.batch_execute(
                "SELECT setval('users_id_seq', greatest((SELECT last_value FROM users_id_seq),
                                                        (SELECT coalesce(max(id), 1) FROM users)));
                 SELECT setval('samples_id_seq', greatest((SELECT last_value FROM samples_id_seq),
                                                          (SELECT coalesce(max(id), 1) FROM samples)));",
            )?;
            log::info!("gallery: restored {} users, {count} samples", users.len());
            Ok(((), vec![Change::Reload]))
        })?;
        self.reembed_state().stop_for_restore();
        Ok(())
    }
}

/// A constraint the file breaks (it passed validation, so this is rare) is the file's fault.
fn invalid_if_constraint(e: postgres::Error) -> GalleryError {
    match e.code() {
        Some(code) if code.code().starts_with("23") => GalleryError::InvalidBackup(e.to_string()),
        _ => e.into(),
    }
}
