//! Recent faces over real HTTP: the real `deepstackd`, real photos, a real SQLite file. What
//! recognize saw is kept (named and unknown, with the camera field), listed newest first in
//! pages, its crops served, forgotten one by one or all, bounded by RECENT_FACES_MAX, off
//! with RECENT_FACES_HOURS=0, kept across a restart and left out of backups; unknown faces
//! grouped by stranger.

mod common;
#[path = "api/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::routes::*;
use harness::{fields, ok, Body, Daemon, Multipart, Server};
use serde_json::{json, Value};

const FACES_ON: (&str, &str) = ("VISION-FACE", "True");
const RECENT: &str = "/v1/gallery/recent";
const STRANGERS: &str = "/v1/gallery/strangers";

fn recognize(d: &Daemon, photo: &str, camera: Option<&str>) -> Value {
    let mut form = Multipart::new().file("image", &common::photo_bytes(photo));
    if let Some(camera) = camera {
        form = form.text("camera", camera);
    }
    ok(d.post(RECOGNIZE, &form.body()))
}

fn recent(d: &Daemon, query: &str) -> Value {
    ok(d.get(&format!("{RECENT}{query}")))
}

/// The recent faces once `done` holds for them (they are stored off the request path, within
/// about a second); panics after 10 s.
fn recent_when(d: &Daemon, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let page = recent(d, "");
        if done(&page) {
            return page;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "recent faces never got there: {page}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn recognize_keeps_what_it_saw_and_the_api_lists_serves_and_forgets_it() {
    let d = Server::start(&[FACES_ON]);
    let form = Multipart::new()
        .file("image", &common::photo_bytes("obama.jpg"))
        .text("userid", "Barack Obama");
    ok(d.post(REGISTER, &form.body()));
    assert_eq!(recent(&d, "")["total"], json!(0));

    let named = recognize(&d, "obama2.jpg", Some("front door\u{7}"));
    let named = &named["predictions"][0];
    assert_eq!(named["userid"], json!("Barack Obama"));
    let stranger = recognize(&d, "biden.jpg", None);
    let stranger = &stranger["predictions"][0];
    assert_eq!(stranger["userid"], json!("unknown"));

    let page = recent_when(&d, |p| p["total"] == json!(2));
    assert_eq!(page["recording"], json!(true));
    assert_eq!(
        d.status()["recent_faces"],
        json!({"recording": true, "dropped": 0})
    );
    let faces = page["faces"].as_array().unwrap();
    // Newest first: the stranger, then the named face, as recognize answered them.
    assert_eq!(faces[0]["userid"], Value::Null);
    assert_eq!(faces[0]["camera"], Value::Null);
    assert_eq!(faces[1]["userid"], json!("Barack Obama"));
    assert_eq!(
        faces[1]["camera"],
        json!("front door"),
        "control character dropped"
    );
    let close = |a: &Value, b: &Value| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-6;
    assert!(
        close(&faces[1]["confidence"], &named["confidence"]),
        "{page}"
    );
    for (face, answer) in [(&faces[0], stranger), (&faces[1], named)] {
        for corner in ["x_min", "y_min", "x_max", "y_max"] {
            assert_eq!(face["bbox"][corner], answer[corner], "{corner}: {page}");
        }
        assert!(face["det_score"].as_f64().unwrap() > 0.5, "{page}");
    }
    let (newest, older) = (
        faces[0]["id"].as_i64().unwrap(),
        faces[1]["id"].as_i64().unwrap(),
    );
    assert!(newest > older);

    // The crop is the aligned face.
    let crop = d.get(&format!("{RECENT}/{older}/crop.jpg"));
    assert_eq!(crop.status, 200);
    assert_eq!(crop.header("content-type"), Some("image/jpeg"));
    let img = image::load_from_memory(&crop.body).unwrap();
    assert_eq!((img.width(), img.height()), (112, 112));

    // Pages.
    let first = recent(&d, "?limit=1");
    assert_eq!(first["faces"].as_array().unwrap().len(), 1);
    assert_eq!(first["faces"][0]["id"], json!(newest));
    let next = recent(&d, &format!("?limit=1&before={newest}"));
    assert_eq!(next["faces"][0]["id"], json!(older));
    for bad in ["?limit=0", "?limit=501", "?limit=ten", "?before=x"] {
        let res = d.get(&format!("{RECENT}{bad}"));
        assert_eq!(res.status, 400, "{bad}");
        assert_eq!(res.json()["error"], json!("invalid parameter"), "{bad}");
        assert!(res.json()["reason"].is_string(), "{bad}");
    }

    // A backup holds the gallery, not who walked past.
    let backup = d.post(BACKUP, &fields(&[]).body());
    assert_eq!(backup.status, 200);
    let file = d.tmp.path().join("backup.sqlite3");
    std::fs::write(&file, &backup.body).unwrap();
    let db = rusqlite::Connection::open(&file).unwrap();
    let kept: i64 = db
        .query_row("SELECT count(*) FROM recent_faces", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 0);
    drop(db);

    // Forgetting one.
    assert_eq!(
        d.request("DELETE", &format!("{RECENT}/{newest}"), &Body::Empty)
            .unwrap()
            .status,
        200
    );
    for res in [
        d.request("DELETE", &format!("{RECENT}/{newest}"), &Body::Empty)
            .unwrap(),
        d.get(&format!("{RECENT}/{newest}/crop.jpg")),
    ] {
        assert_eq!(res.status, 404);
        assert_eq!(res.json()["error"], json!("face not found"));
    }

    // What is kept survives a restart; then everything is forgotten at once.
    let data_dir = d.data_dir();
    let Server { daemon, tmp } = d;
    assert!(daemon.terminate().success());
    let d = Daemon::start(&data_dir, &[FACES_ON]);
    let page = recent(&d, "");
    assert_eq!(page["total"], json!(1));
    assert_eq!(page["faces"][0]["id"], json!(older));
    let cleared = ok(d.request("DELETE", RECENT, &Body::Empty).unwrap());
    assert_eq!(cleared["deleted"], json!(1));
    assert_eq!(recent(&d, "")["total"], json!(0));
    drop(tmp);
}

#[test]
fn recent_faces_max_keeps_the_newest_and_zero_hours_keeps_none() {
    let d = Server::start(&[FACES_ON, ("RECENT_FACES_MAX", "3")]);
    // Two photos of four faces: eight seen, the newest three kept (ids are never reused,
    // so the newest is the eighth).
    recognize(&d, "group_1280x720.jpg", None);
    recognize(&d, "group_1280x720.jpg", Some("hall"));
    let page = recent_when(&d, |p| p["faces"][0]["id"] == json!(8));
    assert_eq!(page["total"], json!(3), "{page}");
    let ids: Vec<i64> = page["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [8, 7, 6]);
    assert!(page["faces"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["camera"] == json!("hall")));

    let off = Server::start(&[FACES_ON, ("RECENT_FACES_HOURS", "0")]);
    recognize(&off, "group_1280x720.jpg", None);
    std::thread::sleep(Duration::from_secs(2));
    let page = recent(&off, "");
    assert_eq!(
        (&page["total"], &page["recording"]),
        (&json!(0), &json!(false))
    );
}

#[test]
fn unknown_faces_of_one_stranger_share_a_group_shown_by_its_best_face_and_forgotten_together() {
    let d = Server::start(&[FACES_ON]);
    // Nobody is registered: every face is a stranger. Three photos of one man, one of another,
    // arriving mixed.
    for photo in ["obama.jpg", "biden.jpg", "obama2.jpg", "obama3.jpg"] {
        let answer = recognize(&d, photo, None);
        assert_eq!(
            answer["predictions"][0]["userid"],
            json!("unknown"),
            "{photo}"
        );
    }
    let page = recent_when(&d, |p| p["total"] == json!(4));
    let faces: Vec<(i64, i64)> = page["faces"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|f| (f["id"].as_i64().unwrap(), f["group"].as_i64().unwrap()))
        .collect();
    let (obama, biden) = (faces[0].0, faces[1].0);
    // A group is named by its first face.
    assert_eq!(
        faces.iter().map(|f| f.1).collect::<Vec<_>>(),
        [obama, biden, obama, obama],
        "{page}"
    );

    let group = recent(&d, &format!("?group={obama}"));
    assert_eq!(group["total"], json!(3));
    let ids: Vec<i64> = group["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [faces[3].0, faces[2].0, obama]);
    assert_eq!(recent(&d, &format!("?group={biden}"))["total"], json!(1));
    assert_eq!(recent(&d, "?group=999999")["total"], json!(0));
    let res = d.get(&format!("{RECENT}?group=obama"));
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"], json!("invalid parameter"));

    // The groups, the most recently seen first, each with its best face in front.
    let strangers = ok(d.get(STRANGERS));
    assert_eq!(strangers["total"], json!(2), "{strangers}");
    let groups = strangers["groups"].as_array().unwrap();
    assert_eq!(groups[0]["group"], json!(obama));
    assert_eq!(groups[0]["faces"], json!(3));
    assert_eq!(groups[1]["group"], json!(biden));
    assert_eq!(groups[1]["cover"], json!(biden));
    let quality = |id: i64| {
        page["faces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == json!(id))
            .and_then(|f| f["quality"]["score"].as_f64())
            .unwrap()
    };
    let best = [faces[0].0, faces[2].0, faces[3].0]
        .into_iter()
        .max_by(|a, b| quality(*a).total_cmp(&quality(*b)).then(a.cmp(b)))
        .unwrap();
    assert!(quality(best) > 0.0 && quality(best) <= 1.0, "{page}");
    assert_eq!(groups[0]["cover"], json!(best), "{page}");
    let seen = |g: &Value, k: &str| g[k].as_i64().unwrap();
    assert!(seen(&groups[0], "first_seen") < seen(&groups[0], "last_seen"));
    assert!(seen(&groups[1], "last_seen") < seen(&groups[0], "last_seen"));
    let next = ok(d.get(&format!(
        "{STRANGERS}?limit=1&before={}",
        seen(&groups[0], "last_seen")
    )));
    assert_eq!(next["groups"][0]["group"], json!(biden), "{next}");

    // Forgetting a stranger forgets all of their faces.
    let forgotten = ok(d
        .request("DELETE", &format!("{STRANGERS}/{biden}"), &Body::Empty)
        .unwrap());
    assert_eq!(forgotten["deleted"], json!(1));
    for path in [format!("{STRANGERS}/{biden}"), format!("{STRANGERS}/x")] {
        let res = d.request("DELETE", &path, &Body::Empty).unwrap();
        assert_eq!(res.status, 404, "{path}");
        assert_eq!(res.json()["error"], json!("group not found"), "{path}");
    }
    assert_eq!(recent(&d, "")["total"], json!(3));
    assert_eq!(ok(d.get(STRANGERS))["total"], json!(1));

    // A registered face is named, not grouped.
    let form = Multipart::new()
        .file("image", &common::photo_bytes("obama.jpg"))
        .text("userid", "Barack Obama");
    ok(d.post(REGISTER, &form.body()));
    recognize(&d, "obama2.jpg", None);
    let page = recent_when(&d, |p| p["total"] == json!(4));
    assert_eq!(page["faces"][0]["userid"], json!("Barack Obama"));
    assert_eq!(page["faces"][0]["group"], Value::Null);
}

/// A photo blurred so much that its face scores under MIN_FACE_QUALITY (0.30).
fn blurred(name: &str) -> Vec<u8> {
    let img = image::load_from_memory(&common::photo_bytes(name))
        .unwrap()
        .blur(8.0);
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn name(d: &Daemon, path: &str, userid: &str) -> harness::Response {
    d.post(path, &fields(&[("userid", userid)]).body())
}

#[test]
fn naming_a_stranger_turns_the_faces_into_samples_in_one_step() {
    // MAX_FILES=2: a group gives at most as many samples as one registration could send.
    let d = Server::start(&[FACES_ON, ("MAX_FILES", "2")]);
    for photo in ["obama.jpg", "obama2.jpg", "obama3.jpg"] {
        recognize(&d, photo, Some("door"));
    }
    let page = recent_when(&d, |p| p["total"] == json!(3));
    let group = page["faces"][0]["group"].as_i64().unwrap();
    assert!(page["faces"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["group"] == json!(group) && f["quality"]["score"].as_f64() > Some(0.3)));

    // Checked before anything is read: the userid as registration checks it, the group.
    let res = d.post(&format!("{STRANGERS}/{group}/name"), &fields(&[]).body());
    assert_eq!(
        (res.status, res.json()["error"].clone()),
        (400, json!("userid not specified")),
        "{}",
        res.text()
    );
    for path in [
        format!("{STRANGERS}/999999/name"),
        format!("{STRANGERS}/x/name"),
    ] {
        let res = name(&d, &path, "Barack Obama");
        assert_eq!(res.status, 404, "{path}");
        assert_eq!(res.json()["error"], json!("group not found"), "{path}");
    }

    // "This is Barack Obama": the best two faces become samples of a new user, and all three
    // leave the recent faces.
    let named = ok(name(
        &d,
        &format!("{STRANGERS}/{group}/name"),
        "Barack Obama",
    ));
    assert_eq!(named["message"], json!("face added"), "{named}");
    assert_eq!(
        (&named["faces"], &named["samples"]),
        (&json!(3), &json!(2)),
        "{named}"
    );
    assert_eq!(named["userid"], json!("Barack Obama"));
    assert_eq!(recent(&d, "")["total"], json!(0));
    assert_eq!(ok(d.get(STRANGERS))["total"], json!(0));
    let kept = ok(d.get("/v1/gallery/users/Barack%20Obama/samples"));
    let score = |q: &Value| q["quality"]["score"].as_f64().unwrap();
    let mut kept: Vec<f64> = kept["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(score)
        .collect();
    let mut seen: Vec<f64> = page["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(score)
        .collect();
    kept.sort_by(f64::total_cmp);
    seen.sort_by(f64::total_cmp);
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
    assert!(close(&kept, &seen[1..]), "kept {kept:?} of {seen:?}");
    let answer = recognize(&d, "obama_1280x720.jpg", None);
    assert_eq!(answer["predictions"][0]["userid"], json!("Barack Obama"));

    // One face, onto an existing user: "face updated". Then it is gone.
    recognize(&d, "biden.jpg", None);
    // Kept: the named face of the 720p photo, then this one.
    let page = recent_when(&d, |p| p["total"] == json!(2));
    assert_eq!(page["faces"][0]["userid"], Value::Null, "{page}");
    let biden = page["faces"][0]["id"].as_i64().unwrap();
    ok(d.post(
        REGISTER,
        &Multipart::new()
            .file("image", &common::photo_bytes("biden.jpg"))
            .text("userid", "Joe Biden")
            .body(),
    ));
    let named = ok(name(&d, &format!("{RECENT}/{biden}/name"), "Joe Biden"));
    assert_eq!(named["message"], json!("face updated"), "{named}");
    assert_eq!(named["samples"], json!(1));
    let res = name(&d, &format!("{RECENT}/{biden}/name"), "Joe Biden");
    assert_eq!(res.status, 404);
    assert_eq!(res.json()["error"], json!("face not found"));

    // A face under MIN_FACE_QUALITY is refused as registration refuses it, and stays.
    let blurry = Multipart::new().file("image", &blurred("biden.jpg"));
    let answer = ok(d.post(RECOGNIZE, &blurry.body()));
    assert_eq!(
        answer["predictions"].as_array().unwrap().len(),
        1,
        "{answer}"
    );
    let page = recent_when(&d, |p| p["total"] == json!(2));
    let weak = &page["faces"][0];
    assert!(weak["quality"]["score"].as_f64() < Some(0.3), "{page}");
    let res = name(&d, &format!("{RECENT}/{}/name", weak["id"]), "Joe Biden");
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(res.json()["error"], json!("no face detected"));
    assert!(
        res.json()["reason"]
            .as_str()
            .unwrap()
            .contains("below MIN_FACE_QUALITY"),
        "{}",
        res.text()
    );
    assert_eq!(recent(&d, "")["faces"][0]["id"], weak["id"]);

    // The samples outlive a restart, as any registration's.
    let data_dir = d.data_dir();
    let Server { daemon, tmp } = d;
    assert!(daemon.terminate().success());
    let d = Daemon::start(&data_dir, &[FACES_ON]);
    let users = ok(d.get("/v1/gallery/users"));
    assert_eq!(users["users"].as_array().unwrap().len(), 2, "{users}");
    drop(tmp);
}

fn recognize_at(d: &Daemon, photo: &str, min_confidence: &str) -> Value {
    let form = Multipart::new()
        .file("image", &common::photo_bytes(photo))
        .text("min_confidence", min_confidence);
    ok(d.post(RECOGNIZE, &form.body()))
}

fn user_of(answer: &Value) -> Value {
    answer["predictions"][0]["userid"].clone()
}

#[test]
fn not_this_person_keeps_the_face_from_that_user_for_good() {
    let d = Server::start(&[FACES_ON]);
    ok(d.post(
        REGISTER,
        &Multipart::new()
            .file("image", &common::photo_bytes("obama.jpg"))
            .text("userid", "Barack Obama")
            .body(),
    ));
    // At min_confidence 0 anybody is given to the one user: Biden is named Obama.
    assert_eq!(
        user_of(&recognize_at(&d, "biden.jpg", "0")),
        json!("Barack Obama")
    );
    recognize(&d, "obama2.jpg", None);
    let page = recent_when(&d, |p| p["total"] == json!(2));
    let (obama2, biden) = (&page["faces"][0], &page["faces"][1]);
    assert_eq!(biden["userid"], json!("Barack Obama"), "{page}");

    // Checked before anything changes: the face, the user, whom an unknown face is not.
    let res = d.post(&format!("{RECENT}/999999/not"), &fields(&[]).body());
    assert_eq!(
        (res.status, res.json()["error"].clone()),
        (404, json!("face not found"))
    );
    let res = d.post(
        &format!("{RECENT}/{}/not", biden["id"]),
        &fields(&[("userid", "Nobody")]).body(),
    );
    assert_eq!(
        (res.status, res.json()["error"].clone()),
        (404, json!("userid not found")),
        "{}",
        res.text()
    );
    assert_eq!(recent(&d, "")["total"], json!(2));

    // "Not Barack Obama": the face becomes his negative sample and leaves the recent faces.
    let rejected = ok(d.post(
        &format!("{RECENT}/{}/not", biden["id"]),
        &fields(&[]).body(),
    ));
    assert_eq!(
        (&rejected["message"], &rejected["userid"]),
        (&json!("negative sample added"), &json!("Barack Obama")),
        "{rejected}"
    );
    assert_eq!(recent(&d, "")["faces"][0]["id"], obama2["id"]);
    assert_eq!(recent(&d, "")["total"], json!(1));
    let samples = ok(d.get("/v1/gallery/users/Barack%20Obama/samples"));
    let negatives: Vec<bool> = samples["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["negative"].as_bool().unwrap())
        .collect();
    assert_eq!(negatives, [false, true], "{samples}");
    let users = ok(d.get("/v1/gallery/users"));
    assert_eq!(
        (
            &users["users"][0]["samples"],
            &users["users"][0]["negatives"]
        ),
        (&json!(1), &json!(1)),
        "{users}"
    );

    // Biden is no longer given to him, even at 0; Obama's own photos still are, and the
    // DeepStack list still has one user.
    assert_eq!(
        user_of(&recognize_at(&d, "biden.jpg", "0")),
        json!("unknown")
    );
    assert_eq!(
        user_of(&recognize(&d, "obama_1280x720.jpg", None)),
        json!("Barack Obama")
    );
    let list = ok(d.post(LIST, &fields(&[]).body()));
    assert_eq!(list["faces"], json!(["Barack Obama"]));

    // A face given to nobody needs to be told whom it is not.
    let page = recent_when(&d, |p| p["total"] == json!(3));
    let unknown = page["faces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["userid"].is_null())
        .unwrap_or_else(|| panic!("{page}"))
        .clone();
    let res = d.post(
        &format!("{RECENT}/{}/not", unknown["id"]),
        &fields(&[]).body(),
    );
    assert_eq!(res.status, 400, "{}", res.text());

    // Across a restart the veto stands; deleting the negative sample lifts it.
    let data_dir = d.data_dir();
    let Server { daemon, tmp } = d;
    assert!(daemon.terminate().success());
    let d = Daemon::start(&data_dir, &[FACES_ON]);
    assert_eq!(
        user_of(&recognize_at(&d, "biden.jpg", "0")),
        json!("unknown")
    );
    let negative = samples["samples"][1]["id"].as_i64().unwrap();
    ok(d.request(
        "DELETE",
        &format!("/v1/gallery/samples/{negative}"),
        &Body::Empty,
    )
    .unwrap());
    assert_eq!(
        user_of(&recognize_at(&d, "biden.jpg", "0")),
        json!("Barack Obama")
    );
    drop(tmp);
}
