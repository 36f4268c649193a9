//! The gallery API (ours, next to DeepStack's routes): list users and their samples, fetch a
//! sample's face crop, remove one sample or a user, rename or merge users; list, fetch and
//! forget the recent faces recognize saw. Documented in
//! `openapi.json` (served at `/openapi.json`).
//!
//! Keys: the API key from `X-Api-Key` or the `api_key` field, then `VISION-FACE`, as on the
//! face routes. Answers keep DeepStack's shape: `{"success": true, ..., "duration": 0}` or
//! the error body.

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::error::ApiError;
use super::faces::{check_new_userid, new_userid, success, Nothing};
use super::form::{FieldProblem, Form};
use super::jobs::{self, Skipped};
use super::AppState;
use crate::gallery::{
    RecentFace, RecentFaces, RegisterOutcome, RenameOutcome, SampleInfo, StrangerGroup, UserSummary,
};
use crate::vision::quality::Quality;

#[derive(Serialize)]
struct Users {
    users: Vec<UserSummary>,
}

#[derive(Serialize)]
struct Sample {
    id: i64,
    added_at: i64,
    source: String,
    det_score: f32,
    model: String,
    /// `null` for samples registered before quality was measured.
    quality: Option<Quality>,
    /// A negative sample: a face someone said was not this user.
    negative: bool,
}

impl From<SampleInfo> for Sample {
    fn from(s: SampleInfo) -> Sample {
        Sample {
            id: s.id,
            added_at: s.added_at,
            source: s.source,
            det_score: s.det_score,
            model: s.model,
            quality: s.quality,
            negative: s.negative,
        }
    }
}

#[derive(Serialize)]
struct Samples {
    userid: String,
    samples: Vec<Sample>,
}

#[derive(Serialize)]
struct Renamed {
    userid: String,
    merged: bool,
}

/// Runs a blocking gallery call off the async worker.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, crate::gallery::GalleryError> + Send + 'static,
    T: Send + 'static,
{
    Ok(web::block(f).await.map_err(ApiError::internal)??)
}

/// GET /v1/gallery/users: every user with its sample count and dates.
pub async fn users(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let gallery = state.gallery.clone();
    let users = blocking(move || gallery.user_summaries()).await?;
    Ok(success(Users { users }, 0))
}

/// GET /v1/gallery/users/{userid}/samples: one user's samples, oldest first.
pub async fn samples(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    userid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let userid = userid.into_inner();
    let gallery = state.gallery.clone();
    let (known, infos) = {
        let userid = userid.clone();
        blocking(move || Ok((gallery.has_user(&userid)?, gallery.user_samples(&userid)?))).await?
    };
    if !known {
        return Err(ApiError::UnknownUserid);
    }
    let samples = infos.into_iter().map(Sample::from).collect();
    Ok(success(Samples { userid, samples }, 0))
}

/// GET /v1/gallery/samples/{id}/crop.jpg: the aligned 112x112 face crop of a sample.
pub async fn crop(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let id = sample_id(&id)?;
    let gallery = state.gallery.clone();
    let crop = blocking(move || gallery.sample_crop(id))
        .await?
        .ok_or(ApiError::UnknownSample)?;
    Ok(jpeg(crop))
}

/// A face crop's answer. A face is personal data: no shared cache keeps it. Sample and
/// recent face ids are never reused, so the browser's own copy stays right.
fn jpeg(crop: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header(CacheControl(vec![
            CacheDirective::Private,
            CacheDirective::MaxAge(3600),
        ]))
        .body(crop)
}

/// DELETE /v1/gallery/samples/{id}: removes one sample (the user stays).
pub async fn delete_sample(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let id = sample_id(&id)?;
    let gallery = state.gallery.clone();
    if !blocking(move || gallery.delete_sample(id)).await? {
        return Err(ApiError::UnknownSample);
    }
    Ok(success(Nothing {}, 0))
}

/// DELETE /v1/gallery/users/{userid}: removes a user and all its samples.
pub async fn delete_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    userid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let gallery = state.gallery.clone();
    let userid = userid.into_inner();
    if !blocking(move || gallery.delete_user(&userid)).await? {
        return Err(ApiError::UnknownUserid);
    }
    Ok(success(Nothing {}, 0))
}

