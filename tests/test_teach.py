"""The Teach view and /api/teach, against `edge run` collecting frames from a real clip.

A clip cutting between two asset photos (a cat, a sunflower) runs through `edge run` with a
`collect` output in interval mode; the frames it saves are labelled in headless Chromium
(clicks and keys), trained by the page (the tiny base model, a low-priority child process),
deployed through the reload path, and the running pipeline's results switch to the new labels.
Bad input over real HTTP is refused with a clear 4xx and changes nothing on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import IMAGES, REPO, TINY_MODEL
from helpers import stop_process
from test_web import URL_LINE, browser, get_json, http, wait_for  # noqa: F401  (fixture)

from edge import teach as teachmod
from edge.demo import make_clip

H = {"X-Edge-Teach": "1", "Content-Type": "application/json"}


def post(url: str, body, headers: dict | None = None, token: str | None = None):
    """(status, JSON body) of one POST; error statuses are returned, not raised."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, dict(H if headers is None else headers),
                                 method="POST")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode()


def listing(root: Path) -> dict[str, int]:
    """Every file and folder under the dataset (its .teach state aside) with its size."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(teachmod.STATE):
            continue
        out[rel] = -1 if p.is_dir() else p.lstat().st_size
    return out


def truth(path: Path) -> str:
    """Which photo a frame shows: the sunflower is far greener than blue, the cat is not."""
    b, g, _ = cv2.imread(str(path)).reshape(-1, 3).mean(axis=0)
    return "flower" if g - b > 64 else "cat"


class TeachEdge:
    """`edge run` with a config file naming its model (no --model: deploy may change it)."""

    def __init__(self, tmp: Path, clip: Path) -> None:
        self.tmp, self.dataset = tmp, tmp / "ds"
        self.cfg = tmp / "edge.yaml"
        self.models = tmp / "models"
        self.write_config(every_s=0.1)
        self.log = tmp / "edge.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "EDGE_MODEL_DIR": str(self.models),
                    "EDGE_CACHE_DIR": str(tmp / "cache")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(self.cfg), "--source",
             str(clip)], stdout=subprocess.DEVNULL, stderr=self.log.open("w"), cwd=REPO,
            env=self.env)
        self.url = ""

    def write_config(self, every_s: float) -> None:
        self.cfg.write_text(f"""
device: teach-test
source: {{loop: true}}
model: {{path: {TINY_MODEL}, threads: 1}}
outputs:
  - collect: {{mode: interval, dir: {self.tmp / "ds"}, every_s: {every_s}, max_files: 60}}
