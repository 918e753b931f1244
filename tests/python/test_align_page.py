"""jaxport align in a real browser: headless Chromium (Debian's
chromium-headless-shell, which scripts/setup installs) driven by Playwright
loads the page, a person's choices are made with its own select, input and
buttons, and the plan it saves converts a model whose outputs match
PyTorch's. test_align.py checks the server's requests one by one; this checks
the page's script that makes them."""

import json
import shutil

import numpy as np
import pytest

import jaxport
from test_align import Flax, Server, files, torch_forward  # noqa: F401  (files is a fixture)

BROWSER = "chromium-headless-shell"


@pytest.fixture
def page():
    exe = shutil.which(BROWSER)
    if exe is None:
        pytest.fail(f"{BROWSER} is not installed: scripts/setup installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe)
        pg = browser.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        # a refused request is logged by the browser too; the page shows it
        pg.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
              and errors.append(m.text))
        yield pg
        browser.close()
        assert errors == []


def status_says(page, start):
    page.wait_for_function("s => document.getElementById('status').textContent.startsWith(s)", arg=start)
    return page.inner_text("#status")


def test_a_person_pairs_on_the_page_and_the_plan_converts(files, tmp_path, page):  # noqa: F811
    ckpt, leaves, like, m = files
    out = tmp_path / "plan.json"
    s = Server(ckpt, leaves, out)
    try:
        page.goto(s.base + "/")
        page.wait_for_selector("#plan tbody tr")
        assert page.inner_text("#summary").startswith("2 of 6 leaves paired (flax)")
        assert "not saved yet" in page.inner_text("#summary")
        rows = page.locator("#plan tbody tr")
        assert rows.count() == 6
        assert page.locator("#plan tbody tr.ambiguous").count() == 4
        assert page.inner_text("#hints") == "none"
        boxes = page.locator(".decide")
        assert boxes.count() == 2
        # The list offers first the modules whose weights no leaf takes, in
        # the checkpoint's order; the one already paired (head) comes after.
        first = boxes.filter(has_text="params/first/kernel")
        assert first.locator("select option").all_inner_texts()[:3] == ["enc", "dec", "head"]
        # The list's first choice is not the right one for the second
        # module: the pairing must follow what was picked.
        second = boxes.filter(has_text="params/second/kernel")
        assert second.locator("select").input_value() == "enc"
        second.locator("select").select_option("dec")
        second.locator("button").click()
        assert status_says(page, "Matched again") == "Matched again with 1 hint(s)."
        # One hint decides both: the other 4x4 module is what is left.
        assert page.inner_text("#summary").startswith("6 of 6 leaves paired")
        assert page.locator(".decide").count() == 0
        assert "Nothing: every leaf has its source." in page.inner_text("#decide")
        assert page.locator("#plan tbody tr.ambiguous").count() == 0
        assert page.inner_text("#hints").startswith("dec=second")
        # A hint removed on the page is gone from the session.
        page.locator("#hints button", has_text="remove").click()
        status_says(page, "Matched again with 0")
        assert page.inner_text("#summary").startswith("2 of 6")
        # The typed module wins over the list's choice (dec, after a hint
        # that was removed, is listed second).
        first = page.locator(".decide").filter(has_text="params/first/kernel")
        first.locator("select").select_option("dec")
        first.locator("input").fill("enc")
        first.locator("button").click()
        status_says(page, "Matched again with 1")
        assert page.inner_text("#hints").startswith("enc=first")
        assert page.locator(".decide").count() == 0  # second decided by elimination
        page.click("#quit")
        assert status_says(page, "Saved").startswith("Saved " + str(out))
        assert s.wait() == 0
    finally:
        s.stop()
    taken = {l["leaf"]: l["from"][0]["tensor"] for l in json.loads(out.read_text())["leaves"]}
    assert taken["params/first/kernel"] == "enc.weight" and taken["params/second/kernel"] == "dec.weight"
    params = jaxport.convert(ckpt, like, mapping=out)
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(Flax().apply(params, x)), torch_forward(m, x), rtol=1e-5, atol=1e-6)


def test_an_error_from_the_server_is_shown(files, tmp_path, page):  # noqa: F811
    ckpt, leaves, _, _ = files
    s = Server(ckpt, leaves, tmp_path / "plan.json")
    try:
        page.goto(s.base + "/")
        page.wait_for_selector(".decide")
        box = page.locator(".decide").first
        box.locator("input").fill("no_such_module")
        box.locator("button").click()
        page.wait_for_selector("#status.error")
        assert page.inner_text("#status").startswith(
            'hint "no_such_module=first": the checkpoint has no module no_such_module')
        # the session is as it was
        assert page.inner_text("#hints") == "none"
        assert json.loads(s.get("/state")[1])["hints"] == []
    finally:
        s.stop()
