"""The draw-a-digit page end to end, in Debian's chromium driven by Playwright.

A small MLP is trained once on the bundled sample, the server runs in a thread on a free port, and the
test draws with the mouse (and a pen, and a finger), clears, and uploads a real test digit, reading the
page as a user would: prediction, confidence, one bar per class, the 28x28 image the model received.
No console message of level error and no uncaught exception may appear.

Needs ``/usr/bin/chromium`` and the ``playwright`` package: ``scripts/install_browser.sh`` installs both
(``make test`` runs it). ``HANDGRAD_SCREENSHOTS=DIR`` writes the README's screenshots into DIR.
"""

import base64
import json
import os
import pathlib
import threading

import numpy as np
import pytest

from handgrad import app
from handgrad.app.config import TrainConfig
from handgrad.app.predict import Predictor
from handgrad.app.server import make_server
from handgrad.datasets import load_dataset

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = "run scripts/install_browser.sh (installs Debian's chromium and playwright; CI runs it)"
TIMEOUT_MS = 20_000


# --- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    app.train(
        TrainConfig(dataset="mnist-sample", epochs=3, hidden=(64,), out=str(out), plots=False, quiet=True)
    )
    return Predictor.from_checkpoint(out / "best.npz")


def start_server(predictor):
    srv = make_server(predictor, host="127.0.0.1", port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return srv, thread


@pytest.fixture(scope="module")
def base_url(predictor):
    srv, thread = start_server(predictor)
    yield srv.url
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: {INSTALL_HINT}", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the playwright package is missing: {INSTALL_HINT}", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


# Chromium may drop a response body before the test asks for it, so the page's own fetch keeps a copy of
# every prediction's JSON (in window.__answers) before the page sees it.
RECORD_ANSWERS = """(() => {
    const original = window.fetch;
    window.__answers = [];
    window.fetch = async (input, init) => {
        const response = await original(input, init);
        if (String(input).endsWith('/api/predict')) {
            try { window.__answers.push(await response.clone().json()); } catch (_) { window.__answers.push(null); }
        }
        return response;
    };
})();"""


class Page:
    """A browser tab on the page, recording console errors, page errors and prediction requests."""

    def __init__(self, browser, url, **context):
        self.context = browser.new_context(viewport={"width": 900, "height": 620}, **context)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors = []
        self.predictions = []  # the response to every POST /api/predict
        self.page.on(
            "console",
            lambda m: (
                self.errors.append(f"console.{m.type}: {m.text}") if m.type in ("error", "assert") else None
            ),
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} {r.failure}"))
        self.page.on("response", self._on_response)
        self.page.add_init_script(RECORD_ANSWERS)
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready=true]", state="attached")

    def _on_response(self, response):
        if response.url.endswith("/api/predict"):
            self.predictions.append(response)

    def box(self):
        return self.page.locator("#draw").bounding_box()

    def stroke(self, points, steps=12):
        """Draw through ``points`` given in canvas fractions (0..1), mouse button held."""
        b = self.box()
        xy = [(b["x"] + fx * b["width"], b["y"] + fy * b["height"]) for fx, fy in points]
        self.page.mouse.move(*xy[0])
        self.page.mouse.down()
        for x, y in xy[1:]:
            self.page.mouse.move(x, y, steps=steps)
        self.page.mouse.up()

    def settled(self):
        """Wait until the last answer is shown and nothing is in flight or scheduled."""
        self.page.wait_for_selector(
            "#result[data-busy=false]:is([data-state=ready], [data-state=error])", state="attached"
        )
        return self.page.locator("#result").get_attribute("data-state")

    def last_answer(self):
        answers = self.page.evaluate("window.__answers")
        assert answers, "the page sent no prediction request"
        return answers[-1]

    def bars(self):
        return self.page.eval_on_selector_all(
            "#bars .bar",
            """rows => rows.map(r => ({
            id: r.id, label: r.dataset.label, probability: r.dataset.probability ?? null,
            width: r.querySelector('.bar-fill').style.width, top: r.classList.contains('top'),
            value: r.querySelector('.bar-value').textContent }))""",
        )

    def pixels(self, selector):
        """Red channel of a canvas, as a (height, width) array."""
        data = self.page.eval_on_selector(
            selector,
            """c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            return {w: c.width, h: c.height, r: Array.from(d.filter((_, i) => i % 4 === 0))}; }""",
        )
        return np.array(data["r"]).reshape(data["h"], data["w"])

    def close(self):
        self.context.close()


@pytest.fixture
def tab(browser, base_url):
    t = Page(browser, base_url)
    yield t
    t.close()
    assert t.errors == [], "the page logged errors"