web: {{bind: "127.0.0.1:0"}}
""")

    def reloads(self) -> int:
        return self.log.read_text().count("config reloaded")

    def start(self) -> None:
        def url():
            m = URL_LINE.search(self.log.read_text())
            assert self.proc.poll() is None, self.log.read_text()
            return m and m.group(1)

        self.url = wait_for(url, 40, "edge run's web server")

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, assets) -> Path:
    out = tmp_path_factory.mktemp("teachclip") / "two.avi"
    return make_clip(out, IMAGES, names=("cat.bmp", "sunflower.bmp") * 3, frames_per_image=15,
                     size=(320, 240), fps=30, pan=True)


@pytest.fixture(scope="module")
def edge(tmp_path_factory, clip):
    e = TeachEdge(tmp_path_factory.mktemp("teach"), clip)
    try:
        e.start()
        unl = e.dataset / "unlabelled"
        wait_for(lambda: unl.is_dir() and len(list(unl.glob("*.jpg"))) >= 30, 60,
                 "30 collected frames")
        # stop collecting (the user's next step: a config that keeps a frame a day), so the
        # grid stays put while the test labels it; through the ordinary reload
        before = e.reloads()
        e.write_config(every_s=86400)
        e.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: e.reloads() > before, 30, "the reload")
        time.sleep(0.3)  # the old collect output's last queued frames land
        yield e
    finally:
        e.stop()


# ------------------------------------------------------------------ bad input


def test_bad_input_is_a_clear_4xx_and_changes_nothing(edge):
    api = edge.url + "api/teach"
    assert post(api + "/class", {"name": "alpha"})[0] == 200
    frame = sorted((edge.dataset / "unlabelled").glob("*.jpg"))[0].name
    outside = edge.tmp / "secret.jpg"
    outside.write_bytes((edge.dataset / "unlabelled" / frame).read_bytes())
    (edge.dataset / "unlabelled" / "link.jpg").symlink_to(outside)
    cases = [
        ("/class", {"name": "../x"}, H, 400, "class name"),
        ("/class", {"name": ""}, H, 400, "non-empty"),
        ("/class", {"name": "a/b"}, H, 400, "class name"),
        ("/class", {"name": "unlabelled"}, H, 400, "reserved"),
        ("/class", {"name": "alpha"}, H, 409, "exists"),
        ("/class/rename", {"name": "nope", "to": "beta"}, H, 404, "no class 'nope'"),
        ("/class/rename", {"name": "alpha", "to": "../../etc"}, H, 400, "class name"),
        ("/class/delete", {"name": "nope"}, H, 404, "no class"),
        ("/move", {"ids": [f"unlabelled/{frame}"], "to": "nope"}, H, 404, "no class 'nope'"),
        ("/move", {"ids": [f"unlabelled/{frame}"], "to": "../x"}, H, 400, "class name"),
        ("/move", {"ids": ["unlabelled/../edge.yaml"], "to": "alpha"}, H, 400, "FOLDER/NAME"),
        ("/move", {"ids": ["../secret.jpg"], "to": "alpha"}, H, 400, "class name"),
        ("/move", {"ids": ["/etc/passwd"], "to": "alpha"}, H, 400, "FOLDER/NAME"),
        ("/move", {"ids": ["unlabelled/.hidden.jpg"], "to": "alpha"}, H, 400, "plain image"),
        ("/move", {"ids": ["unlabelled/link.jpg"], "to": "alpha"}, H, 404, "no frame"),
        ("/move", {"ids": ["unlabelled/gone.jpg"], "to": "alpha"}, H, 404, "no frame"),
        ("/move", {"ids": [], "to": "alpha"}, H, 400, "non-empty list"),
        # one bad id in a batch: nothing moves, the good one neither
        ("/move", {"ids": [f"unlabelled/{frame}", "unlabelled/x/../y.jpg"], "to": "alpha"}, H,
         400, "FOLDER/NAME"),
        ("/delete", {"ids": ["alpha/../../edge.yaml"]}, H, 400, "FOLDER/NAME"),
        ("/delete", {"ids": ["unlabelled/link.jpg"]}, H, 404, "no frame"),
        ("/train", {"region": "nope"}, H, 409, "two classes"),
        ("/deploy", {"name": "x"}, H, 409, "train first"),
        ("/deploy", {"name": "../x"}, H, 400, "model name"),
        ("/deploy", {"name": "x", "region": "flap"}, H, 404, "no region 'flap'"),
        ("/rollback", {}, H, 409, "nothing to roll back"),
        ("/class", b"{not json", H, 400, "not JSON"),
        ("/class", {"name": "gamma"}, {"Content-Type": "application/json"}, 403, "X-Edge-Teach"),
        ("/class", {"name": "gamma"}, {"X-Edge-Teach": "1", "Content-Type": "text/plain"}, 415,
         "JSON"),
        ("/class", {"name": "gamma"}, {**H, "Origin": "http://evil.example"}, 403,
         "cross-origin"),
        ("/class", {"name": "gamma"}, {**H, "Origin": "null"}, 403, "cross-origin"),
        ("/class", {"name": "gamma"}, {**H, "Sec-Fetch-Site": "cross-site"}, 403,
         "cross-origin"),
        ("/nothing", {"name": "gamma"}, {**H, "Origin": "http://evil.example"}, 403,
         "cross-origin"),
        ("/nothing", {}, H, 404, "not found"),
    ]
    for path, body, headers, code, words in cases:
        before = listing(edge.dataset)
        got, answer = post(api + path, body, headers)
        assert got == code and words in answer["error"], (path, body, got, answer)
        assert listing(edge.dataset) == before, (path, body)
    # the origin check comes before routing, for any path under /api/ (and beyond)
    for path in ("api/status", "api/anything/at/all", "api/teach/move"):
        code, answer = post(edge.url + path, {}, {**H, "Origin": "http://attacker.test:8080"})
        assert code == 403 and "cross-origin" in answer["error"], (path, code, answer)
    assert post(edge.url + "api/config", {}, {})[0] == 405  # same origin, not the Teach API
    for q in ("id=../edge.yaml", "id=unlabelled/../../edge.yaml", "id=unlabelled/link.jpg",
              "id=%2Fetc%2Fpasswd"):
        code, _, body = http(api + "/image?" + q)
        assert code in (400, 404) and b"error" in body, (q, code, body)
    code, _, body = http(api + f"/image?id=unlabelled/{frame}&region=nope")
    assert code == 404 and b"no region" in body
    # an unknown region: refused before anything starts
    assert post(api + "/class", {"name": "beta"})[0] == 200
    code, answer = post(api + "/train", {"region": "nope"})
    assert code == 409  # (two classes without frames: not trainable either)
    (edge.dataset / "unlabelled" / "link.jpg").unlink()
    for name in ("alpha", "beta"):
        assert post(api + "/class/delete", {"name": name})[0] == 200
    assert get_json(api)["classes"] == []


def test_disk_budget_is_kept_when_frames_go_back(edge, tmp_path):
    """Moving frames back into unlabelled may not exceed the collect output's budget."""
    api = edge.url + "api/teach"
    unl = edge.dataset / "unlabelled"
    assert post(api + "/class", {"name": "spare"})[0] == 200
    spare = edge.dataset / "spare"
    have = len(list(unl.glob("*.jpg")))
    src = sorted(unl.glob("*.jpg"))[0]
    for i in range(60 - have + 1):  # one more than max_files: 60
        (spare / f"extra_{i}.jpg").write_bytes(src.read_bytes())
    ids = [f"spare/{p.name}" for p in sorted(spare.glob("*.jpg"))]
    before = listing(edge.dataset)
    code, answer = post(api + "/move", {"ids": ids, "to": "unlabelled"})
    assert code == 409 and "disk budget" in answer["error"] and "max_files 60" in answer["error"]
    assert listing(edge.dataset) == before
    code, answer = post(api + "/class/delete", {"name": "spare"})
    assert code == 409 and listing(edge.dataset) == before
    assert post(api + "/delete", {"ids": ids})[0] == 200
    assert post(api + "/class/delete", {"name": "spare"})[0] == 200
    assert not spare.exists()


