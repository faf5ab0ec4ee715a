"""The markdown views as a pull request shows them: rendered by GitHub's own renderer (cmark-gfm) with
GitHub's stylesheet (github-markdown-css, tests/browser/) in a 1,012-pixel comment column of Debian's
Chromium, driven headless by Playwright (the system browser: nothing downloaded). Nothing may stick out
of the column: a reviewer sees every note, digest and platform without scrolling sideways.

``.venv/bin/python -m tests.test_markdown_browser docs/plan.png`` remakes the README's screenshot."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from playwright.sync_api import Browser, Page, sync_playwright

from reconciler import markdown, render
from reconciler.apply import AppliedImage, Outcome, Report
from reconciler.plan import Action, Plan
from reconciler.registry.copy import CopyStats
from reconciler.verify import Status, VerifiedImage, Verification
from tests.helpers_plans import example_plan, large_plan

CHROMIUM = "/usr/bin/chromium"
STYLESHEET = Path(__file__).parent / "browser/node_modules/github-markdown-css/github-markdown-light.css"
COLUMN = 1012
# The only tags the views may make: markdown's own, and <details>/<summary>, the raw HTML GitHub's
# sanitizer keeps. A registry's message never adds one.
MARKDOWN_TAGS = {"h3", "h4", "p", "strong", "code", "ul", "li", "details", "summary", "pre", "a"}


def html(text: str) -> str:
    """As GitHub renders a comment: cmark-gfm with its extensions (tables, tag filter...); raw HTML let
    through as GitHub's sanitizer lets <details> through."""
    return cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)


def page_html(body: str) -> str:
    """The column 1,012 pixels wide, its text 980 (GitHub's 16-pixel padding of a comment body)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><style>{STYLESHEET.read_text()}</style>"
            f"<style>body {{ margin: 0 }} .markdown-body {{ box-sizing: border-box; width: {COLUMN}px; "
            f"padding: 16px }}</style></head><body><article class='markdown-body'>{body}</article></body></html>")


def launch(playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"])


@pytest.fixture(scope="module")
def page():
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser.new_page(viewport={"width": COLUMN + 200, "height": 800})
        browser.close()


# What sticks out of the column: wider tables, pre blocks and code, and any piece of text whose box
# reaches past the column's content box (a table's overflow scrolls: its hidden text counts too).
OVERFLOW = """() => {
  document.querySelectorAll('details').forEach(details => { details.open = true; });
  const column = document.querySelector('.markdown-body');
  const style = getComputedStyle(column);
  const left = column.getBoundingClientRect().left + parseFloat(style.paddingLeft);
  const right = column.getBoundingClientRect().right - parseFloat(style.paddingRight);
  const out = [];
  for (const element of column.querySelectorAll('table, pre')) {
    if (element.scrollWidth > element.clientWidth) out.push(`${element.tagName} ${element.scrollWidth}px wide`);
  }
  const walker = document.createTreeWalker(column, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const box of range.getClientRects()) {
      if (box.width && (box.left < left - 0.5 || box.right > right + 0.5)) {
        out.push(`"${node.textContent.slice(0, 60)}" spans ${box.left.toFixed(0)}-${box.right.toFixed(0)}px`);
      }
    }
  }
  return {out, text: column.innerText, tags: [...new Set([...column.querySelectorAll('*')].map(e => e.localName))]};
}"""


def shown(page: Page, text: str) -> dict:
    page.set_content(page_html(html(text)))
    return page.evaluate(OVERFLOW)


def must_see(plan: Plan) -> list[str]:
    """What a reviewer needs of each refusal and create: its note, digest and platforms."""
    needed = []
    for image in plan.images:
        if image.action is Action.CREATE or image.action.refused:
            needed += [render.short_digest(image.locked.pushed_digest), ", ".join(image.locked.pushed_platforms)]
        if image.action is Action.CONFLICT:
            needed.append("choose another target tag for this entry, or remove it")
        elif image.action.refused:
            needed.append(" ".join(image.message.split()))
    return [text for text in needed if text]


def test_the_issues_plan_fits_the_column_with_every_note_digest_and_platform(page):
    plan = example_plan()
    seen = shown(page, markdown.plan_markdown(plan).fit(markdown.Room(markdown.COMMENT_BYTES)))

    assert seen["out"] == []
    assert set(seen["tags"]) <= MARKDOWN_TAGS | {"article"}
    text = " ".join(seen["text"].split())
    assert [needed for needed in must_see(plan) if needed not in text] == []
    assert "2 to create · 1 refused · 5 unchanged" in text


@pytest.mark.parametrize("seed", [11, 12])
def test_a_large_plan_with_long_error_messages_fits_the_column(page, seed):
    rng = random.Random(seed)
    note = " ".join(rng.choice(["<b>denied</b>", "x" * 60, "|a|b|", "`tick`", "*", "_", "[link](x)"])
                    for _ in range(200))
    plan = large_plan(rng, refused=5, creates=1000, unchanged=1000, note=note)
    text = markdown.plan_markdown(plan).fit(markdown.Room(markdown.COMMENT_BYTES))
    seen = shown(page, text)

    assert seen["out"] == [], f"seed {seed}"
    assert set(seen["tags"]) <= MARKDOWN_TAGS | {"article"}, f"seed {seed}: a message became HTML"
    assert re.search(r"…and \d+ more to create", seen["text"]), f"seed {seed}"


def test_the_reports_of_apply_verify_and_lock_check_fit_the_column(page):
    rng = random.Random(3)
    images = [image.locked for image in large_plan(rng, refused=0, creates=20, unchanged=20).images]
    outcomes = list(Outcome)
    report = Report(images=tuple(
        AppliedImage(image.source, image.target, str(image.digest), outcomes[n % len(outcomes)],
                     "HTTP 500 from the target: " + "x" * 80 if n % 3 == 0 else None)
        for n, image in enumerate(images)), stats=CopyStats(), seconds=2.0)
    verification = Verification(images=tuple(
        VerifiedImage(image.source, image.target, image.digest, list(Status)[n % len(Status)], None,
                      "the tag holds another digest" if n % 2 else None)
        for n, image in enumerate(images)))
    differences = ["-  digest: sha256:" + "1" * 64, "+  digest: sha256:" + "2" * 64]
    room = markdown.Room(markdown.SUMMARY_BYTES)

    for document in (markdown.report_markdown(report), markdown.verify_markdown(verification),
                     markdown.lock_check_markdown("images.lock", "images.yaml", differences)):
        seen = shown(page, document.fit(room))
        assert seen["out"] == [] and set(seen["tags"]) <= MARKDOWN_TAGS | {"article"}, seen


if __name__ == "__main__":
    with sync_playwright() as playwright:
        browser = launch(playwright)
        screen = browser.new_page(viewport={"width": COLUMN, "height": 600}, device_scale_factor=1)
        screen.set_content(page_html(html(markdown.plan_markdown(example_plan()).fit(
            markdown.Room(markdown.COMMENT_BYTES)))))
        screen.locator(".markdown-body").screenshot(path=sys.argv[1])
        browser.close()
