"""The playground page at `/` in a real browser: Debian's chromium driven by Playwright (never a browser
download). Each state is screenshotted into the test artifacts directory (GLM_IMAGE_TEST_ARTIFACTS,
default test-artifacts/ in the repository)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.images import png_bytes
from helpers.keys import PLAIN_KEY
from playwright.sync_api import Browser, Page, expect, sync_playwright

ARTIFACTS = Path(
    os.environ.get("GLM_IMAGE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)
TIMEOUT_MS = 60_000
TIMES = "\u00d7"  # the page writes sizes as 256x256 with a multiplication sign
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser: Browser, server, key: str | None = PLAIN_KEY, **context) -> tuple[Page, list[str]]:
    """The page, loaded and ready; the console errors it logs are collected in the list."""
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    if key:
        page.add_init_script(f"localStorage.setItem('glm-image.api-key', {key!r})")
    page.goto(server.base_url + "/")
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"playground-{name}.png"), full_page=True)


def fill(page: Page, prompt: str, width: int, height: int, steps: int) -> None:
    page.fill("#prompt", prompt)
    page.select_option("#size", "custom")
    page.fill("#width", str(width))
    page.fill("#height", str(height))
    page.fill("#steps", str(steps))


def test_text_to_image_shows_progress_a_preview_then_the_gallery(browser, plain_server) -> None:
    page, errors = open_page(browser, plain_server)
    # Defaults come from the server's fal schema.
    expect(page.locator("#steps")).to_have_value("30")
    expect(page.locator("#steps")).to_have_attribute("min", "10")
    expect(page.locator("#expand")).to_be_disabled()
    expect(page.locator("#expand-reason")).to_contain_text("no expansion endpoint")
    shot(page, "empty")
    fill(page, 'a neon sign that reads "LIVE"', 256, 256, 100)
    page.click("#generate")
    page.wait_for_function("document.querySelector('#run-bar').value > 0.45")  # into the DiT steps
    expect(page.locator("#run-stage")).to_contain_text("DiT steps")
    page.wait_for_function("document.querySelector('#preview').src.startsWith('data:image/jpeg')")
    shot(page, "running")
    card = page.locator("#gallery li").first
    expect(card).to_contain_text('a neon sign that reads "LIVE"')
    expect(card).to_contain_text(f"256{TIMES}256")
    assert page.locator("#run-bar").evaluate("bar => bar.value") == 1
    page.wait_for_function("document.querySelector('#gallery img').naturalWidth === 256")
    shot(page, "gallery")
    page.locator("#gallery li").first.locator("button", has_text="Open").click()
    expect(page.locator("#viewer")).to_be_visible()
    page.keyboard.press("Escape")
    assert not errors, errors


def test_edit_with_an_uploaded_reference_then_use_a_result_as_reference(
    browser, plain_server, tmp_path
) -> None:
    page, errors = open_page(browser, plain_server)
    page.check("input[value='edit']")
    reference = tmp_path / "reference.png"
    reference.write_bytes(png_bytes((96, 64)))
    page.set_input_files("#ref-input", str(reference))
    expect(page.locator("#thumbs li")).to_have_count(1)
    fill(page, "make it blue", 128, 96, 10)
    page.click("#generate")
    card = page.locator("#gallery li", has_text="make it blue").first
    expect(card).to_contain_text(f"128{TIMES}96")
    shot(page, "edit")
    page.locator("#thumbs li button").click()  # remove the upload...
    expect(page.locator("#thumbs li")).to_have_count(0)
    card.locator("button", has_text="Use as reference").click()  # ...and use the result instead
    expect(page.locator("#thumbs li")).to_have_count(1)
    assert page.locator("#thumbs img").get_attribute("src").startswith("data:image/")
    page.click("#generate")
    expect(page.locator("#gallery li", has_text="make it blue")).to_have_count(2)
    assert not errors, errors


def test_an_invalid_size_is_shown_next_to_the_field(browser, plain_server) -> None:
    page, errors = open_page(browser, plain_server)
    fill(page, "x", 100, 64, 10)
    page.click("#generate")
    expect(page.locator("[data-error='image_size']")).to_contain_text("multiples of 32")
    expect(page.locator("#width")).to_have_class("invalid")
    expect(page.locator("#run")).to_be_hidden()  # nothing was sent
    shot(page, "invalid-size")
    page.fill("#prompt", "")
    page.fill("#width", "128")
    page.click("#generate")
    expect(page.locator("[data-error='prompt']")).to_contain_text("prompt")
    assert not errors, errors


def test_cancel_a_running_job(browser, plain_server) -> None:
    page, errors = open_page(browser, plain_server)
    fill(page, "a very long job", 512, 512, 100)
    page.click("#generate")
    expect(page.locator("#run-status")).to_have_text("Generating")
    page.click("#cancel")
    expect(page.locator("#run-status")).to_have_text("Cancelled")
    expect(page.locator("#generate")).to_be_enabled()
    shot(page, "cancelled")
    assert page.locator("#gallery li", has_text="a very long job").count() == 0
    assert not errors, errors


def test_a_server_that_needs_a_key(browser, plain_server) -> None:
    page, errors = open_page(browser, plain_server, key=None)
    expect(page.locator("#key-form")).to_be_visible()
    fill(page, "keyed", 64, 64, 10)
    page.click("#generate")
    expect(page.locator("#err-key")).to_contain_text("API key")
    shot(page, "key-needed")
    page.fill("#api-key", PLAIN_KEY)
    page.click("#key-form button")
    page.click("#generate")
    expect(page.locator("#gallery li", has_text="keyed").first).to_be_visible()
    assert page.evaluate("localStorage.getItem('glm-image.api-key')") == PLAIN_KEY
    # The one expected console error: the browser reports the refused (401) submission.
    assert all("401" in error for error in errors), errors


def test_ops_tab_code_panel_and_phone_width(browser, plain_server) -> None:
    page, errors = open_page(browser, plain_server, viewport={"width": 390, "height": 844})
    fill(page, "a sign that reads 'CODE'", 256, 128, 20)
    page.click("#show-code")
    expect(page.locator("#code-text")).to_contain_text("/queue/fal-ai/glm-image")
    page.click(".code-tabs button[data-lang='openai']")
    expect(page.locator("#code-text")).to_contain_text('size="256x128"')
    page.click(".code-tabs button[data-lang='python']")
    expect(page.locator("#code-text")).to_contain_text("fal_client.subscribe")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    shot(page, "phone-code")
    page.keyboard.press("Tab")  # keyboard reachable: the first tab stop is a real control
    assert page.evaluate("document.activeElement.tagName") in ("BUTTON", "INPUT")
    page.click("#generate")
    expect(page.locator("#gallery li", has_text="CODE").first).to_be_visible()
    page.click("#tab-ops")
    expect(page.locator("#ops-workers tr").first).to_contain_text("cpu")
    expect(page.locator("#ops-jobs tr").first).to_be_visible()
    shot(page, "ops")
    assert not errors, errors
