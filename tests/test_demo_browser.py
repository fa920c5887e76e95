"""demo.py's page in a real headless Chromium (Selenium with the system's browser and driver, never a download):
it loads, draws a grid, paints a region and inpaints it, watches VAR's scales form, and shows a bad value as one
line. Skipped where Chromium, its driver or Selenium is missing (Debian: apt-get install chromium chromium-driver;
pip install selenium)."""
import os
import shutil

import pytest

from test_demo_server import Client, link_models

BROWSER = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")) if p and
                os.path.exists(p)), None)
DRIVER = next((p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver")) if p and os.path.exists(p)), None)
WAIT = 60  # seconds for one step of the page (a busy 2-core machine)


@pytest.fixture(scope="module")
def page(pipeline, priors, tmp_path_factory):
    """(driver, client): the page of the suite's tiny models open in a headless Chromium."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    if BROWSER is None or DRIVER is None:
        pytest.skip("Chromium or its driver is missing (Debian: apt-get install chromium chromium-driver)")
    client = Client(link_models(pipeline, priors, tmp_path_factory.mktemp("demo_page") / "ck"))
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--disable-extensions"):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    except Exception as e:  # a browser that does not start here (no display libraries, a version mismatch)
        client.close()
        pytest.skip(f"Chromium does not start: {str(e).splitlines()[0][:200]}")
    driver.set_page_load_timeout(WAIT)
    try:
        driver.get(client.url)
        yield driver, client
    finally:
        driver.quit()
        client.close()


def wait_for(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda d: condition())


def by_id(driver, name):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.ID, name)


def figures(driver, container):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, f"#{container} figure")


def loaded_width(driver, figure):
    """The natural width of a figure's picture once it has loaded (0 before)."""
    return driver.execute_script("const img = arguments[0].querySelector('img');"
                                 "return img.complete ? img.naturalWidth : 0;", figure)


def choose_model(driver, model_id, kind):
    from selenium.webdriver.support.ui import Select
    Select(by_id(driver, "model")).select_by_value(model_id)
    wait_for(driver, lambda: by_id(driver, "model-info").text.startswith(f"{kind} on mnist"))


def set_field(driver, name, value):
    field = by_id(driver, name)
    field.clear()
    field.send_keys(value)


def test_draw_a_grid_and_a_bad_value_shows_one_line(page):
    driver, _ = page
    wait_for(driver, lambda: by_id(driver, "model-info").text.startswith("gpt on mnist"))
    assert by_id(driver, "temperature").get_attribute("value") != ""  # the prior's own defaults
    assert not by_id(driver, "steps-field").is_displayed()  # the GPT has no reverse steps
    set_field(driver, "n", "3")
    by_id(driver, "draw").click()
    wait_for(driver, lambda: figures(driver, "draw-out") and loaded_width(driver, figures(driver, "draw-out")[0]))
    figure = figures(driver, "draw-out")[0]
    assert loaded_width(driver, figure) > 3 * 30  # three samples per row, with the class names beside them
    from selenium.webdriver.common.by import By
    link = figure.find_element(By.TAG_NAME, "a")
    assert link.get_attribute("download").endswith(".png") and link.get_attribute("href").startswith("data:image/png")
    assert figure.find_element(By.TAG_NAME, "code").text.startswith("python generator.py --prior ")
    assert "samples in" in by_id(driver, "draw-status").text
    set_field(driver, "temperature", "-1")
    by_id(driver, "draw").click()
    wait_for(driver, lambda: by_id(driver, "error").is_displayed())
    error = by_id(driver, "error").text
    assert "\n" not in error and "--temperature must be a finite number above 0" in error
    assert len(figures(driver, "draw-out")) == 1
    by_id(driver, "defaults").click()
    assert by_id(driver, "temperature").get_attribute("value") != "-1"


def test_paint_a_region_and_inpaint_it(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    driver, _ = page
    choose_model(driver, "priors/var.pt", "var")
    driver.find_element(By.CSS_SELECTOR, "[data-tab=edit]").click()
    wait_for(driver, lambda: "test images" in by_id(driver, "picture-info").text)
    assert driver.find_element(By.CSS_SELECTOR, "input[name=edit][value=inpaint]").is_selected()
    painted = "return state.mask.reduce((a, b) => a + b, 0)"
    centre = driver.execute_script(painted)
    assert centre > 0  # generator.py's region of inpaint, painted when the edit is chosen
    wrap = by_id(driver, "canvas-wrap")
    ActionChains(driver).move_to_element_with_offset(wrap, -120, -120).click_and_hold() \
        .move_by_offset(40, 0).move_by_offset(0, 40).release().perform()  # a stroke in the top left corner
    assert driver.execute_script(painted) > centre
    set_field(driver, "n", "3")
    by_id(driver, "edit").click()
    wait_for(driver, lambda: figures(driver, "edit-out") and loaded_width(driver, figures(driver, "edit-out")[0]))
    assert loaded_width(driver, figures(driver, "edit-out")[0]) == 5 * 30 + 2  # original, masked, 3 results
    assert not by_id(driver, "error").is_displayed()
    choose_model(driver, "gpt.pt", "gpt")  # the raster GPT can only complete
    assert not driver.find_element(By.CSS_SELECTOR, "input[name=edit][value=inpaint]").is_enabled()
    assert driver.find_element(By.CSS_SELECTOR, "input[name=edit][value=complete]").is_selected()


def test_watch_the_scales_form_and_scrub_them(page):
    from selenium.webdriver.common.by import By
    driver, _ = page
    choose_model(driver, "priors/var.pt", "var")
    driver.find_element(By.CSS_SELECTOR, "[data-tab=watch]").click()
    set_field(driver, "n", "1")
    by_id(driver, "watch").click()
    wait_for(driver, lambda: by_id(driver, "watch-out").is_displayed() and figures(driver, "watch-picture"))
    assert by_id(driver, "frame").get_attribute("max") == "4"  # nothing, then scales 1, 2, 3, 4
    driver.execute_script("const s = document.getElementById('frame'); s.value = 2;"
                          "s.dispatchEvent(new Event('input'));")
    assert "scales up to 2x2" in by_id(driver, "frame-name").text
    choose_model(driver, "priors/diffusion.pt", "diffusion")
    assert not by_id(driver, "temperature").is_enabled()  # the reverse process draws at temperature 1
    assert by_id(driver, "steps-field").is_displayed()
    set_field(driver, "steps", "3")
    by_id(driver, "watch").click()
    wait_for(driver, lambda: "frame 3 of 3" in by_id(driver, "frame-name").text)
    problems = [entry["message"] for entry in driver.get_log("browser")
                if entry["level"] == "SEVERE" and "status of 400" not in entry["message"]]
    assert problems == []
