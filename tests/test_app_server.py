"""The draw-a-digit server at the HTTP level (no browser): answers, every refusal, concurrency, logging.

A small MLP is trained once on the bundled sample; the server runs in a thread on a free port of
127.0.0.1. Predictions are checked against :meth:`Predictor.predict_image` called directly, so the page
and ``handgrad predict`` share one code path, number for number.
"""

import http.client
import io
import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from handgrad.app import TrainConfig, train
from handgrad.app import server as server_module
from handgrad.app.checkpoint import CheckpointError
from handgrad.app.predict import Predictor
from handgrad.app.server import MAX_BODY_BYTES, host_allowed, make_server
from handgrad.datasets import load_dataset

PIL = pytest.importorskip("PIL.Image")


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(dataset="mnist-sample", epochs=2, hidden=(32,), out=str(out), plots=False, quiet=True))
    return out / "best.npz"


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return Predictor.from_checkpoint(checkpoint)


def start(predictor_or_none):
    srv = make_server(predictor_or_none, host="127.0.0.1", port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return srv, thread


def stop(srv, thread):
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def port(predictor):
    srv, thread = start(predictor)
    yield srv.server_address[1]
    stop(srv, thread)


@pytest.fixture(scope="module")
def digits():
    """The first 16 test digits of the bundled sample, as PNG files' bytes, with their labels."""
    X, y = load_dataset("mnist-sample", split="test")
    return [(png_bytes(X[i]), int(y[i])) for i in range(16)]


def png_bytes(array, fmt="PNG"):
    buf = io.BytesIO()
    PIL.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


# --- clients ----------------------------------------------------------------------------------------
def request(port, method, path, body=None, headers=None):
    """One request on a fresh connection: (status, headers, parsed JSON or raw bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.getheader("Content-Type", "").startswith("application/json"):
        data = json.loads(data)
    return resp.status, resp, data


def predict(port, data, content_type="image/png", **headers):
    return request(port, "POST", "/api/predict", data, {"Content-Type": content_type, **headers})


def raw(port, data: bytes):
    """Send raw bytes and read until the server closes: (status, parsed JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def assert_still_serving(port, digits):
    data, _ = digits[0]
    status, _, body = predict(port, data)
    assert status == 200 and body["classes"]


def assert_json_error(status, resp, body, expected_status):
    assert status == expected_status, body
    assert resp.getheader("Content-Type") == "application/json"
    assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in body["error"]


# --- the prediction endpoint ------------------------------------------------------------------------
def test_png_prediction_matches_predictor_exactly(port, predictor, digits):
    data, _label = digits[0]
    status, resp, body = predict(port, data)
    assert status == 200
    assert resp.getheader("Content-Type") == "application/json"
    assert set(body) == {"prediction", "label", "confidence", "probabilities", "classes", "input"}
    expected = json.loads(json.dumps(predictor.predict_image(data), default=lambda v: v.tolist()))
    assert body == expected  # the same numbers, to the last bit, as the direct call
    p = np.array(body["probabilities"])
    assert body["classes"] == list(predictor.classes) and len(p) == len(body["classes"]) == 10
    assert p.min() >= 0 and abs(p.sum() - 1) < 1e-5
    assert body["prediction"] == int(p.argmax()) and body["label"] == body["classes"][body["prediction"]]
    assert body["confidence"] == pytest.approx(p.max())
    x = np.array(body["input"])
    assert x.shape == (28, 28) and x.min() >= 0 and x.max() <= 1 and x.max() > 0.5


def test_a_trained_model_reads_the_sample_digits(port, digits):
    correct = sum(predict(port, data)[2]["prediction"] == label for data, label in digits)
    assert correct >= 10  # 16 digits, 10 classes: chance is about 2


def test_jpeg_is_accepted(port, predictor, digits):
    X, _ = load_dataset("mnist-sample", split="test")
    data = png_bytes(X[1], fmt="JPEG")
    status, _, body = predict(port, data, "image/jpeg")
    assert status == 200
    assert body["probabilities"] == pytest.approx(
        list(map(float, predictor.predict_image(data)["probabilities"]))
    )


def test_content_type_parameters_are_ignored(port, digits):
    status, _, body = predict(port, digits[0][0], "Image/PNG; charset=binary")
    assert status == 200, body


def test_info_names_the_classes_and_dataset(port, predictor):
    status, _, body = request(port, "GET", "/api/info")
    assert status == 200
    assert body["ready"] is True
    assert body["classes"] == list(predictor.classes) == [str(d) for d in range(10)]
    assert body["dataset"] == predictor.dataset == "mnist-sample"
    assert body["max_body_bytes"] == MAX_BODY_BYTES


# --- refusals: a JSON error with a 4xx status, and the server keeps serving ---------------------------
BLACK = np.zeros((28, 28), np.uint8)
WHITE = np.full((28, 28), 255, np.uint8)


@pytest.mark.parametrize(
    "body, content_type, expected",
    [
        (b"not an image at all", "image/png", 400),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png", 400),  # a PNG signature, then garbage
        (png_bytes(BLACK), "image/png", 400),  # an empty (black) drawing
        (png_bytes(WHITE), "image/png", 400),  # an empty (white) page
        (b"", "image/png", 400),  # no body at all
        (b"GIF89a", "image/gif", 415),
        (b"{}", "application/json", 415),
        (b"<form>", "multipart/form-data; boundary=x", 415),
    ],
    ids=["garbage", "truncated-png", "black", "white", "empty-body", "gif", "json", "multipart"],
)
def test_bad_images_and_types_are_refused(port, digits, body, content_type, expected):
    status, resp, answer = predict(port, body, content_type)
    assert_json_error(status, resp, answer, expected)
    assert_still_serving(port, digits)


def test_empty_drawing_says_so(port):
    _, _, answer = predict(port, png_bytes(BLACK))
    assert "ink" in answer["error"] or "empty" in answer["error"]


def test_oversized_body_is_refused_with_413(port, digits):
    status, resp, answer = predict(port, b"\x89PNG" + b"\x00" * (MAX_BODY_BYTES + 1))
    assert_json_error(status, resp, answer, 413)
    assert str(MAX_BODY_BYTES) in answer["error"]
    assert_still_serving(port, digits)


def test_oversized_body_is_refused_before_it_is_read(port, digits):
    # Only the headers are sent: the answer must come from Content-Length alone.
    head = (
        f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {50 * MAX_BODY_BYTES}\r\n\r\n"
    ).encode()
    status, answer = raw(port, head)
    assert status == 413 and "larger than the limit" in answer["error"]
    assert_still_serving(port, digits)


@pytest.mark.parametrize(
    "headers, expected",
    [
        ("", 411),  # no Content-Length
        ("Content-Length: twelve\r\n", 400),
        ("Content-Length: -5\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", 411),
    ],
    ids=["missing", "not-a-number", "negative", "chunked"],
)
def test_content_length_is_required_and_checked(port, digits, headers, expected):
    status, answer = raw(
        port,
        (
            f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: image/png\r\n{headers}Connection: close\r\n\r\n"
        ).encode(),
    )
    assert status == expected and answer["error"]
    assert_still_serving(port, digits)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8000",
        "127.0.0.1.evil.example",
        "localhost.evil.example:80",
        "192.168.1.20",
    ],
)
def test_unexpected_host_is_refused(port, digits, host):
    status, resp, answer = predict(port, digits[0][0], Host=host)
    assert_json_error(status, resp, answer, 421)
    status, resp, answer = request(port, "GET", "/", headers={"Host": host})
    assert_json_error(status, resp, answer, 421)
    assert_still_serving(port, digits)


