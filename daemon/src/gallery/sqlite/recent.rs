//! Recent faces in the SQLite store (see `gallery::recent`).

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{schema, SqliteGallery};
use crate::gallery::recent::{
    self, QualityColumns, RecentBounds, RecentFace, RecentFaces, RecentSample, SeenFace,
    StrangerGroup,
};
use crate::gallery::strangers::StrangerGroups;
use crate::gallery::{now_ms, GalleryError};

impl SqliteGallery {
    /// Stores `faces`, unknown ones in stranger `groups` (brought up to date first), and
    /// applies `bounds`, in one transaction (one fsync for the batch). Returns how many faces
    /// the bounds removed.
    pub fn record_recent(
        &self,
        faces: &[SeenFace],
        bounds: &RecentBounds,
        groups: &mut StrangerGroups,
    ) -> Result<usize, GalleryError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let kept: Vec<i64> = tx
                .prepare_cached(recent::KEPT_GROUPS)?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut since = tx.prepare_cached(recent::GROUPED_SINCE)?;
            let stored = since
                .query_map([groups.seen_up_to()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get::<_, Vec<u8>>(2)?))
                })?
                .map(|row| {
                    let (id, group, bytes) = row?;
                    recent::grouped(id, group, &bytes)
                })
                .collect::<Result<Vec<_>, GalleryError>>()?;
            groups.catch_up(&kept, stored);

            let mut insert = tx.prepare_cached(recent::INSERT)?;
            let mut start = tx.prepare_cached(recent::START_GROUP)?;
            for SeenFace {
                sighting: f,
                embedding,
                model,
                crop,
            } in faces
            {
                let placement = groups.place(f.userid.as_deref(), embedding);
                let q = QualityColumns::of(f.quality.as_ref());
                let id: i64 = insert.query_row(
                    params![
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
                        placement.group_id(),
                        q.score,
                        q.face_px,
                        q.sharpness,
                        q.yaw,
                        q.pitch,
                    ],
                    |row| row.get(0),
                )?;
                if groups.placed(id, placement, embedding) {
                    start.execute([id])?;
                }
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
        group: Option<i64>,
    ) -> Result<(Vec<RecentFace>, usize), GalleryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(recent::LIST)?;
        let rows = stmt.query_map(params![before, group, limit as i64], |row| {
            Ok(recent::listed(
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                [row.get(6)?, row.get(7)?, row.get(8)?, row.get(9)?],
                row.get(10)?,
                quality_columns(row, 11)?,
            ))
        })?;
        let faces = rows.collect::<Result<_, _>>()?;
        let total: i64 = conn.query_row(recent::COUNT, [group], |row| row.get(0))?;
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

    /// The recent faces `which` names, as samples, oldest first (none: no such faces).
    pub fn recent_samples(&self, which: RecentFaces) -> Result<Vec<RecentSample>, GalleryError> {
        let conn = self.conn();
        let (sql, id) = match which {
            RecentFaces::Group(group) => (recent::AS_SAMPLES_OF_GROUP, group),
            RecentFaces::Face(id) => (recent::AS_SAMPLE, id),
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt
            .query_map([id], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    quality_columns(row, 5)?,
                    row.get(10)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, embedding, model, crop, det_score, q, answer)| {
                recent::as_sample(id, &embedding, model, crop, det_score, q, answer)
            })
            .collect()
    }

    /// Deletes the faces of stranger group `group`; how many were deleted.
    pub fn delete_recent_group(&self, group: i64) -> Result<usize, GalleryError> {
        Ok(self.conn().execute(recent::DELETE_GROUP, [group])?)
    }

    /// Up to `limit` stranger groups last seen before `before`, the most recently seen
    /// first, and how many groups there are.
    pub fn recent_groups(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<(Vec<StrangerGroup>, usize), GalleryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(recent::GROUPS)?;
        let groups = stmt
            .query_map(params![before, limit as i64], |row| {
                Ok(StrangerGroup {
                    group: row.get(0)?,
                    faces: row.get(1)?,
                    first_seen: row.get(2)?,
                    last_seen: row.get(3)?,
                    cover: row.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let total: i64 = conn.query_row(recent::COUNT_GROUPS, [], |row| row.get(0))?;
        Ok((groups, total as usize))
    }
}

/// The quality columns starting at `at` (score, face_px, sharpness, yaw, pitch).
fn quality_columns(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<QualityColumns> {
    Ok(QualityColumns {
        score: row.get(at)?,
        face_px: row.get(at + 1)?,
        sharpness: row.get(at + 2)?,
        yaw: row.get(at + 3)?,
        pitch: row.get(at + 4)?,
    })
}

/// Deletes the recent faces `ids` inside a registration's transaction; one already gone
/// fails it (and so rolls the registration back).
pub(super) fn consume(tx: &rusqlite::Transaction<'_>, ids: &[i64]) -> Result<(), GalleryError> {
    let mut delete = tx.prepare_cached(recent::DELETE_ONE)?;
    for &id in ids {
        if delete.execute([id])? != 1 {
            return Err(GalleryError::RecentFaceGone(id));
        }
    }
    Ok(())
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
                quality: None,
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
        let mut groups = StrangerGroups::default();
        for h in 0..36 {
            let batch: Vec<_> = (0..6)
                .map(|i| seen(start + h * hour + i * hour / 6))
                .collect();
            pruned += gallery.record_recent(&batch, &day, &mut groups).unwrap();
        }
        let (faces, total) = gallery.recent_faces(i64::MAX, 1_000, None).unwrap();
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
        gallery.record_recent(&[], &few, &mut groups).unwrap();
        let (kept, total) = gallery.recent_faces(i64::MAX, 1_000, None).unwrap();
        assert_eq!(total, 10);
        assert_eq!(kept[..], faces[..10]);
    }

    /// A face of unit embedding along `axis`, unknown or named.
    fn face_along(axis: usize, userid: Option<&str>) -> SeenFace {
        let mut face = seen(now_ms());
        face.embedding = vec![0.0; EMBEDDING_DIM];
        face.embedding[axis] = 1.0;
        face.sighting.userid = userid.map(str::to_owned);
        face
    }

    #[test]
    fn unknown_faces_are_grouped_by_stranger_and_groups_outlive_the_recorder() {
        let dir = tempfile::tempdir().unwrap();
        let gallery = SqliteGallery::open(dir.path()).unwrap();
        let bounds = RecentBounds {
            keep_for: Duration::from_secs(3600),
            max_faces: 1_000,
        };
        let mut groups = StrangerGroups::default();
        let batch = [
            face_along(0, None),
            face_along(1, None),
            face_along(0, Some("alice")),
            face_along(0, None),
        ];
        gallery.record_recent(&batch, &bounds, &mut groups).unwrap();
        let listed = |group| {
            let (faces, total) = gallery.recent_faces(i64::MAX, 100, group).unwrap();
            assert_eq!(faces.len(), total);
            let mut v: Vec<(i64, Option<i64>)> = faces.iter().map(|f| (f.id, f.group)).collect();
            v.reverse();
            v
        };
        let all = listed(None);
        let first = all[0].0;
        // Group ids are the ids of the groups' first faces; the named face has none.
        assert_eq!(
            all,
            [
                (first, Some(first)),
                (first + 1, Some(first + 1)),
                (first + 2, None),
                (first + 3, Some(first)),
            ]
        );
        assert_eq!(
            listed(Some(first)),
            [(first, Some(first)), (first + 3, Some(first))]
        );
        assert_eq!(listed(Some(-5)), []);

        // A recorder started later (a restart) learns the groups from the store.
        let mut restarted = StrangerGroups::default();
        gallery
            .record_recent(&[face_along(1, None)], &bounds, &mut restarted)
            .unwrap();
        assert_eq!(listed(None).last(), Some(&(first + 4, Some(first + 1))));

        // A group whose faces are all deleted is forgotten: the same stranger starts anew.
        for id in [first + 1, first + 4] {
            assert_eq!(gallery.delete_recent(Some(id)).unwrap(), 1);
        }
        gallery
            .record_recent(&[face_along(1, None)], &bounds, &mut restarted)
            .unwrap();
        assert_eq!(listed(None).last(), Some(&(first + 5, Some(first + 5))));
    }
}
