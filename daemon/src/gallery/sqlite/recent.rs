//! Recent faces in the SQLite store (see `gallery::recent`).

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{schema, SqliteGallery};
use crate::gallery::recent::{self, RecentBounds, RecentFace, SeenFace};
use crate::gallery::{now_ms, GalleryError};

impl SqliteGallery {
    /// Stores `faces` and applies `bounds`, in one transaction (one fsync for the batch).
    /// Returns how many faces the bounds removed.
    pub fn record_recent(
        &self,
        faces: &[SeenFace],
        bounds: &RecentBounds,
    ) -> Result<usize, GalleryError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(recent::INSERT)?;
            for SeenFace {
                sighting: f,
                embedding,
                model,
                crop,
            } in faces
            {
                insert.execute(params![
                    f.seen_at,
                    f.camera,
                    f.userid,
                    f64::from(f.confidence),
                    f64::from(f.det_score),
                    f.bbox.x_min,
                    f.bbox.y_min,
                    f.bbox.x_max,
                    f.bbox.y_max,
                    schema::encode_embedding(embedding),
                    model,
                    crop,
                ])?;
            }
        }
        let pruned = tx.execute(recent::PRUNE_OLD, [bounds.cutoff_ms(now_ms())])?
            + tx.execute(recent::PRUNE_COUNT, [bounds.max_faces_i64()])?;
        tx.commit()?;
        Ok(pruned)
    }

    /// Up to `limit` faces with an id below `before`, newest first, and how many are kept.
    pub fn recent_faces(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<(Vec<RecentFace>, usize), GalleryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(recent::LIST)?;
        let rows = stmt.query_map(params![before, limit as i64], |row| {
            Ok(recent::listed(
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                [row.get(6)?, row.get(7)?, row.get(8)?, row.get(9)?],
            ))
        })?;
        let faces = rows.collect::<Result<_, _>>()?;
        let total: i64 = conn.query_row(recent::COUNT, [], |row| row.get(0))?;
        Ok((faces, total as usize))
    }

    /// The JPEG crop of a recent face, `None` if there is no such face.
    pub fn recent_crop(&self, id: i64) -> Result<Option<Vec<u8>>, GalleryError> {
        let conn = self.conn();
        Ok(conn
            .query_row(recent::CROP, [id], |row| row.get(0))
            .optional()?)
    }

    /// Deletes one recent face (`Some(id)`) or all; how many were deleted.
    pub fn delete_recent(&self, id: Option<i64>) -> Result<usize, GalleryError> {
        let conn = self.conn();
        Ok(match id {
            Some(id) => conn.execute(recent::DELETE_ONE, [id])?,
            None => conn.execute(recent::DELETE_ALL, [])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::gallery::{FaceBox, Sighting, EMBEDDING_DIM};

    fn seen(seen_at: i64) -> SeenFace {
        let mut embedding = vec![0.0; EMBEDDING_DIM];
        embedding[0] = 1.0;
        SeenFace {
            sighting: Sighting {
                seen_at,
                camera: Some("door".into()),
                userid: None,
                confidence: 0.0,
                det_score: 0.9,
                bbox: FaceBox {
                    y_min: 1,
                    x_min: 2,
                    y_max: 30,
                    x_max: 40,
                },
            },
            embedding,
            model: "m".into(),
            crop: vec![0xff, 0xd8],
        }
    }

    #[test]
    fn faces_past_the_retention_or_the_count_are_deleted_as_batches_come() {
        let dir = tempfile::tempdir().unwrap();
        let gallery = SqliteGallery::open(dir.path()).unwrap();
        let hour = 3_600_000;
        let day = RecentBounds {
            keep_for: Duration::from_secs(24 * 3600),
            max_faces: 1_000,
        };
        // A simulated day and a half at one face every 10 minutes, in batches of an hour.
        let start = now_ms() - 36 * hour + 60_000; // a minute of slack for the test itself
        let mut pruned = 0;
        for h in 0..36 {
            let batch: Vec<_> = (0..6)
                .map(|i| seen(start + h * hour + i * hour / 6))
                .collect();
            pruned += gallery.record_recent(&batch, &day).unwrap();
        }
        let (faces, total) = gallery.recent_faces(i64::MAX, 1_000).unwrap();
        assert_eq!(
            pruned,
            12 * 6,
            "the first 12 hours are past the 24 h retention"
        );
        assert_eq!(total, 24 * 6);
        assert!(faces
            .iter()
            .all(|f| f.sighting.seen_at >= now_ms() - 24 * hour));
        assert_eq!(faces[0].sighting.bbox, seen(0).sighting.bbox);
        assert_eq!(faces[0].sighting.camera.as_deref(), Some("door"));

        // The count bound keeps the newest.
        let few = RecentBounds {
            max_faces: 10,
            ..day
        };
        gallery.record_recent(&[], &few).unwrap();
        let (kept, total) = gallery.recent_faces(i64::MAX, 1_000).unwrap();
        assert_eq!(total, 10);
        assert_eq!(kept[..], faces[..10]);
    }
}
