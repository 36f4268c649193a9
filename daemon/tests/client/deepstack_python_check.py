#!/usr/bin/env python3
"""Drive a running deepstackd with the unchanged deepstack-python 0.9 client.

Usage: deepstack_python_check.py PORT API_KEY PHOTO_DIR

Run by daemon/tests/api.rs (deepstack_python_drives_the_daemon) against a fresh gallery.
The client is used exactly as Home Assistant-era code does: DeepstackFace with an api_key
and min_confidence=0.45 (the client's default), 200 answers read as JSON, anything else
raised as DeepstackException.
"""

import sys
from pathlib import Path

from deepstack.core import DeepstackException, DeepstackFace


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def main():
    port, api_key, photos = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

    def photo(name):
        return (photos / name).read_bytes()

    face = DeepstackFace(ip="127.0.0.1", port=port, api_key=api_key, timeout=60)

    found = face.detect(photo("obama.jpg"))
    check(len(found) == 1, f"detect finds one face: {found}")
    check(all(isinstance(found[0][k], int) for k in ("x_min", "y_min", "x_max", "y_max")),
          "boxes are integers")

    check(face.register("Barack Obama", photo("obama.jpg")) == "face added", "register adds")
    check(face.register("Barack Obama", photo("obama3.jpg")) == "face updated",
          "register again updates")
    check(face.register("Joe Biden", photo("biden.jpg")) == "face added", "second person")

    predictions = face.recognize(photo("obama2.jpg"))
    check([p["userid"] for p in predictions] == ["Barack Obama"],
          f"recognize finds Obama: {predictions}")
    check(predictions[0]["confidence"] >= 0.45, "confidence above the client's threshold")
    check(face.recognize(photo("coffee.png")) == [], "no face: empty predictions")

    check(face.get_registered_faces() == ["Barack Obama", "Joe Biden"],
          "get_registered_faces lists both, sorted")

    # DeepStack answered these with non-200 statuses, which the client raises.
    for what, call in [
        ("registering a photo without a face", lambda: face.register("nobody", photo("coffee.png"))),
        ("a wrong api key", lambda: DeepstackFace(ip="127.0.0.1", port=port, api_key="wrong",
                                                  timeout=60).recognize(photo("obama2.jpg"))),
    ]:
        try:
            call()
        except DeepstackException as e:
            check(True, f"{what} raises DeepstackException ({e})")
        else:
            check(False, f"{what} raises DeepstackException")

    print("deepstack-python 0.9: all checks passed")


if __name__ == "__main__":
    main()
