//! `deepstack-eval evaluate` on a small labelled set built from the fetched test photos: the
//! open-set table is printed, a stranger is not named, and a photo filed under the wrong
//! person is found and left out.

mod common;

use std::process::Command;

#[test]
fn the_open_set_table_on_a_small_labelled_set() {
    let photos = common::testdata();
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("labelled");
    // Folders in name order: a-astronaut and c-obama calibrate, b-biden reports.
    for (person, files) in [
        ("a-astronaut", &["astronaut.png"][..]),
        // obama3.jpg filed under Biden: the eval must see that it shows Obama.
        ("b-biden", &["biden.jpg", "obama3.jpg"][..]),
        (
            "c-obama",
            &["obama.jpg", "obama2.jpg", "obama_1280x720.jpg"][..],
        ),
    ] {
        std::fs::create_dir_all(set.join(person)).unwrap();
        for f in files {
            std::fs::copy(photos.join(f), set.join(person).join(f)).unwrap();
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_deepstack-eval"))
        .arg("evaluate")
        .arg(&set)
        .output()
        .expect("run deepstack-eval");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("labelled as the wrong person") && text.contains("b-biden/obama3.jpg"),
        "{text}"
    );
    for probe in ["colour", "grayscale"] {
        let table = text
            .split(&format!("open-set, {probe} probes"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {probe} table:\n{text}"));
        // Obama enrolled (borrowed from the calibration half), Biden the stranger: not named
        // at any threshold.
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with("1 x 1"))
            .unwrap_or_else(|| panic!("no 1 x 1 row:\n{table}"));
        assert!(
            row.contains("0.00% / 0.00% / 0.00%") && row.contains("[40 stranger"),
            "{row}"
        );
    }
    assert!(text.contains("/match detection"), "{text}");
}
