"""The studio page in a real browser: the system's headless Chromium driven by Playwright (no browser download),
against `python -m mlx_acestep serve --model tiny` with an API key. Screenshots of each state go to
.artifacts/screenshots/ (git ignores it; $MLX_ACESTEP_SCREENSHOTS moves it).

The server runs with the OpenBLAS LD_PRELOAD the suite runs with; the browser and Playwright's driver must not:
their threads fail to start with it (`pthread_create: Invalid argument`), so both start with it taken out.
"""

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("studio-browser")]

KEY = "studio-browser-key"
CHROMIUM = os.environ.get("MLX_ACESTEP_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-dev-shm-usage",  # a container's small /dev/shm crashes Chromium's renderer
]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("MLX_ACESTEP_SCREENSHOTS", ROOT / ".artifacts" / "screenshots"))
QUICK = {"#duration": "10", "#batch": "1", "#steps": "2"}  # a short song, few steps: the tiny model in ~2 s
SECONDS = 60_000  # ms: Playwright's waits for a job (the shared CI machine may be slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The page's server, as a user starts it; its log goes to the failure message."""
    folder = tmp_path_factory.mktemp("studio-browser")
    port, log = free_port(), (folder / "serve.log").open("w")
    command = [sys.executable, "-m", "mlx_acestep", "serve", "--model", "tiny", "--port", str(port)]
    command += ["--api-key", KEY, "--output-dir", str(folder / "out"), "--input-dir", str(folder / "adapters")]
    (folder / "adapters").mkdir()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited: {(folder / 'serve.log').read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url + "/health", timeout=2).read()
            break
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@contextlib.contextmanager
def without_preload():
    saved = os.environ.pop("LD_PRELOAD", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["LD_PRELOAD"] = saved


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with without_preload():  # Playwright's driver and Chromium inherit the environment at their start
        playwright = sync_api.sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield browser
    browser.close()
    playwright.stop()


# What the page posts as a form, seen from outside its code (Chromium hands Playwright no body that holds a file).
SPY = """
window.__forms = [];
const send = window.fetch;
window.fetch = (url, init = {}) => {
  if (init.body instanceof FormData) {
    const fields = {};
    for (const [k, v] of init.body.entries()) fields[k] = v instanceof File ? `file:${v.name}` : v;
    window.__forms.push({ url: String(url), fields });
  }
  return send(url, init);
};
"""


def open_page(browser, server, key=KEY, width=1280, height=900):
    context = browser.new_context(viewport={"width": width, "height": height})
    if key:  # the key asked once before, kept in the browser's storage
        context.add_init_script(f"localStorage.setItem('mlx-acestep.key', {json.dumps(key)})")
    context.add_init_script(SPY)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    outside = []
    page.on("request", lambda r: None if r.url.startswith((server, "blob:", "data:")) else outside.append(r.url))
    page.outside = outside
    page.goto(server + "/")
    return page


@pytest.fixture(scope="module")
def page(browser, server):
    """One page for the tests that share a history (create, then replay its settings)."""
    page = open_page(browser, server)
    page.wait_for_selector("body[data-ready=true]")
    yield page
    assert not page.errors, page.errors
    assert not page.outside, page.outside  # every request went to the server itself
    page.context.close()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def fill(page, values: dict):
    if not page.is_visible("#steps"):
        page.click("#advanced summary")
    for selector, value in values.items():
        page.fill(selector, value)


def server_call(server, path, body=None, key=KEY):
    """(status, JSON body) straight from the server: what the page should show, got without the page."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server + path, data=data, headers={"Authorization": f"Bearer {key}"})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def submit(page):
    """Click Create / Edit and return the new job's card, found by its id (`.first` would follow the next one)."""
    before = page.locator("#jobs > li").count()
    page.click("#go")
    page.wait_for_function("n => document.querySelectorAll('#jobs > li').length > n", arg=before)
    return page.locator(f'#jobs > li[data-id="{page.locator("#jobs > li").first.get_attribute("data-id")}"]')


def newest_card(page, state):
    return page.locator(f"#jobs > li.job.{state}").first


def test_create_and_play(page, server):
    page.fill("#prompt", "gentle piano, warm pads")
    fill(page, QUICK)
    page.select_option("#audio-format", "wav")
    shot(page, "01-create-form")
    card = submit(page)
    progress = []
    for _ in range(300):  # the bar as it moves, until the job ends
        progress.append(card.locator("progress").evaluate("p => p.hidden ? 1 : p.value"))
        if "succeeded" in card.get_attribute("class"):
            break
        if len(progress) == 3:
            shot(page, "02-progress")
        time.sleep(0.1)
    assert progress == sorted(progress), progress  # never goes back
    audio = card.locator(".song audio")
    audio.wait_for(state="attached", timeout=SECONDS)
    page.wait_for_function("a => a.src.startsWith('blob:') && a.duration > 0", arg=audio.element_handle())
    assert abs(audio.evaluate("a => a.duration") - 10.0) < 0.05  # the 10 s asked for
    audio.evaluate("a => a.play()")
    page.wait_for_function("a => a.currentTime > 0.2", arg=audio.element_handle(), timeout=10_000)
    shot(page, "03-result-playing")
    # the download is the server's file, byte for byte
    link = card.locator("a.download")
    assert link.get_attribute("download").endswith(".wav")
    task = card.get_attribute("data-id")
    status, body = server_call(server, "/query_result", {"task_id_list": [task]})
    item = json.loads(json.loads(body)["data"][0]["result"])[0]
    status, wav = server_call(server, item["file"])
    digest = "a => fetch(a.href).then(r => r.arrayBuffer()).then(b => crypto.subtle.digest('SHA-256', b))"
    digest += ".then(d => Array.from(new Uint8Array(d), x => x.toString(16).padStart(2, '0')).join(''))"
    assert status == 200 and link.evaluate(digest) == hashlib.sha256(wav).hexdigest()
    assert card.locator(".song .muted").first.inner_text().startswith(f"seed {item['seed_value']}")


def test_replay_settings_from_history(page):
    card = newest_card(page, "succeeded")
    card.wait_for(timeout=SECONDS)
    page.fill("#prompt", "something else")
    fill(page, {"#duration": "33", "#steps": "5"})
    page.select_option("#audio-format", "flac")
    card.locator("button.again").click()
    # what test_create_and_play typed, back in the form
    assert page.input_value("#prompt") == "gentle piano, warm pads"
    assert page.input_value("#duration") == "10" and page.input_value("#steps") == "2"
    assert page.input_value("#batch") == "1" and page.input_value("#audio-format") == "wav"
    assert page.input_value("#seed") == ""  # that job's seed was random; its settings say so
    card.locator("details.settings-box summary").click()
    shown = card.locator("dl.settings").inner_text()
    assert "gentle piano, warm pads" in shown and "audio_duration" in shown
    shot(page, "04-history-replayed")


def test_vary_delete_and_come_back(page, server):
    """Vary this: the song's own seed again with a retake seed (as the server reports it); Delete: gone from the
    page and from the server; a reload lists the jobs left, with their audio."""
    card = newest_card(page, "succeeded")
    seed = card.locator(".song .muted").first.inner_text().split()[1]
    card.locator("button.vary").first.click()
    page.locator(f"#jobs > li:first-child:not([data-id='{card.get_attribute('data-id')}'])").wait_for()
    varied = page.locator(f'#jobs > li[data-id="{page.locator("#jobs > li").first.get_attribute("data-id")}"]')
    varied.locator(".song audio").wait_for(state="attached", timeout=SECONDS)
    task = varied.get_attribute("data-id")
    _, body = server_call(server, "/query_result", {"task_id_list": [task]})
    items = json.loads(json.loads(body)["data"][0]["result"])
    assert [item["seed_value"] for item in items] == [seed]  # one song, on the varied song's seed
    varied.locator("details.settings-box summary").click()
    shown = varied.locator("dl.settings").inner_text()
    assert "retake_seed" in shown and "retake_variance\n0.1" in shown
    shot(page, "05-varied")
    varied.locator("button.delete").click()
    page.locator(f'#jobs > li[data-id="{task}"]').wait_for(state="detached")
    _, body = server_call(server, "/query_result", {"task_id_list": [task]})
    assert json.loads(body)["data"][0]["progress_text"] == "unknown task"  # the server forgot it too
    left = page.locator("#jobs > li").evaluate_all("cards => cards.map(c => c.dataset.id)")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#jobs > li").evaluate_all("cards => cards.map(c => c.dataset.id)") == left
    newest_card(page, "succeeded").locator(".song audio[src]").first.wait_for(state="attached")


def test_bad_value_shows_the_servers_message(page, server):
    page.fill("#prompt", "gentle piano")
    fill(page, {"#duration": "5000"})
    jobs = page.locator("#jobs > li").count()
    page.click("#go")
    page.locator("#form-error:not(:empty)").wait_for()
    body = {"prompt": "gentle piano", "audio_duration": 5000, "batch_size": 1, "inference_steps": 2}
    body |= {"audio_format": "wav"}
    status, answer = server_call(server, "/release_task", body)
    assert status == 400
    assert page.text_content("#form-error") == json.loads(answer)["detail"]  # the server's line, as it sent it
    assert "audio_duration" in page.text_content("#form-error")
    assert page.locator("#jobs > li").count() == jobs  # no job
    shot(page, "06-bad-value")
    fill(page, {"#duration": "10"})
    page.click("nav [data-tab=adapters]")  # the same on the LoRA routes: a path outside the input folders
    page.locator("#adapter-list li", has_text="none loaded").wait_for()
    page.fill("#adapter-path", "/etc")
    page.click("#adapter-load button")
    page.locator("#adapter-error:not(:empty)").wait_for()
    status, answer = server_call(server, "/v1/lora/load", {"lora_path": "/etc"})
    assert status == 403 and page.text_content("#adapter-error") == json.loads(answer)["detail"]
    shot(page, "06-bad-adapter")
    page.click("nav [data-tab=create]")


def test_cancel(page):
    page.fill("#prompt", "a long drone")
    fill(page, {"#duration": "180", "#steps": "8"})  # a minute on the tiny model: long enough to catch it running
    running = submit(page)
    page.fill("#prompt", "waits behind it")
    fill(page, QUICK)
    waiting = submit(page)
    waiting.locator(".state", has_text="in the queue").wait_for(timeout=SECONDS)
    shot(page, "07-queued")
    waiting.locator("button.cancel").click()
    waiting.locator(".state", has_text="cancelled").wait_for(timeout=SECONDS)  # at once, not when its turn comes
    page.locator(f"li.job.running[data-id='{running.get_attribute('data-id')}']").wait_for(timeout=SECONDS)
    running.locator("button.cancel").click()
    running.locator(".state", has_text="cancelled").wait_for(timeout=SECONDS)
    assert "cancelled" in running.get_attribute("class") and "cancelled" in waiting.get_attribute("class")
    assert running.locator("button.cancel").is_hidden() and running.locator("audio").count() == 0
    shot(page, "08-cancelled")


def test_repaint_a_region_drawn_on_the_waveform(page, tmp_path):
    rate, seconds = 48000, 3.0  # the VAE encodes the source: ~5 s a second of audio on a busy 2-core machine
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
    source = tmp_path / "take.wav"
    sf.write(source, np.stack([tone, tone], axis=1).astype(np.float32), rate)
    page.click("nav [data-tab=edit]")
    page.set_input_files("#source-file", str(source))
    page.select_option("#task", "repaint")
    wave = page.locator("#source-wave.loaded")
    wave.wait_for()
    box = wave.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 0.25 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.45 * box["width"], y, steps=4)
    page.mouse.move(box["x"] + 0.60 * box["width"], y, steps=4)
    page.mouse.up()
    start, end = float(page.input_value("#region-start")), float(page.input_value("#region-end"))
    step = seconds / box["width"]  # one pixel, in seconds
    assert abs(start - 0.25 * seconds) <= 2 * step and abs(end - 0.6 * seconds) <= 2 * step, (start, end)
    page.fill("#prompt", "bright synth lead")
    fill(page, {"#steps": "2", "#batch": "1", "#duration": ""})
    shot(page, "09-repaint-region")
    card = submit(page)
    fields = page.evaluate("window.__forms.at(-1)")["fields"]
    assert fields["task_type"] == "repaint" and fields["src_audio"] == "file:take.wav"
    assert float(fields["repainting_start"]) == start and float(fields["repainting_end"]) == end
    card.locator(".song audio").wait_for(state="attached", timeout=SECONDS)
    assert "succeeded" in card.get_attribute("class")
    audio = card.locator(".song audio")
    page.wait_for_function("a => a.duration > 0", arg=audio.element_handle())
    assert abs(audio.evaluate("a => a.duration") - seconds) < 0.05  # a repaint keeps its source's length
    shot(page, "10-repainted")
    page.click("nav [data-tab=create]")


def test_api_key_prompt(browser, server):
    page = open_page(browser, server, key=None)  # a browser that has never been given the key
    dialog = page.locator("#key-dialog")
    dialog.wait_for()
    assert page.text_content("#key-why") == "Missing Authorization header"  # the server's 401 line
    page.fill("#key-input", "wrong")
    page.click("#key-ok")
    page.locator("#key-why", has_text="Invalid API key").wait_for()
    shot(page, "11-key-prompt")
    page.fill("#key-input", KEY)
    page.click("#key-ok")
    page.wait_for_selector("body[data-ready=true]")
    assert page.evaluate("localStorage.getItem('mlx-acestep.key')") == KEY
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert not dialog.is_visible()  # asked once: kept in the browser's storage
    assert not page.errors
    page.context.close()


def test_phone_width(browser, server):
    page = open_page(browser, server, width=390, height=844)
    page.wait_for_selector("body[data-ready=true]")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, overflow  # nothing wider than the phone's screen
    shot(page, "12-phone")
    page.context.close()