def test_grouping_folds_near_duplicates_and_orders_uncertain_distinct_first():
    a, b = 0x0F0F0F0F0F0F0F0F, 0xF0F0F0F0F0F0F0F0
    items = [
        {"id": "u/a1", "name": "a1", "uncertainty": 0.9, "hash": a},
        {"id": "u/a2", "name": "a2", "uncertainty": 0.2, "hash": a ^ 0b111},  # 3 bits off a
        {"id": "u/a3", "name": "a3", "uncertainty": 0.8, "hash": a ^ (1 << 40)},
        {"id": "u/b1", "name": "b1", "uncertainty": 0.3, "hash": b},
        {"id": "u/c1", "name": "c1", "uncertainty": 0.85, "hash": a ^ 0xFFF},  # 12 bits off a
    ]
    groups = teachmod.order_groups(items)
    assert [g["id"] for g in groups][0] == "u/a1"  # the most uncertain first
    assert sorted(groups[0]["members"]) == ["u/a1", "u/a2", "u/a3"]  # folded
    # b is far from a (64 bits) though surer; c is more uncertain but near a: b comes second
    assert [g["id"] for g in groups] == ["u/a1", "u/b1", "u/c1"]
    assert teachmod.uncertainty([["x", 0.5], ["y", 0.45]]) == pytest.approx(0.95)
    assert teachmod.uncertainty([]) == 0.5