ONE = [(0.52, 0.15), (0.50, 0.50), (0.48, 0.85)]  # a "1": one vertical stroke
SEVEN = [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]  # a "7": across, then down-left


def assert_shows(tab, answer, classes):
    page = tab.page
    assert page.locator("#prediction").inner_text() == answer["label"]
    assert f"{100 * answer['confidence']:.1f}%" in page.locator("#confidence").inner_text()
    bars = tab.bars()
    assert [b["id"] for b in bars] == [f"bar-{i}" for i in range(len(classes))]
    assert [b["label"] for b in bars] == classes
    shown = np.array([float(b["probability"]) for b in bars])
    assert shown == pytest.approx(answer["probabilities"], abs=0, rel=1e-15)  # the JSON's numbers
    assert abs(shown.sum() - 1) < 1e-5
    widths = np.array([float(b["width"].rstrip("%")) for b in bars])
    assert widths == pytest.approx(100 * shown, abs=0.01)
    assert [b["top"] for b in bars] == [i == answer["prediction"] for i in range(len(classes))]
    # The preview is the 28x28 image the model received, grey level by grey level.
    preview = tab.pixels("#preview")
    assert preview.shape == (28, 28) and preview.sum() > 0
    assert np.array_equal(preview, np.round(255 * np.clip(np.array(answer["input"]), 0, 1)))


def assert_empty(tab):
    page = tab.page
    assert page.locator("#result").get_attribute("data-state") == "empty"
    assert page.locator("#prediction").inner_text() == ""
    assert page.locator("#confidence").inner_text() == ""
    assert page.locator("#placeholder").is_visible()
    assert page.locator("#error").is_hidden()
    for b in tab.bars():
        assert b["probability"] is None and b["width"] == "0%" and b["value"] == "" and not b["top"]
    assert tab.pixels("#preview").sum() == 0
    assert tab.pixels("#draw").sum() == 0


# --- tests ----------------------------------------------------------------------------------------------
def test_page_starts_empty_and_sends_nothing(tab, predictor):
    assert tab.page.title() == "handgrad · draw a digit"
    assert tab.page.locator("canvas#draw").count() == 1
    assert tab.page.get_by_role("button", name="Clear").is_visible()
    assert tab.page.locator("input[type=file]").count() == 1
    assert len(tab.bars()) == len(predictor.classes) == 10
    assert_empty(tab)
    tab.page.get_by_role("button", name="Clear").click()  # clearing an empty canvas sends nothing either
    tab.page.wait_for_timeout(400)
    assert tab.predictions == []


def test_drawing_shows_prediction_bars_and_preview(tab, predictor):
    tab.stroke(ONE)
    assert tab.settled() == "ready"
    answer = tab.last_answer()
    assert all(r.status == 200 and r.request.headers["content-type"] == "image/png" for r in tab.predictions)
    assert_shows(tab, answer, predictor.classes)
    assert answer["label"] == "1"  # a vertical stroke, centred and scaled like MNIST, reads as a one
    # The drawing is white ink on black and what was sent is what is on the canvas.
    drawn = tab.pixels("#draw")
    assert drawn.max() == 255 and 0.02 < (drawn > 127).mean() < 0.3
    # (Playwright does not expose a Blob request body; the canvas has not changed since it was sent.)
    url = tab.page.eval_on_selector("#draw", "c => c.toDataURL('image/png')")
    png = base64.b64decode(url.split(",", 1)[1])
    assert predictor.predict_image(png)["probabilities"] == answer["probabilities"]


def test_predictions_arrive_while_drawing(tab):
    b = tab.box()
    page = tab.page
    page.mouse.move(b["x"] + 0.3 * b["width"], b["y"] + 0.2 * b["height"])
    page.mouse.down()
    page.mouse.move(b["x"] + 0.7 * b["width"], b["y"] + 0.2 * b["height"], steps=10)
    # The button is still down: a prediction must come anyway (every ~150 ms while drawing).
    page.wait_for_selector("#result[data-state=ready]", state="attached")
    assert len(tab.predictions) >= 1
    page.mouse.move(b["x"] + 0.45 * b["width"], b["y"] + 0.85 * b["height"], steps=10)
    page.mouse.up()
    assert tab.settled() == "ready"
    assert len(tab.predictions) >= 2


