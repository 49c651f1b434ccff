"""The interactive HTML head view, driven in headless Chromium (Debian's chromium and
chromium-driver, which .ci/run installs): load the file, switch head, hover a token,
screenshot, and check that the drawn lines change as they should."""

import shutil

import numpy as np
import pytest

from attnjax import viz

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian chromium + chromium-driver not installed (.ci/run installs them)",
)


def views():
    tokens = ["the", "trophy", "did", "not", "fit", "because", "it", "was", "big"]
    t = len(tokens)
    weights = np.zeros((2, 2, t, t))
    weights[:, 0] = np.eye(t)  # head 0: every token looks at itself
    weights[:, 1] = np.full((t, t), 1.0 / t)  # head 1: uniform
    weights[1, 0, 6] = 0.0
    weights[1, 0, 6, 1] = 1.0  # layer 1, head 0: "it" -> "trophy"
    cross = np.full((1, 1, 3, t), 1.0 / t)
    return {"self-attention": (weights, tokens, tokens),
            "cross-attention": (cross, ["le", "trophee", "."], tokens)}


def test_html_is_self_contained_and_checks_shapes(tmp_path):
    path = viz.save_head_view(tmp_path / "view.html", views(), title="<trophy>")
    text = path.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text and "<script src" not in text
    assert "&lt;trophy&gt;" in text  # the title is escaped
    bad = {"x": (np.zeros((1, 1, 2, 3)), ["a", "b"], ["c", "d"])}
    with pytest.raises(ValueError, match=r"\[L, H, T=2, S=2\]"):
        viz.head_view_html(bad)


@needs_browser
def test_head_view_in_headless_chromium_switches_heads_and_follows_the_hover(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    path = viz.save_head_view(tmp_path / "view.html", views())
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=900,700",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        driver.get(path.as_uri())
        svg = driver.find_element(By.ID, "canvas")
        lines = lambda: int(svg.get_attribute("data-lines"))  # noqa: E731
        assert lines() == 9  # layer 0, head 0: the identity, one line per token
        Select(driver.find_element(By.ID, "head")).select_by_visible_text("head 1")
        assert lines() == 81  # uniform: every pair
        Select(driver.find_element(By.ID, "layer")).select_by_visible_text("1")
        Select(driver.find_element(By.ID, "head")).select_by_visible_text("head 0")
        it = driver.find_element(By.CSS_SELECTOR, "text.query[data-index='6']")
        ActionChains(driver).move_to_element(it).perform()
        edges = driver.find_elements(By.CSS_SELECTOR, "line.edge")
        assert [(e.get_attribute("data-query"), e.get_attribute("data-key")) for e in edges] \
            == [("6", "1")]  # hovering "it" leaves only its line, to "trophy"
        assert "it → trophy 1.00" in driver.find_element(By.ID, "info").text
        driver.save_screenshot(str(tmp_path / "head_view.png"))
        ActionChains(driver).move_by_offset(0, 300).perform()  # leave the token
        assert lines() == 9
        Select(driver.find_element(By.ID, "view")).select_by_visible_text("cross-attention")
        assert lines() == 27
        assert (tmp_path / "head_view.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        driver.quit()


def test_head_grid_png_has_a_panel_per_layer_and_head(tmp_path):
    weights, tokens, _ = views()["self-attention"]
    path = viz.save_head_grid(tmp_path / "grid.png", weights, tokens)
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"\[L, H, T=9, S=9\]"):
        viz.save_head_grid(tmp_path / "bad.png", weights[0], tokens)


@needs_browser
def test_screenshot_renders_the_state_named_in_the_fragment(tmp_path):
    page = viz.save_head_view(tmp_path / "view.html", views())
    whole = viz.screenshot(page, tmp_path / "whole.png", fragment="layer=0&head=1")
    focused = viz.screenshot(page, tmp_path / "it.png", fragment="layer=1&head=0&query=6")
    assert whole.read_bytes()[:4] == focused.read_bytes()[:4] == b"\x89PNG"
    assert whole.read_bytes() != focused.read_bytes()  # 81 lines vs "it" -> "trophy" alone