# ------------------------------------------------------------------ the whole loop


def screenshot(driver, path: Path) -> np.ndarray:
    driver.save_screenshot(str(path))
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 300 and img.shape[1] >= 390, path
    assert img.reshape(-1, 3).std(axis=0).max() > 20, f"{path}: nearly one colour"
    return img


def tiles(driver):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#grid .tile-frame")


def click(driver, css: str) -> None:
    """Click what `css` names, again if the page re-rendered it meanwhile (it refreshes after
    every change)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def once():
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return True
        except StaleElementReferenceException:
            return False

    wait_for(once, 10, f"a click on {css}", every=0.05)


def settled(driver) -> None:
    """Wait until the page's last change and its refresh are done (body[data-busy] gone)."""
    wait_for(lambda: driver.execute_script("return !document.body.dataset.busy"), 10,
             "the page to settle", every=0.05)


def ids_shown(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#grid .tile-frame')].map(t => t.dataset.id)")


def tile_truth(edge, tile) -> str:
    return truth(edge.dataset / tile.get_attribute("data-id"))


def api_counts(edge) -> dict:
    o = get_json(edge.url + "api/teach")
    return {"unlabelled": o["unlabelled"], **{c["name"]: c["count"] for c in o["classes"]}}


def test_label_train_deploy_rollback_in_the_browser(edge, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.set_window_size(1280, 900)
    browser.get(edge.url)  # the status page links to the Teach view
    wait_for(lambda: browser.find_element(By.ID, "teach-link").get_attribute("href"), 10,
             "the Teach link")
    browser.find_element(By.ID, "teach-link").click()
    wait_for(lambda: len(tiles(browser)) >= 2, 20, "the grid of unlabelled frames")
    start = api_counts(edge)
    total = start["unlabelled"]
    # each tile shows the crop the model sees: a real picture, not a broken image
    img = tiles(browser)[0].find_element(By.TAG_NAME, "img")
    wait_for(lambda: browser.execute_script("return arguments[0].naturalWidth", img) > 0, 10,
             "a thumbnail")
    folded = sum(int(t.get_attribute("title").count("near-duplicates")) for t in tiles(browser))
    assert len(tiles(browser)) < total and folded, "near-duplicate frames fold into one tile"

    for name in ("cat", "flower"):
        box = browser.find_element(By.ID, "new-class")
        box.send_keys(name)
        box.send_keys(Keys.ENTER)
        wait_for(lambda n=name: browser.find_elements(By.CSS_SELECTOR,
                                                      f'#class-buttons [data-cls="{n}"]'),
                 10, f"the {name} button")
    body = browser.find_element(By.TAG_NAME, "body")

    def wait_moved(moved: str):
        wait_for(lambda: not (edge.dataset / moved).exists(), 10, "the move")
        settled(browser)
        assert moved not in ids_shown(browser)

    # bulk: shift-click a range, assign it with a key, then undo with Ctrl+Z
    ts = tiles(browser)
    ts[0].click()
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).key_down(Keys.SHIFT).click(ts[2]).key_up(Keys.SHIFT).perform()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grid .selected")) == 3
    body.send_keys("1")
    wait_for(lambda: api_counts(edge).get("cat", 0) > 0, 10, "a bulk move")
    settled(browser)
    body.send_keys(Keys.CONTROL, "z")
    wait_for(lambda: api_counts(edge) == {**start, "cat": 0, "flower": 0}, 10, "the undo")
    settled(browser)

    # delete one tile (all its frames) with the Delete key
    first = tiles(browser)[0]
    gone = first.get_attribute("data-id")
    first.click()
    n_del = len(get_json(edge.url + "api/teach/frames")["groups"][0]["members"])
    body.send_keys(Keys.DELETE)
    wait_for(lambda: api_counts(edge)["unlabelled"] == total - n_del, 10, "the delete")
    settled(browser)
    assert gone not in ids_shown(browser)
    assert not (edge.dataset / gone).exists()

    # label every tile: the first by clicking a class button, then keys at the cursor
    used_click = used_key = False
    for _ in range(60):
        ts = tiles(browser)
        if not ts:
            break
        sel = browser.find_elements(By.CSS_SELECTOR, "#grid .selected")
        tile = sel[0] if sel else ts[0]
        if not sel:
            tile.click()
        moved = tile.get_attribute("data-id")
        want = tile_truth(edge, tile)
        if not used_click:
            browser.find_element(By.CSS_SELECTOR, f'#class-buttons [data-cls="{want}"]').click()
            used_click = True
        else:
            body.send_keys("1" if want == "cat" else "2")
            used_key = True
        wait_moved(moved)
    assert used_click and used_key
    counts = api_counts(edge)
    assert counts["unlabelled"] == 0 and counts["cat"] + counts["flower"] == total - n_del
    for cls in ("cat", "flower"):  # every frame in its right class
        assert {truth(p) for p in (edge.dataset / cls).glob("*.jpg")} == {cls}
        assert len(list((edge.dataset / cls).glob("*.json"))) == counts[cls]  # .json moved along

    # move one frame between classes with arrows and a digit, then undo it
    click(browser, '#class-table tr[data-cls="cat"] button')
    wait_for(lambda: len(tiles(browser)) == counts["cat"], 10, "the cat frames")
    settled(browser)
    tiles(browser)[0].click()
    body.send_keys(Keys.ARROW_RIGHT)
    moved_id = tiles(browser)[1].get_attribute("data-id")
    body.send_keys("2")
    wait_for(lambda: api_counts(edge)["flower"] == counts["flower"] + 1, 10, "cat -> flower")
    assert (edge.dataset / "flower" / moved_id.split("/")[1]).exists()
    settled(browser)
    body.send_keys(Keys.CONTROL, "z")
    wait_for(lambda: api_counts(edge) == counts, 10, "undo cat -> flower")
    settled(browser)
    assert (edge.dataset / moved_id).exists()
    # the class table says per class how many and whether it is enough
    def table():
        return browser.execute_script(
            "const o = {}; for (const r of document.querySelectorAll('#class-table tbody tr'))"
            " o[r.dataset.cls] = r.innerText; return o")

    text = wait_for(lambda: (t := table()) and all(
        t.get(c, "").split("\t")[1:2] == [str(counts[c])] for c in ("cat", "flower")) and t,
        10, "the class table's counts")
    for cls in ("cat", "flower"):
        assert str(counts[cls]) in text[cls]
        assert ("enough" in text[cls]) == (counts[cls] >= 10), text[cls]

    # train from the page: progress, then metrics, confusion matrix and the wrong images
    settled(browser)
    click(browser, "#train")

    def trained():
        if browser.find_element(By.ID, "results").is_displayed():
            return True
        state = get_json(edge.url + "api/teach/train")
        assert state.get("state") != "failed", state  # say why, not only that it timed out
        return False

    try:
        wait_for(trained, 120, "the training results")
    except AssertionError:
        page = browser.execute_script("return document.body.innerText")
        raise AssertionError(f"no results; train: {get_json(edge.url + 'api/teach/train')}; "
                             f"page: {page[-1500:]}") from None
    assert "trained in" in browser.find_element(By.ID, "train-state").text
    assert "accuracy" in browser.find_element(By.ID, "accuracy").text
    metrics = browser.find_elements(By.CSS_SELECTOR, "#metrics tbody tr")
    assert [m.text.split()[0] for m in metrics] == ["cat", "flower"]
    results = get_json(edge.url + "api/teach/results")
    cm = np.array(results["confusion"])
    assert cm.sum() == total - n_del
    assert len(results["wrong"]) == cm.sum() - np.trace(cm)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#confusion tr")) == 3
    assert "embedding" in browser.find_element(By.ID, "train-output").text
    shots = [screenshot(browser, tmp_path / "teach-desktop.png")]

    # a phone: the grid, the class buttons and the train button are reachable
    browser.set_window_size(390, 844)
    click(browser, '#class-table tr[data-cls="flower"] button')
    wait_for(lambda: len(tiles(browser)) == counts["flower"], 10, "the flower frames")
    settled(browser)
    browser.execute_script("window.scrollTo(0, 0)")  # the first screen, as the phone opens it
    wait_for(lambda: browser.execute_script("return window.scrollY") == 0, 5, "the scroll")
    width = browser.execute_script("return document.documentElement.clientWidth")
    for css in ("#train", '#class-buttons [data-cls="cat"]', '#class-buttons [data-cls="flower"]',
                "#grid .tile-frame"):
        r = browser.execute_script("const r = document.querySelector(arguments[0])"
                                   ".getBoundingClientRect(); return [r.left, r.right, r.top, "
                                   "r.bottom]", css)
        assert r[0] >= 0 and r[1] <= width and r[2] >= 0 and r[3] <= 844, (css, r, width)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
    shots.append(screenshot(browser, tmp_path / "teach-phone.png"))
    browser.set_window_size(1280, 900)

    # deploy: the running pipeline's results switch to the new labels
    name = browser.find_element(By.ID, "model-name")
    name.clear()
    name.send_keys("catflower")
    wait_for(lambda: browser.find_element(By.ID, "deploy").is_enabled(), 10, "Deploy enabled")
    click(browser, "#deploy")
    wait_for(lambda: "deployed catflower" in browser.find_element(By.ID, "deploy-state").text,
             40, "the deploy")
    assert (edge.models / "catflower.tflite").is_file()
    seen: set = set()

    def both_labels():
        s = get_json(edge.url + "api/status")
        if s["model"]["model"] == "catflower" and s["regions"][0]["top"]:
            seen.add(s["regions"][0]["top"][0][0])
        return seen >= {"cat", "flower"}

    wait_for(both_labels, 30, "results with the new labels", every=0.1)
    assert seen == {"cat", "flower"}
    assert "path: catflower" in edge.cfg.read_text()
    shots.append(screenshot(browser, tmp_path / "teach-deployed.png"))

    # one click rolls back to the previous model and config
    wait_for(lambda: browser.find_element(By.ID, "rollback").is_enabled(), 10, "Rollback")
    click(browser, "#rollback")
    wait_for(lambda: get_json(edge.url + "api/status")["model"]["model"] == TINY_MODEL.stem, 30,
             "the rollback")
    assert str(TINY_MODEL) in edge.cfg.read_text()
    for i, shot in enumerate(shots):  # kept for a person to look at
        cv2.imwrite(f"/tmp/teach-test-{i}.png", shot)


# ------------------------------------------------------------------ off loopback


def test_token_is_required_off_loopback(tmp_path, assets):
    """Bound to every address with a token: the Teach API needs it like every endpoint, and
    a same-origin header check on top."""
    from edge import config as configmod
    from edge.model import load_model
    from edge.pipeline import Pipeline
    from edge.web import WebServer

    cfg = configmod.parse(f"""
outputs:
  - collect: {{mode: interval, dir: {tmp_path / "ds"}}}
web: {{bind: "0.0.0.0:0", token: s3cret-token}}
""")
    pipe = Pipeline(cfg, load_model(TINY_MODEL, threads=1))
    teach = teachmod.Teach(pipe, teachmod.Setup(None, tmp_path / "models"))
    server = WebServer(cfg.web, pipe, teach).start()
    try:
        url = f"http://127.0.0.1:{server.httpd.server_address[1]}/api/teach"
        assert http(url)[0] == 401
        assert post(url + "/class", {"name": "cat"})[0] == 401
        assert post(url + "/class", {"name": "cat"}, {"Content-Type": "application/json"},
                    token="s3cret-token")[0] == 403
        code, answer = post(url + "/class", {"name": "cat"}, token="s3cret-token")
        assert code == 200 and (tmp_path / "ds" / "cat").is_dir()
        o = json.loads(http(url, token="s3cret-token")[2])
        assert o["classes"][0]["name"] == "cat" and o["deploy_possible"] is False
        assert "without a config file" in o["deploy_blocker"]
    finally:
        server.stop()
