"""The page in a real browser: Debian's chromium, driven by Selenium through chromedriver, on a
model trained here by ``stablecnn train`` (a small CNN, 12,000 MNIST images, one epoch: about
95% on MNIST's test set in 2 s).

A person's strokes are pointer actions (W3C actions: the browser receives real pointerdown,
pointermove and pointerup events) with a mouse, a finger (touch) and a pen. The tests check the
class the page shows, the 28 x 28 picture it shows against the API's, the feature maps, undo and
clear, the heading of an MNIST and a Fashion-MNIST model, a chosen picture file, the layout on a
phone's screen, and that the console holds no error (a script error, a Content-Security-Policy
violation, a missing file).

Skipped, with the reason, where selenium, chromium or chromedriver is missing (``apt-get install
chromium chromium-driver``; ``.ci/run`` installs them). The screenshot of the page after the
drawn "0" is saved as ``serve.png`` in the test's temporary folder, and copied to the path in
``$STABLECNN_SERVE_SCREENSHOT`` when that is set (the README's picture, ``docs/serve.png``, is made
so).
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from pathlib import Path

import pytest

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')"
)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.actions import interaction  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.actions.pointer_input import PointerInput  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get("STABLECNN_CHROMIUM") or shutil.which("chromium")
CHROMEDRIVER = os.environ.get("STABLECNN_CHROMEDRIVER") or shutil.which("chromedriver")
WAIT = 20  # seconds: the longest wait for the page to answer, a hang guard
SMALL_CNN = """
name = "small-cnn"
input_shape = [1, 28, 28]
[[layers]]
type = "Conv2d"
in_channels = 1
out_channels = 16
kernel_size = 5
[[layers]]
type = "ReLU"
[[layers]]
type = "MaxPool2d"
kernel_size = 2
[[layers]]
type = "Conv2d"
in_channels = 16
out_channels = 16
kernel_size = 5
[[layers]]
type = "ReLU"
[[layers]]
type = "MaxPool2d"
kernel_size = 2
[[layers]]
type = "Flatten"
[[layers]]
type = "Linear"
in_features = 256
out_features = 10
"""

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian's chromium and chromium-driver are not installed (apt-get install chromium "
    "chromium-driver; .ci/run installs them)",
)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory) -> Path:
    """A run of ``stablecnn train`` on real MNIST (the cache, the mirrors or the PyPI wheel, as
    every command reads it: an error, not a skip, when none serves)."""
    from stablecnn import cli

    folder = tmp_path_factory.mktemp("browser")
    (folder / "small.toml").write_text(SMALL_CNN)
    args = ["train", "--model", str(folder / "small.toml"), "--train-size", "12000"]
    args += ["--epochs", "1", "--optimizer", "adam", "--lr", "0.003", "--batch-size", "50"]
    args += ["--normalization", "unit", "--out", str(folder / "run"), "--no-plots"]
    assert cli.main(args) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def page_server(mnist_run):
    from stablecnn.serve import Predictor, make_server

    server = make_server(Predictor.load(mnist_run), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--hide-scrollbars")
    options.add_argument("--force-prefers-reduced-motion")  # the bars take their width at once
    options.add_argument("--window-size=1280,1100")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def open_page(driver, server, size=(1280, 1100)):
    driver.set_window_size(*size)
    driver.get(server.url)
    WebDriverWait(driver, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.ready") == "true"
    )
    return driver.find_element("id", "pad")


def stroke(driver, pad, points, kind=interaction.POINTER_MOUSE):
    """One stroke through ``points`` (CSS pixels from the pad's centre) with a mouse, a finger
    or a pen: W3C pointer actions, as a person's hand moves them."""
    actions = ActionBuilder(driver, mouse=PointerInput(kind, kind), duration=10)
    x, y = points[0]
    actions.pointer_action.move_to(pad, x, y).pointer_down()
    for x, y in points[1:]:
        actions.pointer_action.move_to(pad, x, y)
    actions.pointer_action.pointer_up()
    actions.perform()


def one(scale=1.0):
    return [(round(4 * scale * t / 10), round(scale * (-100 + 20 * t))) for t in range(11)]


def zero(scale=1.0):
    turn = [2 * math.pi * i / 32 for i in range(33)]
    return [(round(scale * 65 * math.sin(a)), round(-scale * 100 * math.cos(a))) for a in turn]


def shown_class(driver) -> str:
    return driver.find_element("id", "prediction").get_attribute("data-class")


def wait_for_class(driver, expected: str) -> None:
    try:
        WebDriverWait(driver, WAIT).until(lambda d: shown_class(d) == expected)
    except Exception:  # noqa: BLE001 - say what the page showed instead
        text = driver.find_element("id", "prediction").text
        status = driver.find_element("id", "status").text
        pytest.fail(
            f"the page shows {text!r} (class {shown_class(driver)!r}), not {expected!r}; "
            f"status {status!r}"
        )


def seen_pixels(driver) -> list[list[int]]:
    """The red channel of the 'what the model sees' canvas, row by row."""
    return driver.execute_script(
        "const c = document.getElementById('seen');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const rows = [];"
        "for (let y = 0; y < c.height; y++) {"
        "  const row = []; for (let x = 0; x < c.width; x++) row.push(d[4 * (y * c.width + x)]);"
        "  rows.push(row);"
        "}"
        "return rows;"
    )


def coloured_maps(driver) -> int:
    """How many feature-map canvases hold a pixel away from the scale's zero (247, 247, 247)."""
    return driver.execute_script(
        "let n = 0;"
        "for (const c of document.querySelectorAll('#maps canvas')) {"
        "  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "  for (let i = 0; i < d.length; i += 4) {"
        "    if (d[i + 3] && Math.abs(d[i] - 247) > 30) { n++; break; }"
        "  }"
        "}"
        "return n;"
    )


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_a_one_and_a_zero_drawn_with_the_mouse(browser, page_server, tmp_path):
    pad = open_page(browser, page_server)
    card = browser.find_element("id", "card").text
    accuracy = page_server.predictor.card["test_accuracy"]
    assert accuracy >= 0.9 and f"Test accuracy\n{100 * accuracy:.2f}%" in card
    assert len(browser.find_elements("css selector", "#bars li")) == 10
    assert len(browser.find_elements("css selector", "#maps canvas")) == 16

    stroke(browser, pad, one())
    wait_for_class(browser, "1")
    assert browser.find_element("css selector", "#bars li.top").get_attribute("data-class") == "1"
    seen = seen_pixels(browser)
    assert len(seen) == 28 and max(map(max, seen)) == 255 and seen[0][0] == 0  # light on black
    WebDriverWait(browser, WAIT).until(lambda d: coloured_maps(d) >= 8)

    browser.find_element("id", "undo").click()
    wait_for_class(browser, "")  # nothing drawn: no prediction
    assert max(map(max, seen_pixels(browser))) == 0
    stroke(browser, pad, zero())
    wait_for_class(browser, "0")
    browser.save_screenshot(str(tmp_path / "serve.png"))
    if os.environ.get("STABLECNN_SERVE_SCREENSHOT"):
        shutil.copyfile(tmp_path / "serve.png", os.environ["STABLECNN_SERVE_SCREENSHOT"])
    assert (tmp_path / "serve.png").stat().st_size > 10_000
    assert console_errors(browser) == []


def test_a_finger_and_a_pen_on_a_phone_screen(browser, page_server):
    pad = open_page(browser, page_server, size=(390, 844))
    width, inner = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert width <= inner  # nothing wider than the screen: no sideways scrolling
    assert pad.rect["width"] <= inner and pad.rect["width"] >= 250
    stroke(browser, pad, one(0.8), interaction.POINTER_TOUCH)
    wait_for_class(browser, "1")
    quick = browser.find_element("id", "quick")  # the answer under the pad, on a phone
    assert quick.is_displayed() and quick.text.startswith("1 · ")
    browser.find_element("id", "clear").click()
    wait_for_class(browser, "")
    stroke(browser, pad, zero(0.8), interaction.POINTER_PEN)
    wait_for_class(browser, "0")
    assert console_errors(browser) == []


def test_the_heading_follows_the_model(browser, page_server, mnist_run):
    """MNIST asks for a digit; the same network as a Fashion-MNIST model (its checkpoint's
    dataset changed) for a piece of clothing, in the title and the h1."""
    from stablecnn.data import Normalizer
    from stablecnn.serve import Predictor, make_server
    from stablecnn.training import checkpoint

    open_page(browser, page_server)
    assert browser.title == "Draw a digit · stablecnn"
    assert browser.find_element("css selector", "h1").text == "Draw a digit"
    model, ckpt = checkpoint.load_model(mnist_run)
    meta = {**ckpt.meta, "train": {**ckpt.meta["train"], "dataset": "fashion-mnist"}}
    fashion = Predictor(model, Normalizer.from_dict(ckpt.meta["normalizer"]), meta)
    server = make_server(fashion, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        open_page(browser, server)
        assert browser.title == "Draw a piece of clothing · stablecnn"
        assert browser.find_element("css selector", "h1").text == "Draw a piece of clothing"
        assert "T-shirt/top" in browser.find_element("id", "bars").text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert console_errors(browser) == []


def test_a_chosen_picture_is_shown_as_the_api_frames_it(browser, page_server, tmp_path):
    from PIL import Image, ImageDraw

    picture = Image.new("L", (300, 400), 230)  # grey paper, a dark stroke off-centre
    ImageDraw.Draw(picture).line([(60, 60), (70, 250)], fill=20, width=18)
    path = tmp_path / "photo.png"
    picture.save(path)
    from stablecnn.data.pictures import picture_from_bytes

    expected = picture_from_bytes(path.read_bytes())[0]
    answer = page_server.predictor.predict(expected)
    open_page(browser, page_server)
    browser.find_element("id", "file").send_keys(str(path))
    wait_for_class(browser, str(answer["class"]))
    WebDriverWait(browser, WAIT).until(lambda d: seen_pixels(d) == expected.tolist())
    assert "photo.png" in browser.find_element("id", "source").text
    assert console_errors(browser) == []