def test_missing_host_is_refused(port, digits):
    status, answer = raw(port, b"GET /api/info HTTP/1.0\r\n\r\n")
    assert status == 421 and "Host" in answer["error"]
    assert_still_serving(port, digits)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST:5000", "127.0.0.1:1"])
def test_local_hosts_with_any_port_are_accepted(port, digits, host):
    status, _, body = predict(port, digits[0][0], Host=host)
    assert status == 200, body


def test_host_rules():
    assert host_allowed("localhost:8000", "127.0.0.1")
    assert host_allowed("[::1]:8000", "127.0.0.1")
    assert host_allowed("myhost.lan:8000", "myhost.lan")  # the name it was bound to
    assert host_allowed("192.168.1.20:8000", "0.0.0.0")  # bound everywhere: address literals
    assert not host_allowed("evil.example:8000", "0.0.0.0")  # ... but never a foreign name
    assert not host_allowed("evil.example", "127.0.0.1")
    assert not host_allowed("", "127.0.0.1")
    assert not host_allowed(None, "127.0.0.1")


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("GET", "/nope", 404),
        ("GET", "/api/nope", 404),
        ("GET", "/static/nope.js", 404),
        ("GET", "/static/../server.py", 404),
        ("GET", "/static/%2e%2e/server.py", 404),
        ("POST", "/api/info", 405),
        ("GET", "/api/predict", 405),
        ("PUT", "/api/predict", 405),
        ("DELETE", "/", 405),
        ("OPTIONS", "/api/predict", 405),
    ],
)
def test_unknown_paths_and_methods(port, digits, method, path, expected):
    status, resp, answer = request(port, method, path)
    assert_json_error(status, resp, answer, expected)
    if expected == 405:
        assert resp.getheader("Allow")
    assert_still_serving(port, digits)