def test_clear_resets_everything_without_a_request(tab, predictor):
    tab.stroke(SEVEN)
    assert tab.settled() == "ready"
    sent = len(tab.predictions)
    tab.page.get_by_role("button", name="Clear").click()
    assert_empty(tab)
    tab.page.wait_for_timeout(400)  # longer than the drawing-time interval: nothing may follow
    assert len(tab.predictions) == sent
    # And the page works again afterwards.
    tab.stroke(ONE)
    assert tab.settled() == "ready"
    assert_shows(tab, tab.last_answer(), predictor.classes)


def test_clear_while_a_request_is_in_flight_wins(tab):
    held = []  # requests the test holds back, to answer after Clear
    tab.page.route("**/api/predict", lambda route: held.append(route))
    tab.stroke(ONE)
    tab.page.wait_for_function("document.querySelector('#result').dataset.busy === 'true'")
    while not held:
        tab.page.wait_for_timeout(20)
    tab.page.get_by_role("button", name="Clear").click()
    for route in held:
        route.continue_()
    tab.page.wait_for_selector("#result[data-busy=false]", state="attached")
    assert len(held) == 1  # one request at a time: the others waited, and Clear dropped them
    assert len(tab.predictions) == 1  # its answer came back ...
    assert_empty(tab)  # ... and was ignored


def test_upload_shows_the_right_class(tab, predictor, tmp_path):
    from PIL import Image

    X, y = load_dataset("mnist-sample", split="test")
    probs = predictor.predict_arrays(X[:50].astype(np.float32) / 255)
    # A test digit the model reads with confidence, saved as a user's file would be: black ink on white.
    i = next(i for i in range(50) if probs[i].argmax() == y[i] and probs[i].max() > 0.9)
    path = tmp_path / f"digit-{int(y[i])}.png"
    Image.fromarray(255 - X[i]).resize((112, 112), Image.BILINEAR).save(path)
    tab.page.set_input_files("#upload", str(path))
    assert tab.settled() == "ready"
    answer = tab.last_answer()
    assert tab.predictions[-1].request.headers["content-type"] == "image/png"
    assert answer["label"] == predictor.classes[int(y[i])]
    assert json.loads(json.dumps(predictor.predict_image(path), default=lambda v: v.tolist())) == answer
    assert_shows(tab, answer, predictor.classes)
    assert tab.pixels("#draw").sum() == 0  # an upload replaces the drawing


def test_upload_errors_are_shown_in_the_page(browser, base_url, tmp_path):
    t = Page(browser, base_url)
    try:
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
        t.page.set_input_files("#upload", str(bad))
        assert t.settled() == "error"
        assert t.predictions[-1].status == 400
        message = t.page.locator("#error").inner_text()
        assert message == t.last_answer()["error"] and message
        # A file of the wrong type is refused by the page itself, with a message, and never sent.
        sent = len(t.predictions)
        text = tmp_path / "notes.txt"
        text.write_text("hello")
        t.page.set_input_files("#upload", str(text))
        assert "PNG or JPEG" in t.page.locator("#error").inner_text()
        assert len(t.predictions) == sent
        # Clear removes the error too.
        t.page.get_by_role("button", name="Clear").click()
        assert_empty(t)
    finally:
        t.close()
    # The browser itself reports a failed (4xx) fetch on the console; nothing else may appear.
    assert [e for e in t.errors if "status of 400" not in e] == []


