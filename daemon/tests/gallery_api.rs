//! The gallery API, the page's files and MIN_FACE_QUALITY over real HTTP: the real
//! `deepstackd` binary, real photos, a real SQLite file.

mod common;
#[path = "api/harness.rs"]
mod harness;

use harness::routes::*;
use harness::{ok, urlencoded, Body, Daemon, Multipart, Response, Server};
use serde_json::{json, Value};

const FACES_ON: (&str, &str) = ("VISION-FACE", "True");
const KEY: &str = "k3y";
const WITH_KEY: &[(&str, &str)] = &[("X-Api-Key", KEY)];

fn photo(name: &str) -> Vec<u8> {
    common::photo_bytes(name)
}

/// Percent-encodes a userid for a path segment.
fn segment(userid: &str) -> String {
    userid
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn user_path(userid: &str, rest: &str) -> String {
    format!("{GALLERY_USERS}/{}{rest}", segment(userid))
}

fn assert_error(res: &Response, status: u16, error: &str) {
    assert_eq!(
        (res.status, res.text()),
        (
            status,
            format!(r#"{{"success":false,"error":"{error}","duration":0}}"#)
        )
    );
}

fn register(d: &Daemon, userid: &str, photos: &[&str]) -> Value {
    let form = photos
        .iter()
        .fold(Multipart::new(), |m, p| m.file("image", &photo(p)))
        .texts(&[("userid", userid), ("api_key", KEY)]);
    d.post(REGISTER, &form.body()).json()
}

fn recognize(d: &Daemon, name: &str) -> Vec<(String, f64)> {
    let form = Multipart::new()
        .file("image", &photo(name))
        .text("api_key", KEY);
    let body = ok(d.post(RECOGNIZE, &form.body()));
    body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["userid"].as_str().unwrap().to_owned(),
                p["confidence"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn get(d: &Daemon, path: &str) -> Response {
    d.call("GET", path, WITH_KEY, &Body::Empty)
}

fn users(d: &Daemon) -> Vec<(String, u64)> {
    ok(get(d, GALLERY_USERS))["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["userid"].as_str().unwrap().to_owned(),
                u["samples"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn sample_ids(d: &Daemon, userid: &str) -> Vec<i64> {
    ok(get(d, &user_path(userid, "/samples")))["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect()
}

fn rename(d: &Daemon, from: &str, to: &str, merge: bool) -> Response {
    let merge = if merge { "true" } else { "false" };
    d.call(
        "POST",
        &user_path(from, "/rename"),
        WITH_KEY,
        &urlencoded(&[("to", to), ("merge", merge)]),
    )
}

#[test]
fn list_inspect_prune_and_rename_over_http() {
    let d = Server::start(&[FACES_ON, ("API-KEY", KEY)]);

    // Keys: header or field; nothing else.
    assert_error(
        &d.call("GET", GALLERY_USERS, &[], &Body::Empty),
        401,
        "Incorrect api key",
    );
    assert_error(
        &d.call("GET", GALLERY_USERS, &[("X-Api-Key", "nope")], &Body::Empty),
        401,
        "Incorrect api key",
    );
    assert_eq!(ok(get(&d, GALLERY_USERS))["users"], json!([]));
    let by_field = d.call(
        "GET",
        GALLERY_USERS,
        &[],
        &Multipart::new().text("api_key", KEY).body(),
    );
    assert_eq!(by_field.status, 200);

    assert_eq!(
        register(&d, "obama", &["obama.jpg", "obama2.jpg"])["message"],
        json!("face added")
    );
    register(&d, "biden", &["biden.jpg"]);
    let odd = "Zoë / 100% \"odd\"";
    assert_eq!(
        register(&d, odd, &["astronaut.png"])["success"],
        json!(true)
    );
    assert_eq!(
        users(&d),
        [
            ("Zoë / 100% \"odd\"".to_owned(), 1),
            ("biden".to_owned(), 1),
            ("obama".to_owned(), 2)
        ]
    );
    let listed = ok(get(&d, GALLERY_USERS));
    let obama = &listed["users"][2];
    assert!(obama["created_at"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(obama["last_added_at"], obama["created_at"]);

    // One user's samples, with what registration measured.
    let body = ok(get(&d, &user_path("obama", "/samples")));
    assert_eq!(body["userid"], json!("obama"));
    let samples = body["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    for s in samples {
        assert_eq!(s["source"], json!("image"));
        assert!(s["det_score"].as_f64().unwrap() > 0.5);
        let q = &s["quality"];
        assert!(q["score"].as_f64().unwrap() > 0.9, "{q}");
        assert!(q["face_px"].as_u64().unwrap() > 200, "{q}");
        assert!(q["sharpness"].as_f64().unwrap() > 100.0, "{q}");
        assert!(q["yaw"].as_f64().unwrap().abs() < 45.0, "{q}");
    }
    assert_eq!(sample_ids(&d, odd).len(), 1);
    assert_error(
        &get(&d, &user_path("nobody", "/samples")),
        404,
        "userid not found",
    );

    // The crop: a 112x112 JPEG, never cached by a shared cache.
    let (first, second) = (
        samples[0]["id"].as_i64().unwrap(),
        samples[1]["id"].as_i64().unwrap(),
    );
    let crop = get(&d, &format!("{GALLERY_SAMPLES}/{first}/crop.jpg"));
    assert_eq!(crop.status, 200);
    assert_eq!(crop.header("content-type"), Some("image/jpeg"));
    assert!(crop.header("cache-control").unwrap().contains("private"));
    let img = image::load_from_memory(&crop.body).unwrap();
    assert_eq!((img.width(), img.height()), (112, 112));
    assert_error(
        &d.call(
            "GET",
            &format!("{GALLERY_SAMPLES}/{first}/crop.jpg"),
            &[],
            &Body::Empty,
        ),
        401,
        "Incorrect api key",
    );
    for bad in ["999999", "abc", "-1", "1.5"] {
        assert_error(
            &get(&d, &format!("{GALLERY_SAMPLES}/{bad}/crop.jpg")),
            404,
            "sample not found",
        );
    }

    // Removing one sample: the other still recognizes obama.
    let delete = |id: i64| {
        d.call(
            "DELETE",
            &format!("{GALLERY_SAMPLES}/{id}"),
            WITH_KEY,
            &Body::Empty,
        )
    };
    ok(delete(first));
    assert_error(&delete(first), 404, "sample not found");
    assert_eq!(sample_ids(&d, "obama"), [second]);
    assert_eq!(recognize(&d, "obama3.jpg")[0].0, "obama");

    // Renaming onto an existing name is refused unless merging is asked for.
    assert_error(
        &rename(&d, "obama", "biden", false),
        409,
        "userid already exists",
    );
    assert_eq!(users(&d).len(), 3);
    assert_error(&rename(&d, "nobody", "x", false), 404, "userid not found");
    assert_error(&rename(&d, "obama", "", false), 400, "userid not specified");
    let res = rename(&d, "obama", "bad\nname", false);
    assert_eq!(
        (res.status, &res.json()["error"]),
        (400, &json!("invalid userid"))
    );
    let body = ok(rename(&d, "obama", "Barack Obama", false));
    assert_eq!(body["userid"], json!("Barack Obama"));
    assert_eq!(body["merged"], json!(false));
    assert_eq!(recognize(&d, "obama3.jpg")[0].0, "Barack Obama");
    // DeepStack's list sees the new name too.
    let list = ok(d.post(LIST, &urlencoded(&[("api_key", KEY)])));
    assert_eq!(
        list["faces"],
        json!(["Barack Obama", "Zoë / 100% \"odd\"", "biden"])
    );

    // Merging (explicit): the samples move, the old name is gone.
    let body = ok(rename(&d, odd, "biden", true));
    assert_eq!(body["merged"], json!(true));
    assert_eq!(
        users(&d),
        [("Barack Obama".to_owned(), 1), ("biden".to_owned(), 2)]
    );

    // Deleting a person.
    let del = |u: &str| d.call("DELETE", &user_path(u, ""), WITH_KEY, &Body::Empty);
    ok(del("biden"));
    assert_error(&del("biden"), 404, "userid not found");
    assert_eq!(users(&d), [("Barack Obama".to_owned(), 1)]);

    // Wrong methods are JSON 404s like any unknown route.
    assert_error(
        &d.call("POST", GALLERY_USERS, WITH_KEY, &Body::Empty),
        404,
        "not found",
    );

    // The page and the OpenAPI file need no key; the page is small and self-contained.
    let page = d.get(PAGE);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    let mut size = page.body.len();
    for asset in ["/app.js", "/app.css"] {
        let res = d.get(asset);
        assert_eq!(res.status, 200, "{asset}");
        size += res.body.len();
    }
    eprintln!("page size: {size} bytes (HTML + JS + CSS)");
    assert!(size < 40_000, "the page is {size} bytes");
    let api = d.get(OPENAPI).json();
    assert_eq!(api["openapi"], json!("3.0.3"));
    assert!(api["paths"]["/v1/gallery/reembed"].is_object());

    // Names in paths never reach the log: routes are logged by their pattern.
    let log = d.log_text();
    assert!(
        log.contains("GET /v1/gallery/users/{userid}/samples 200"),
        "{log}"
    );
    for name in ["Barack", "obama/", "Zo%C3%AB", "Zoë", KEY] {
        assert!(!log.contains(name), "{name:?} in the log:\n{log}");
    }
}

/// A photo blurred so much that no gallery should learn from it.
fn blurred(name: &str) -> Vec<u8> {
    let img = image::load_from_memory(&photo(name)).unwrap().blur(8.0);
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn faces_under_min_face_quality_are_skipped_with_the_reason() {
    let d = Server::start(&[FACES_ON]);
    let form = Multipart::new()
        .file("sharp", &photo("obama.jpg"))
        .file("blurry", &blurred("obama.jpg"))
        .text("userid", "obama");
    let body = ok(d.post(REGISTER, &form.body()));
    assert_eq!(body["message"], json!("face added"));
    let skipped = &body["skipped"][0];
    assert_eq!(skipped["file"], json!("blurry"));
    let reason = skipped["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("face quality")
            && reason.contains("MIN_FACE_QUALITY 0.30")
            && reason.contains("blurred"),
        "{reason}"
    );
    assert!(skipped["quality"]["score"].as_f64().unwrap() < 0.3);
    assert_eq!(body["skipped"].as_array().unwrap().len(), 1);

    // Only a bad photo: DeepStack's error, with the reason.
    let form = Multipart::new()
        .file("image", &blurred("biden.jpg"))
        .text("userid", "biden");
    let res = d.post(REGISTER, &form.body());
    let body = res.json();
    assert_eq!(
        (res.status, &body["error"]),
        (400, &json!("no face detected"))
    );
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("image: face quality"),
        "{body}"
    );
    assert_eq!(d.status()["samples"], json!(1));
    drop(d);

    // MIN_FACE_QUALITY=0 stores every face.
    let d = Server::start(&[FACES_ON, ("MIN_FACE_QUALITY", "0")]);
    let form = Multipart::new()
        .file("image", &blurred("biden.jpg"))
        .text("userid", "biden");
    assert_eq!(
        ok(d.post(REGISTER, &form.body()))["message"],
        json!("face added")
    );
}

#[test]
fn the_gallery_api_is_behind_the_face_switch() {
    let d = Server::start(&[]);
    assert_error(&d.get(GALLERY_USERS), 403, "Face endpoints not activated");
    assert_error(
        &d.call("DELETE", &format!("{GALLERY_SAMPLES}/1"), &[], &Body::Empty),
        403,
        "Face endpoints not activated",
    );
    assert_eq!(d.get(PAGE).status, 200);
}

#[test]
fn hostile_paths_and_bodies_get_json_errors_and_change_nothing() {
    let d = Server::start(&[FACES_ON]);
    register(&d, "obama", &["obama.jpg"]);
    let before = users(&d);
    for (method, path, status, error) in [
        (
            "GET",
            "/v1/gallery/users/%FF/samples",
            404,
            "userid not found",
        ),
        (
            "GET",
            "/v1/gallery/users/%00/samples",
            404,
            "userid not found",
        ),
        ("GET", "/v1/gallery/users//samples", 404, "not found"),
        (
            "GET",
            "/v1/gallery/samples/99999999999999999999/crop.jpg",
            404,
            "sample not found",
        ),
        (
            "GET",
            "/v1/gallery/samples/%2D1/crop.jpg",
            404,
            "sample not found",
        ),
        ("DELETE", "/v1/gallery/samples/0x1", 404, "sample not found"),
        (
            "DELETE",
            "/v1/gallery/users/%2E%2E",
            404,
            "userid not found",
        ),
        ("GET", "/v1/gallery/samples/1/crop.jpg/..", 404, "not found"),
        ("POST", "/v1/gallery/users/obama", 404, "not found"),
    ] {
        let res = d.call(method, path, &[], &Body::Empty);
        assert_error(&res, status, error);
    }
    let rename_with = |body: Body| d.call("POST", &user_path("obama", "/rename"), &[], &body);
    // A JSON body is no form: no `to`.
    let json_body = Body::Raw {
        content_type: "application/json".into(),
        bytes: br#"{"to": "x"}"#.to_vec(),
    };
    assert_error(&rename_with(json_body), 400, "userid not specified");
    let res = rename_with(Body::Raw {
        content_type: "application/x-www-form-urlencoded".into(),
        bytes: b"to=%FF".to_vec(),
    });
    assert_eq!(res.json()["reason"], json!("not valid UTF-8"));
    let long = "x".repeat(300);
    let res = rename_with(urlencoded(&[("to", &long)]));
    assert!(res.json()["reason"]
        .as_str()
        .unwrap()
        .contains("MAX_USERID_BYTES"));
    // `merge` must say true; anything else is no merge.
    register(&d, "biden", &["biden.jpg"]);
    for merge in ["yes", "TRUE", "on", ""] {
        let res = rename_with(urlencoded(&[("to", "biden"), ("merge", merge)]));
        assert_error(&res, 409, "userid already exists");
    }
    let after = users(&d);
    assert!(after.iter().all(|(_, samples)| *samples == 1), "{after:?}");
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(recognize(&d, "obama2.jpg")[0].0, "obama");
}
