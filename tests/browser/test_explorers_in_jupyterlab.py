"""The lessons' explorers work in a real JupyterLab, driven with the mouse and keyboard.

Each test opens a lesson in headless Chromium, runs all its cells (Run > Run All Cells),
then moves a control of an explorer the way a learner does and checks that the readout and
the picture change. Screenshots before and after go to ``test-artifacts/browser/``.
See conftest.py for when these tests run.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

RUN_ALL_S = 300  # the whole lesson runs; every lesson takes under two minutes on a laptop CPU


def run_all_cells(page, lab, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab, wait for its kernel, and run all its cells."""
    from playwright.sync_api import expect

    page.goto(lab.lab_url(notebook))
    panel = page.locator(".jp-NotebookPanel", has=page.locator(".jp-Notebook"))
    expect(panel).to_be_visible(timeout=90_000)
    # Run All before the kernel is up would open JupyterLab's "Select Kernel" dialog.
    deadline = time.monotonic() + 90
    while not any(session["path"].endswith(notebook) and session["kernel"]
                  and session["kernel"]["execution_state"] == "idle"
                  for session in lab.api("sessions")):
        assert time.monotonic() < deadline, f"no idle kernel for {notebook} after 90 s"
        time.sleep(0.5)
    kernel_status = page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle$"))
    expect(kernel_status).to_have_count(1, timeout=30_000)
    no_dialog(page)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def no_dialog(page) -> None:
    dialogs = page.locator(".jp-Dialog")
    assert dialogs.count() == 0, "unexpected JupyterLab dialog: " + dialogs.first.inner_text()


def wait_until_run(page, timeout_s: float = RUN_ALL_S) -> None:
    """Wait until no cell is queued or running, then check that none raised."""
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-InputArea-prompt')];
            const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
            return prompts.length > 0 && !prompts.some(p => p.textContent.includes('*'))
                && indicator && indicator.dataset.status === 'idle';
        }""",
        timeout=timeout_s * 1000,
    )
    errors = page.locator('[data-mime-type="application/vnd.jupyter.error"]')
    assert errors.count() == 0, f"a cell raised in JupyterLab:\n{errors.first.inner_text()}"
    broken = page.get_by_text("Error displaying widget")
    assert broken.count() == 0, "a widget did not render: " + broken.first.inner_text()


def explorer_with(page, readout_text: str):
    """The explorer (a VBox) whose readout contains ``readout_text``, its readout and image."""
    from playwright.sync_api import expect

    page.wait_for_function(  # the explorer's readout, or a dialog (an error) blocking the run
        """text => [...document.querySelectorAll('.widget-html')].some(
                       el => el.textContent.includes(text))
                   || document.querySelector('.jp-Dialog') !== null""",
        arg=readout_text, timeout=RUN_ALL_S * 1000,
    )
    no_dialog(page)
    readout = page.locator(".widget-html", has_text=readout_text)
    expect(readout).to_have_count(1)
    explorer = page.locator(".widget-vbox", has=readout).last
    image = explorer.locator("img.widget-image")
    expect(image).to_have_count(1)
    explorer.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 100",
                           arg=image.element_handle())
    return explorer, readout, image


def wait_for_new_picture(page, image, old_src: str) -> bytes:
    """Wait until the image shows a new PNG, loaded; return a screenshot of it."""
    page.wait_for_function(
        "([img, old]) => img.src !== old && img.complete && img.naturalWidth > 100",
        arg=[image.element_handle(), old_src],
    )
    return image.screenshot()


def test_default_box_explorer_in_jupyterlab(page, jupyterlab, artifacts: Path):
    from playwright.sync_api import expect

    run_all_cells(page, jupyterlab, "02_default_boxes.ipynb")
    explorer, readout, image = explorer_with(page, "default boxes in all")
    wait_until_run(page)
    expect(readout).to_contain_text("8732 default boxes in all")
    expect(readout).to_contain_text("map 10x10 (conv8_2)")
    explorer.screenshot(path=str(artifacts / "02_default_boxes_before.png"))
    src, picture = image.get_attribute("src"), image.screenshot()

    # Untick "ratios 3 and 1/3" with the mouse: 2 boxes fewer per cell on the 19x19,
    # 10x10 and 5x5 maps, 2 * (361 + 100 + 25) = 972 fewer in all.
    ratio_3 = explorer.get_by_role("checkbox", name="ratios 3 and 1/3")
    expect(ratio_3).to_be_checked()
    ratio_3.click()
    expect(ratio_3).not_to_be_checked()
    expect(readout).to_contain_text("7760 default boxes in all")
    expect(readout).to_contain_text("4 boxes per cell")
    new_picture = wait_for_new_picture(page, image, src)
    assert new_picture != picture, "the picture did not change when ratio 3 was unticked"
    explorer.screenshot(path=str(artifacts / "02_default_boxes_ratio3_off.png"))
    src, picture = image.get_attribute("src"), new_picture

    # The feature-map control, with the mouse, then with the keyboard: 10x10 -> 5x5 -> 3x3.
    # A key that the control handles must not also move JupyterLab's cell cursor.
    dropdown = explorer.get_by_role("combobox", name="map")
    if dropdown.count():  # a Dropdown: open it with the mouse, pick the next map, Enter
        dropdown.click()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
    else:  # ToggleButtons, one per map
        explorer.get_by_role("button", name="5x5", exact=True).click()
    expect(readout).to_contain_text("map 5x5 (conv9_2)")
    expect(readout).to_contain_text("7760 default boxes in all")
    new_picture = wait_for_new_picture(page, image, src)
    assert new_picture != picture, "the picture did not change with the feature map"
    explorer.screenshot(path=str(artifacts / "02_default_boxes_map_5x5.png"))
    src, picture = image.get_attribute("src"), new_picture

    cell = active_cell(page)
    if dropdown.count():  # the keyboard on the closed dropdown, as a keyboard user does
        dropdown.focus()
        page.keyboard.press("ArrowDown")
    else:
        explorer.get_by_role("button", name="3x3", exact=True).focus()
        page.keyboard.press("Space")
    try:
        expect(readout).to_contain_text("map 3x3 (conv10_2)")
    except AssertionError as error:
        raise AssertionError("the keyboard did not change the map; JupyterLab took the key: "
                             f"its cell cursor moved ({cell} -> {active_cell(page)})") from error
    assert active_cell(page) == cell, "JupyterLab took the key too: its cell cursor moved"
    new_picture = wait_for_new_picture(page, image, src)
    assert new_picture != picture, "the picture did not change with the feature map"
    explorer.screenshot(path=str(artifacts / "02_default_boxes_map_3x3.png"))


def active_cell(page) -> str:
    """JupyterLab's status bar item "Cell 18/27": which cell is active."""
    item = page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"^Cell \d+/\d+$"))
    return item.inner_text()

