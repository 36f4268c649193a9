//! Recent faces in the PostgreSQL store (see `gallery::recent`): every node adds the faces
//! it saw to the shared table, and lists all of them. Not in the change log: no index holds
//! them.

use super::PostgresGallery;
use postgres::Row;

use crate::gallery::recent::{
    self, QualityColumns, RecentBounds, RecentFace, RecentFaces, RecentSample, SeenFace,
    StrangerGroup,
};
use crate::gallery::sqlite::schema::encode_embedding;
use crate::gallery::strangers::StrangerGroups;
use crate::gallery::{now_ms, GalleryError};

impl PostgresGallery {
    /// Stores `faces`, unknown ones in stranger `groups` (brought up to date first, with the
    /// faces other nodes stored), and applies `bounds`, in one transaction; how many the
    /// bounds removed.
    pub fn record_recent(
        &self,
        faces: &[SeenFace],
        bounds: &RecentBounds,
        groups: &mut StrangerGroups,
    ) -> Result<usize, GalleryError> {
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            let kept: Vec<i64> = tx
                .query(recent::KEPT_GROUPS, &[])?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let stored = tx
                .query(recent::GROUPED_SINCE, &[&groups.seen_up_to()])?
                .iter()
                .map(|row| recent::grouped(row.get(0), row.get(1), row.get(2)))
                .collect::<Result<Vec<_>, _>>()?;
            groups.catch_up(&kept, stored);
            let insert = tx.prepare(recent::INSERT)?;
            for SeenFace {
                sighting: f,
                embedding,
                model,
                crop,
            } in faces
            {
                let placement = groups.place(f.userid.as_deref(), embedding);
                let q = QualityColumns::of(f.quality.as_ref());
                let face_px = q.face_px.map(|px| px.clamp(0, i64::from(i32::MAX)) as i32);
                let id: i64 = tx
                    .query_one(
                        &insert,
                        &[
                            &f.seen_at,
                            &f.camera,
                            &f.userid,
                            &f64::from(f.confidence),
                            &f64::from(f.det_score),
                            &i64::from(f.bbox.x_min),
                            &i64::from(f.bbox.y_min),
                            &i64::from(f.bbox.x_max),
                            &i64::from(f.bbox.y_max),
                            &encode_embedding(embedding),
                            model,
                            crop,
                            &placement.group_id(),
                            &q.score,
                            &face_px,
                            &q.sharpness,
                            &q.yaw,
                            &q.pitch,
                        ],
                    )?
                    .get(0);
                if groups.placed(id, placement, embedding) {
                    tx.execute(recent::START_GROUP, &[&id])?;
                }
            }
            let pruned = tx.execute(recent::PRUNE_OLD, &[&bounds.cutoff_ms(now_ms())])?
                + tx.execute(recent::PRUNE_COUNT, &[&bounds.max_faces_i64()])?;
            tx.commit()?;
            Ok(pruned as usize)
        })
    }

    /// Up to `limit` faces with an id below `before`, newest first, and how many are kept.
    pub fn recent_faces(
        &self,
        before: i64,
        limit: usize,
        group: Option<i64>,
    ) -> Result<(Vec<RecentFace>, usize), GalleryError> {
        self.with_client(|client| {
            let faces = client
                .query(recent::LIST, &[&before, &group, &(limit as i64)])?
                .iter()
                .map(|row| {
                    recent::listed(
                        row.get(0),
                        row.get(1),
                        row.get(2),
                        row.get(3),
                        row.get(4),
                        row.get(5),
                        [row.get(6), row.get(7), row.get(8), row.get(9)],
                        row.get(10),
                        quality_columns(row, 11),
                    )
                })
                .collect();
            let total: i64 = client.query_one(recent::COUNT, &[&group])?.get(0);
            Ok((faces, total as usize))
        })
    }

    /// The JPEG crop of a recent face, `None` if there is no such face.
    pub fn recent_crop(&self, id: i64) -> Result<Option<Vec<u8>>, GalleryError> {
        self.with_client(|client| {
            Ok(client
                .query_opt(recent::CROP, &[&id])?
                .map(|row| row.get(0)))
        })
    }

    /// Deletes one recent face (`Some(id)`) or all; how many were deleted.
    pub fn delete_recent(&self, id: Option<i64>) -> Result<usize, GalleryError> {
        self.with_client(|client| {
            let n = match id {
                Some(id) => client.execute(recent::DELETE_ONE, &[&id])?,
                None => client.execute(recent::DELETE_ALL, &[])?,
            };
            Ok(n as usize)
        })
    }

    /// The recent faces `which` names, as samples, oldest first (none: no such faces).
    pub fn recent_samples(&self, which: RecentFaces) -> Result<Vec<RecentSample>, GalleryError> {
        let (sql, id) = match which {
            RecentFaces::Group(group) => (recent::AS_SAMPLES_OF_GROUP, group),
            RecentFaces::Face(id) => (recent::AS_SAMPLE, id),
        };
        self.with_client(|client| {
            client
                .query(sql, &[&id])?
                .iter()
                .map(|row| {
                    recent::as_sample(
                        row.get(0),
                        row.get(1),
                        row.get(2),
                        row.get(3),
                        row.get(4),
                        quality_columns(row, 5),
                        row.get(10),
                    )
                })
                .collect()
        })
    }

    /// Deletes the faces of stranger group `group`; how many were deleted.
    pub fn delete_recent_group(&self, group: i64) -> Result<usize, GalleryError> {
        self.with_client(|client| Ok(client.execute(recent::DELETE_GROUP, &[&group])? as usize))
    }

    /// Up to `limit` stranger groups last seen before `before`, the most recently seen
    /// first, and how many groups there are.
    pub fn recent_groups(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<(Vec<StrangerGroup>, usize), GalleryError> {
        self.with_client(|client| {
            let groups = client
                .query(recent::GROUPS, &[&before, &(limit as i64)])?
                .iter()
                .map(|row| StrangerGroup {
                    group: row.get(0),
                    faces: row.get(1),
                    first_seen: row.get(2),
                    last_seen: row.get(3),
                    cover: row.get(4),
                })
                .collect();
            let total: i64 = client.query_one(recent::COUNT_GROUPS, &[])?.get(0);
            Ok((groups, total as usize))
        })
    }
}

/// The quality columns starting at `at` (score, face_px, sharpness, yaw, pitch).
fn quality_columns(row: &Row, at: usize) -> QualityColumns {
    QualityColumns {
        score: row.get(at),
        face_px: row.get::<_, Option<i32>>(at + 1).map(i64::from),
        sharpness: row.get(at + 2),
        yaw: row.get(at + 3),
        pitch: row.get(at + 4),
    }
}