def test_malformed_request_line_gets_json(port, digits):
    status, answer = raw(port, b"THIS IS NOT HTTP\r\n\r\n")
    assert 400 <= status < 500 and answer["error"]
    assert_still_serving(port, digits)


def test_internal_errors_are_generic_and_logged(digits, caplog):
    class Broken:
        classes, dataset = [str(d) for d in range(10)], "mnist-sample"

        def predict_image(self, source):
            raise RuntimeError("secret internal detail")

    srv, thread = start(Broken())
    try:
        with caplog.at_level(logging.INFO, logger="handgrad.server"):
            status, resp, answer = predict(srv.server_address[1], digits[0][0])
            assert_json_error(status, resp, answer, 500)
            assert "secret" not in json.dumps(answer)
            assert wait_for(
                lambda: any("secret internal detail" in (r.exc_text or "") for r in caplog.records)
            )
            status, _, _ = request(srv.server_address[1], "GET", "/api/info")
            assert status == 200
    finally:
        stop(srv, thread)


# --- the page and its files ---------------------------------------------------------------------------
def test_page_and_static_files_are_served(port):
    status, resp, page = request(port, "GET", "/")
    assert status == 200 and resp.getheader("Content-Type").startswith("text/html")
    html = page.decode()
    assert "<canvas" in html and ">Clear</button>" in html and 'type="file"' in html
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        status, resp, data = request(port, "GET", f"/static/{name}")
        assert status == 200 and resp.getheader("Content-Type").startswith(kind) and data
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    assert "default-src 'none'" in resp.getheader("Content-Security-Policy")


def test_page_needs_nothing_from_the_network(port):
    """Works offline: no CDN, no external font, no absolute URL in any file the page loads."""
    for path in ["/", "/static/app.js", "/static/style.css"]:
        text = request(port, "GET", path)[2].decode()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path
        assert "@import" not in text and "@font-face" not in text


def test_head_of_the_page(port):
    status, resp, data = request(port, "HEAD", "/")
    assert status == 200 and data == b"" and int(resp.getheader("Content-Length")) > 0


# --- concurrency and logging ------------------------------------------------------------------------
def test_concurrent_requests_all_get_their_own_answer(port, predictor, digits):
    expected = [
        json.loads(json.dumps(predictor.predict_image(data), default=lambda v: v.tolist()))
        for data, _ in digits
    ]
    barrier = threading.Barrier(len(digits))

    def one(i):
        barrier.wait(timeout=30)
        return predict(port, digits[i][0])

    with ThreadPoolExecutor(len(digits)) as pool:
        answers = list(pool.map(one, range(len(digits))))
    assert [a[0] for a in answers] == [200] * len(digits)
    assert [a[2] for a in answers] == expected  # no answer got another request's numbers


def wait_for(condition, seconds=10.0):
    """The log line is written just after the answer is sent: poll for it briefly."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_one_log_line_per_request(port, digits, caplog):
    with caplog.at_level(logging.INFO, logger="handgrad.server"):
        request(port, "GET", "/api/info?probe=7f3a")
        predict(port, b"junk", "image/png", **{"X-Probe": "1"})
        request(port, "GET", "/missing-7f3a")

        def lines(pattern):
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == "handgrad.server" and re.search(pattern, r.getMessage())
            ]

        assert wait_for(lambda: len(lines("/missing-7f3a")) == 1)
        assert len(lines(r'"GET /api/info\?probe=7f3a HTTP/1.1" 200 \d+')) == 1
        assert len(lines(r'"POST /api/predict HTTP/1.1" 400 \d+')) >= 1
        assert re.search(
            r'^127\.0\.0\.1 "GET /missing-7f3a HTTP/1.1" 404 \d+ [\d.]+ms$', lines("/missing-7f3a")[0]
        )


# --- no checkpoint: the page explains how to train one ------------------------------------------------
def test_without_a_model_the_server_names_the_training_command(digits):
    srv, thread = start(None)
    try:
        p = srv.server_address[1]
        status, _, info = request(p, "GET", "/api/info")
        assert status == 200 and info["ready"] is False
        assert "handgrad train" in info["message"] and "handgrad serve" in info["message"]
        status, resp, answer = predict(p, digits[0][0])
        assert_json_error(status, resp, answer, 503)
        assert "handgrad train" in answer["error"]
        assert request(p, "GET", "/")[0] == 200
    finally:
        stop(srv, thread)


def test_serve_refuses_a_bad_checkpoint(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        server_module.serve(bad, port=0)


def test_serve_names_a_taken_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:\d+ .*--port"):
            server_module.serve(None, port=taken.getsockname()[1])