def test_iou_explorer_in_jupyterlab(page, jupyterlab, artifacts: Path):
    from playwright.sync_api import expect

    from ssdlearn.widgets import iou_explorer

    run_all_cells(page, jupyterlab, "01_boxes_and_iou.ipynb")
    explorer, readout, image = explorer_with(page, "IoU = ")
    wait_until_run(page)

    def slider(name: str):
        return explorer.locator(".widget-hslider", has=page.get_by_text(name, exact=True))

    def shown_boxes() -> tuple[tuple[int, ...], tuple[int, ...]]:
        values = {name: int(slider(name).locator(".widget-readout").inner_text())
                  for name in ("A cx", "A cy", "A w", "A h", "B cx", "B cy", "B w", "B h")}
        return (tuple(values[f"A {k}"] for k in ("cx", "cy", "w", "h")),
                tuple(values[f"B {k}"] for k in ("cx", "cy", "w", "h")))

    def expected_readout() -> str:  # what the library shows for the boxes on screen
        box_a, box_b = shown_boxes()
        return f"IoU = {iou_explorer(box_a, box_b).iou:.3f}"

    expect(readout).to_contain_text(expected_readout())
    before = readout.inner_text()
    explorer.screenshot(path=str(artifacts / "01_iou_before.png"))
    src, picture = image.get_attribute("src"), image.screenshot()

    # Slide box B to the right with the keyboard: focus the handle, press ArrowRight.
    b_cx = slider("B cx")
    start = int(b_cx.locator(".widget-readout").inner_text())
    b_cx.locator(".noUi-handle").focus()
    cell = active_cell(page)
    for _ in range(8):
        page.keyboard.press("ArrowRight")
    expect(b_cx.locator(".widget-readout")).to_have_text(str(start + 8))
    assert active_cell(page) == cell, "JupyterLab took ArrowRight: its cell cursor moved"
    expect(readout).to_contain_text(expected_readout())
    assert readout.inner_text() != before, "the IoU readout did not change"
    new_picture = wait_for_new_picture(page, image, src)
    assert new_picture != picture, "the picture did not change when box B moved"
    explorer.screenshot(path=str(artifacts / "01_iou_after.png"))