/// POST /v1/gallery/users/{userid}/rename, fields `to` and `merge` (`true` to merge into an
/// existing user; without it, an existing `to` is refused with 409).
pub async fn rename(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    userid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let to = match form.field_checked("to") {
        None | Some(Ok("")) => return Err(ApiError::NoUserid),
        Some(Ok(to)) => to.to_owned(),
        Some(Err(FieldProblem::NotUtf8)) => {
            return Err(ApiError::InvalidUserid {
                reason: "not valid UTF-8".into(),
            })
        }
        Some(Err(FieldProblem::TooLong { limit })) => {
            return Err(ApiError::InvalidUserid {
                reason: format!("longer than {limit} bytes (MAX_FIELD_BYTES)"),
            })
        }
    };
    let to = check_new_userid(to, state.limits.max_userid_bytes)?;
    let merge = matches!(form.field("merge"), Some("true" | "1"));
    let gallery = state.gallery.clone();
    let from = userid.into_inner();
    let target = to.clone();
    let outcome = blocking(move || gallery.rename_user(&from, &target, merge)).await?;
    Ok(success(
        Renamed {
            userid: to,
            merged: outcome == RenameOutcome::Merged,
        },
        0,
    ))
}

/// A sample id from the path; anything but a whole number is no sample.
fn sample_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| ApiError::UnknownSample)
}

/// Most recent faces one page lists.
const MAX_RECENT_PAGE: usize = 500;

#[derive(Serialize)]
struct RecentPage {
    /// Newest first.
    faces: Vec<RecentFace>,
    /// How many are kept in all (of the group asked for).
    total: usize,
    /// Whether recognize keeps the faces it sees (RECENT_FACES_HOURS > 0).
    recording: bool,
}

/// A page of a list: `limit` (default 100, at most [`MAX_RECENT_PAGE`]), `before` (what the
/// last item of the previous page gave), and for recent faces an optional `group`.
struct PageQuery {
    limit: usize,
    before: i64,
    group: Option<i64>,
}

impl PageQuery {
    fn parse(req: &HttpRequest) -> Result<PageQuery, ApiError> {
        let mut page = PageQuery {
            limit: 100,
            before: i64::MAX,
            group: None,
        };
        for (key, value) in req
            .query_string()
            .split('&')
            .filter_map(|p| p.split_once('='))
        {
            let bad = || ApiError::InvalidParameter {
                reason: format!("{key}: expected a whole number, got {value:?}"),
            };
            match key {
                "limit" => {
                    page.limit = value.parse().map_err(|_| bad())?;
                    if !(1..=MAX_RECENT_PAGE).contains(&page.limit) {
                        return Err(ApiError::InvalidParameter {
                            reason: format!("limit: from 1 to {MAX_RECENT_PAGE}"),
                        });
                    }
                }
                "before" => page.before = value.parse().map_err(|_| bad())?,
                "group" => page.group = Some(value.parse().map_err(|_| bad())?),
                _ => {}
            }
        }
        Ok(page)
    }
}

/// GET /v1/gallery/recent?limit=N&before=ID&group=G: the faces recognize saw, newest first,
/// `limit` of them with an id below `before` (the next page: the last id of this one), only
/// those of stranger group `G` if given.
pub async fn recent(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let page = PageQuery::parse(&req)?;
    let gallery = state.gallery.clone();
    let (faces, total) =
        blocking(move || gallery.recent_faces(page.before, page.limit, page.group)).await?;
    let recording = state.recent.is_some();
    Ok(success(
        RecentPage {
            faces,
            total,
            recording,
        },
        0,
    ))
}

#[derive(Serialize)]
struct StrangersPage {
    /// The most recently seen first.
    groups: Vec<StrangerGroup>,
    /// How many groups there are.
    total: usize,
}

/// GET /v1/gallery/strangers?limit=N&before=MS: the stranger groups of recent faces, the
/// most recently seen first, `limit` of them last seen before `before` (unix ms: the next
/// page starts at the last one's `last_seen`), each with its best face in `cover`.
pub async fn strangers(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let page = PageQuery::parse(&req)?;
    let gallery = state.gallery.clone();
    let (groups, total) = blocking(move || gallery.recent_groups(page.before, page.limit)).await?;
    Ok(success(StrangersPage { groups, total }, 0))
}