def test_pen_and_touch_draw_too(browser, base_url, predictor):
    t = Page(browser, base_url, has_touch=True)
    try:
        # A stylus, through Pointer Events as a tablet sends them.
        t.page.eval_on_selector(
            "#draw",
            """c => {
            const b = c.getBoundingClientRect();
            const at = (type, fx, fy) => c.dispatchEvent(new PointerEvent(type, {pointerId: 7, pointerType: 'pen',
                isPrimary: true, bubbles: true, cancelable: true, pressure: 0.5, button: 0, buttons: 1,
                clientX: b.left + fx * b.width, clientY: b.top + fy * b.height}));
            at('pointerdown', 0.5, 0.15);
            for (let k = 1; k <= 20; k++) at('pointermove', 0.5, 0.15 + 0.7 * k / 20);
            at('pointerup', 0.5, 0.85);
        }""",
        )
        assert t.settled() == "ready"
        assert_shows(t, t.last_answer(), predictor.classes)
        t.page.get_by_role("button", name="Clear").click()
        assert_empty(t)
        # A finger: a tap leaves a dot, which is ink enough to predict.
        b = t.box()
        t.page.touchscreen.tap(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
        assert t.settled() == "ready"
        assert t.pixels("#draw").max() == 255
    finally:
        t.close()
    assert t.errors == []


def test_without_a_model_the_page_names_the_training_command(browser):
    srv, thread = start_server(None)
    try:
        t = Page.__new__(Page)
        t.context = browser.new_context()
        t.page = t.context.new_page()
        t.errors = []
        t.page.on("pageerror", lambda e: t.errors.append(str(e)))
        t.page.goto(srv.url)
        notice = t.page.locator("#no-model")
        notice.wait_for(state="visible", timeout=TIMEOUT_MS)
        assert "handgrad train" in notice.inner_text() and "handgrad serve" in notice.inner_text()
        t.context.close()
        assert t.errors == []
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def test_fashion_checkpoints_show_clothing_names(browser, predictor):
    from handgrad.datasets import class_names

    names = class_names("fashion-mnist")

    class Fashion:  # the trained digits model, presented as a Fashion-MNIST one
        classes, dataset = names, "fashion-mnist"

        def predict_image(self, source):
            answer = predictor.predict_image(source)
            return {**answer, "classes": names, "label": names[answer["prediction"]]}

    srv, thread = start_server(Fashion())
    try:
        t = Page(browser, srv.url)
        try:
            assert t.page.title() == "handgrad · draw a clothing item"
            assert [b["label"] for b in t.bars()] == names
            t.stroke(ONE)
            assert t.settled() == "ready"
            assert_shows(t, t.last_answer(), names)
            assert t.page.locator("#prediction").inner_text() in names
        finally:
            t.close()
        assert t.errors == []
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def test_a_colour_model_shows_its_own_size_and_colours(browser, tmp_path):
    from PIL import Image

    from handgrad.datasets import make_synthetic_color

    out = tmp_path / "colour-run"
    app.train(
        TrainConfig(
            dataset="synthetic-color", epochs=1, hidden=(32,), lr=0.05, out=str(out), plots=False, quiet=True
        )
    )
    colour = Predictor.from_checkpoint(out / "best.npz")
    X, _y = make_synthetic_color(8, seed=5)
    path = tmp_path / "shape.png"
    Image.fromarray(np.kron(X[0].transpose(1, 2, 0), np.ones((3, 3, 1), np.uint8)), mode="RGB").save(path)
    srv, thread = start_server(colour)
    try:
        t = Page(browser, srv.url)
        try:
            assert [b["label"] for b in t.bars()] == colour.classes
            assert t.page.locator("#preview-size").inner_text() == "16×16"
            t.page.set_input_files("#upload", str(path))
            assert t.settled() == "ready"
            answer = t.last_answer()
            assert np.array(answer["input"]).shape == (3, 16, 16)
            data = t.page.eval_on_selector(
                "#preview",
                """c => ({w: c.width, h: c.height,
                d: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)})""",
            )
            rgb = np.array(data["d"]).reshape(data["h"], data["w"], 4)[..., :3]
            assert rgb.shape == (16, 16, 3)
            expected = np.round(255 * np.clip(np.array(answer["input"]), 0, 1)).transpose(1, 2, 0)
            assert np.array_equal(rgb, expected)  # channel by channel: drawn in colour
            t.stroke(ONE)  # a drawing is resized like any picture, and answered
            assert t.settled() == "ready" and np.array(t.last_answer()["input"]).shape == (3, 16, 16)
        finally:
            t.close()
        assert t.errors == []
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def test_screenshots(browser, base_url, tmp_path):
    """The README's pictures: a digit being drawn, and the result. Written to tmp_path, or to the folder
    named by HANDGRAD_SCREENSHOTS (to refresh docs/)."""
    folder = pathlib.Path(os.environ.get("HANDGRAD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    t = Page(browser, base_url)
    try:
        page = t.page
        b = t.box()
        at = [(b["x"] + fx * b["width"], b["y"] + fy * b["height"]) for fx, fy in SEVEN]
        page.mouse.move(*at[0])
        page.mouse.down()
        page.mouse.move(*at[1], steps=12)
        page.wait_for_selector("#result[data-state=ready]", state="attached")
        middle = ((at[1][0] + at[2][0]) / 2, (at[1][1] + at[2][1]) / 2)
        page.mouse.move(*middle, steps=6)
        page.wait_for_selector("#result[data-busy=false]", state="attached")
        page.wait_for_timeout(300)  # let the bars finish their short transition
        page.locator("body").screenshot(path=str(folder / "web-drawing.png"))
        page.mouse.move(*at[2], steps=6)
        page.mouse.up()
        assert t.settled() == "ready"
        page.wait_for_timeout(300)
        page.locator("body").screenshot(path=str(folder / "web-result.png"))
    finally:
        t.close()
    assert (folder / "web-drawing.png").stat().st_size > 0 and (folder / "web-result.png").stat().st_size > 0
    assert t.errors == []