#[derive(Serialize)]
struct Named {
    /// "face added" (a new user) or "face updated", as registration says.
    message: &'static str,
    userid: String,
    /// Recent faces named (they left the recent faces).
    faces: usize,
    /// Samples stored: the faces good enough, at most MAX_FILES (the best).
    samples: usize,
    /// Faces refused, and why (at most MAX_FILES listed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<Skipped>,
}

/// POST /v1/gallery/strangers/{group}/name (field `userid`): "this is ...": the group's
/// faces become samples of that user, new or existing (see [`jobs::name_recent`]).
pub async fn name_stranger(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    group: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let group = group.parse().map_err(|_| ApiError::UnknownStranger)?;
    name_recent(state, req, form, RecentFaces::Group(group)).await
}

/// POST /v1/gallery/recent/{id}/name (field `userid`): one recent face becomes a sample.
pub async fn name_recent_face(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = recent_id(&id)?;
    name_recent(state, req, form, RecentFaces::Face(id)).await
}

async fn name_recent(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    which: RecentFaces,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let userid = new_userid(&form, state.limits.max_userid_bytes)?;
    let limits = state.limits.clone();
    let model = state.pool.pipeline().models().recognizer.sha256.clone();
    let gallery = state.gallery.clone();
    let target = userid.clone();
    let (done, faces) =
        web::block(move || jobs::name_recent(&gallery, which, &target, &limits, &model))
            .await
            .map_err(ApiError::internal)??;
    let message = match done.outcome {
        RegisterOutcome::Added => "face added",
        RegisterOutcome::Updated => "face updated",
    };
    Ok(success(
        Named {
            message,
            userid,
            faces,
            samples: done.samples,
            skipped: done.skipped,
        },
        0,
    ))
}

#[derive(Serialize)]
struct Rejected {
    message: &'static str,
    userid: String,
}

/// POST /v1/gallery/recent/{id}/not (field `userid`, by default the user the face was given
/// to): "not ...": the face becomes a negative sample of that user (see
/// [`jobs::reject_recent`]).
pub async fn reject_recent_face(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let id = recent_id(&id)?;
    let userid = match form.field_checked("userid") {
        None | Some(Ok("")) => None,
        Some(_) => Some(new_userid(&form, state.limits.max_userid_bytes)?),
    };
    let model = state.pool.pipeline().models().recognizer.sha256.clone();
    let gallery = state.gallery.clone();
    let userid = blocking(move || Ok(jobs::reject_recent(&gallery, id, userid, &model))).await??;
    Ok(success(
        Rejected {
            message: "negative sample added",
            userid,
        },
        0,
    ))
}

/// DELETE /v1/gallery/strangers/{group}: forgets every face of a stranger group.
pub async fn delete_stranger(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    group: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let group: i64 = group.parse().map_err(|_| ApiError::UnknownStranger)?;
    let gallery = state.gallery.clone();
    let deleted = blocking(move || gallery.delete_recent_group(group)).await?;
    if deleted == 0 {
        return Err(ApiError::UnknownStranger);
    }
    Ok(success(Deleted { deleted }, 0))
}

/// GET /v1/gallery/recent/{id}/crop.jpg: the aligned 112x112 crop of a recent face.
pub async fn recent_crop(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let id = recent_id(&id)?;
    let gallery = state.gallery.clone();
    let crop = blocking(move || gallery.recent_crop(id))
        .await?
        .ok_or(ApiError::UnknownRecentFace)?;
    Ok(jpeg(crop))
}

/// DELETE /v1/gallery/recent/{id}: forgets one recent face.
pub async fn delete_recent(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let id = recent_id(&id)?;
    let gallery = state.gallery.clone();
    if blocking(move || gallery.delete_recent(Some(id))).await? == 0 {
        return Err(ApiError::UnknownRecentFace);
    }
    Ok(success(Nothing {}, 0))
}

#[derive(Serialize)]
struct Deleted {
    deleted: usize,
}

/// DELETE /v1/gallery/recent: forgets every recent face.
pub async fn delete_all_recent(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
) -> Result<HttpResponse, ApiError> {
    state.access.gallery_route(&req, &form)?;
    let gallery = state.gallery.clone();
    let deleted = blocking(move || gallery.delete_recent(None)).await?;
    Ok(success(Deleted { deleted }, 0))
}

/// A recent face id from the path; anything but a whole number is no face.
fn recent_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| ApiError::UnknownRecentFace)
}
