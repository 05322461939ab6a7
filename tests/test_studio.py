"""The studio: its session against the library (no browser), and the page itself driven in headless Chromium
(Debian's chromium + chromium-driver, through Selenium) as a user would: wait for the verdict, set r, read the
worst group and compare it with the library's own sweep, move r again, give a bad model id, save and reload.

The page is served by Gradio on 127.0.0.1 in this process; nothing leaves the machine. Without Chromium or Gradio
the browser test is skipped, unless HF_FCR_REQUIRE_BROWSER=1 (as .ci/run sets), where it fails instead.
"""

import json
import os
import shutil
import sys

import pytest
import torch

from hf_fcr import FictitiousClassRemover
from hf_fcr.studio import StudioSession, StudioSource
from hf_fcr.studio.policy import StudioPolicy, check_host

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import studio as page  # noqa: E402 -- benchmarks/studio.py: the browser helpers the latency benchmark uses too


@pytest.fixture(scope="module")
def session():
    return StudioSession.load(StudioSource(seed=0))


def _library_row(session, r, split="validation"):
    """The library's own sweep at ``r`` on the session's features (not the session's method)."""
    remover = session.remover
    table = remover.sweep(
        session.features[split],
        r_values=[r],
        label_column="label",
        group_columns=("place",),
        edits=session.search.edits,
    ).table
    return table[0]


@pytest.mark.slow
def test_the_session_is_the_library(session):
    """Every number the page shows is the library's: the rate sweep, the chosen r, the flips (checked row by row
    against the edited model's own predictions) and the save."""
    r = 0.07
    assert session.at_rate(r)["validation"] == _library_row(session, r)
    assert session.chosen_r == session.search.r and session.remover.edits == []  # the model stays unedited
    flips = session.flips(r, limit=1000)
    feats = session.features["validation"]
    before = session.remover.logits(feats.features).argmax(1)
    session.remover.apply_edits([e.with_rate(r, torch.float32) for e in session.search.edits])
    after = session.remover.logits(feats.features).argmax(1)
    session.remover.revert()
    assert {f["index"] for f in flips} == set(torch.nonzero(before != after).flatten().tolist())
    confidences = [f["confidence"] for f in flips]
    assert confidences == sorted(confidences, reverse=True)
    rows = {row["method"].split(" ")[0]: row for row in session.table(r)}
    assert {"erm", "fcr", "fcr_random_attribute", "dfr", "class_balanced", "auto"} <= set(rows)
    assert rows["fcr"]["validation worst_group"] == round(_library_row(session, r)["worst_group"], 4)
    removal = session.remove_class("small", 1, 1.0)
    assert session.remover.edits == [] and len(removal["edits"]) == 1
    forget = next(c for c in removal["per_class"] if c["class"] == "small")
    assert forget["after"] < forget["before"]


def test_a_dataset_without_a_validation_split_is_a_clear_error(tmp_path):
    import timm

    from hf_fcr.data import load_data

    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    timm.models.save_for_hf(model, str(tmp_path / "model"), safe_serialization=True)
    data = load_data("spurious_digits")
    data.pop("validation")
    data.save_to_disk(str(tmp_path / "data"))
    source = StudioSource(model_name_or_path=str(tmp_path / "model"), dataset_name=str(tmp_path / "data"))
    with pytest.raises(ValueError, match="no 'validation' split"):
        StudioSession.load(source)


def _browser_ready() -> bool:
    ready = shutil.which(page.CHROMIUM) and shutil.which(page.CHROMEDRIVER)
    try:
        import gradio  # noqa: F401
        import selenium  # noqa: F401
    except ImportError:
        ready = False
    if not ready and os.environ.get("HF_FCR_REQUIRE_BROWSER") == "1":
        pytest.fail("HF_FCR_REQUIRE_BROWSER=1 but Chromium, chromedriver, gradio or selenium is missing")
    return bool(ready)


@pytest.mark.slow
def test_the_page_in_a_real_browser(session, tmp_path):
    if not _browser_ready():
        pytest.skip("needs Debian's chromium + chromium-driver and the [studio] extra with selenium")
    from selenium.webdriver.common.by import By

    app, url = page.serve(session, StudioPolicy(save_root=tmp_path))
    driver = page.browser()
    try:
        page.open_page(driver, url)
        assert "one-weight edit" in page.text(driver, "verdict")
        # r set on the page: the worst group shown is the library's sweep at that r
        r = 0.05
        page.set_rate(driver, r)
        expected = _library_row(session, r)
        page.wait(lambda: abs(float(page.value(driver, "worst_group")) - expected["worst_group"]) < 1e-3, 20)
        assert abs(float(page.value(driver, "average")) - expected["average"]) < 1e-3
        table = page.text(driver, "methods")
        page.wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#flips img"), 20)
        gallery = page.text(driver, "flips")
        assert "fcr (r=0.050)" in table
        # move it: the table and the gallery follow
        r2 = 0.2
        page.set_rate(driver, r2)
        page.wait(lambda: "fcr (r=0.200)" in page.text(driver, "methods"), 20)
        page.wait(lambda: page.text(driver, "flips") != gallery, 20)
        assert abs(float(page.value(driver, "worst_group")) - _library_row(session, r2)["worst_group"]) < 1e-3
        # a bad model id: a message on the page, and the page still works
        model_box = page.field(driver, "model_box")
        model_box.send_keys("no-such-org/no-such-model")
        driver.find_element(By.ID, "load").click()
        page.wait(lambda: "Error" in page.text(driver, "status"), 60)
        assert "Traceback" not in driver.page_source
        page.set_rate(driver, r)
        page.wait(lambda: abs(float(page.value(driver, "worst_group")) - expected["worst_group"]) < 1e-3, 20)
        # save: the folder reloads with from_pretrained, edited at the r of the page
        tabs = driver.find_elements(By.XPATH, "//button[contains(., 'Save and push')]")
        next(t for t in tabs if t.is_displayed()).click()
        page.field(driver, "folder").send_keys("saved")  # under the save root
        driver.find_element(By.ID, "save").click()
        page.wait(lambda: "Saved to" in page.text(driver, "status"), 60)
        card = page.text(driver, "card")
        assert "Fictitious Class Removal" in card and "hf-fcr studio" in card and "r = 0.0500" in card
        driver.save_screenshot(str(tmp_path / "studio.png"))
        artifacts = os.environ.get("HF_FCR_ARTIFACTS")
        if artifacts:
            os.makedirs(artifacts, exist_ok=True)
            shutil.copy(tmp_path / "studio.png", os.path.join(artifacts, "studio.png"))
    finally:
        driver.quit()
        app.close()
    reloaded = FictitiousClassRemover.from_pretrained(tmp_path / "saved")
    assert [e.r for e in reloaded.edits] == [pytest.approx(r)] * len(session.search.edits)
    feats = session.features["validation"]
    labels, ids, names = reloaded.group_labels(feats, "label", ["place"])
    from hf_fcr.core.metrics import group_metrics

    worst = group_metrics(reloaded.logits(feats.features).argmax(1), labels, ids, names)["worst_group"]
    assert abs(worst - expected["worst_group"]) < 1e-6


def test_the_space_builds_the_studio_without_loading_anything():
    """The Space's app.py builds the page (the demo loads when the page opens, not at import), and its README
    header is a Gradio Space's."""
    pytest.importorskip("gradio")
    import importlib.util

    import yaml

    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "spaces", "studio")
    spec = importlib.util.spec_from_file_location("space_app", os.path.join(folder, "app.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import gradio as gr

    assert isinstance(module.demo, gr.Blocks)
    ids = {getattr(block, "elem_id", None) for block in module.demo.blocks.values()}
    assert {"verdict", "r", "worst_group", "average", "methods", "flips", "save", "push", "status"} <= ids
    header = open(os.path.join(folder, "README.md"), encoding="utf-8").read().split("---")[1]
    meta = yaml.safe_load(header)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert open(os.path.join(folder, "requirements.txt")).read().split()[0].startswith("hf-fcr[studio]")


@pytest.mark.slow
def test_the_studio_pushes_privately_and_never_sends_the_token_in_a_body(session, tmp_path, monkeypatch):
    """Push from the studio to a local server that speaks the Hub protocol (huggingface.co cannot be reached):
    the repo is created private by default, the files are the ones save writes, and the token travels only in
    the Authorization header."""
    import huggingface_hub.constants as constants

    from hub_server import HubServer

    with HubServer() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        token = "hf_studio_secret_token_123"
        session.push("tester/studio-model", 0.05, token=token, private=True)
        create = json.loads(next(b for _, path, b, _ in hub.state.requests if path.endswith("/api/repos/create")))
        assert create.get("private") is True or create.get("visibility") == "private"
        assert all(token.encode() not in body for _, _, body, _ in hub.state.requests)
        assert any(headers.get("authorization", headers.get("Authorization", "")).endswith(token)
                   for _, _, _, headers in hub.state.requests)  # fmt: skip
        files = set(hub.state.repos["tester/studio-model"])
    saved = set(os.listdir(session.save(tmp_path / "saved", 0.05)))
    assert files == saved


def test_the_page_saves_only_under_its_root_and_pushes_only_with_the_typed_token(tmp_path):
    """Anyone who reaches the port uses the page: a save path that leaves the save root (.., an absolute path, a
    link out of it) is refused, and an empty token field never means the server's own credentials unless allowed."""
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (root / "out").symlink_to(tmp_path)
    policy = StudioPolicy(save_root=root)
    assert policy.save_path("my-model") == (root / "my-model").resolve()
    assert policy.save_path(str(root / "inside" / "m")) == (root / "inside" / "m").resolve()
    for typed in ("../elsewhere", str(tmp_path / "elsewhere"), "/etc/x", "out/x", ".", "inside/../.."):
        with pytest.raises(ValueError, match="save root"):
            policy.save_path(typed)
    with pytest.raises(ValueError, match="give a folder"):
        policy.save_path("  ")
    assert policy.push_token(" hf_abc ") == "hf_abc"
    with pytest.raises(ValueError, match="--allow_server_token"):
        policy.push_token("")
    assert StudioPolicy(allow_server_token=True).push_token("") is None


def test_serving_beyond_this_machine_needs_a_login_or_an_explicit_yes():
    assert check_host("127.0.0.1", None, False) is None and check_host("localhost", None, False) is None
    assert check_host("::1", None, False) is None
    assert check_host("0.0.0.0", ("user", "secret"), False) is None
    with pytest.raises(ValueError, match="--auth user:password"):
        check_host("0.0.0.0", None, False)
    assert check_host("192.168.1.5", None, True).startswith("WARNING")


@pytest.mark.slow
def test_a_save_during_other_events_writes_the_numbers_the_page_shows(session, tmp_path):
    """A save at r measures the unedited model with the edit applied once (the card's worst group is the page's
    and the reloaded model's), and a slider moving in another thread meanwhile neither changes what is saved nor
    reads a half-edited model (the session's lock)."""
    import threading

    import yaml

    from hf_fcr.core.metrics import group_metrics

    r, shown = 0.1, session.at_rate(0.1)["validation"]
    stop, seen = threading.Event(), []

    def slider():
        while not stop.is_set():
            seen.append(session.at_rate(0.3)["validation"]["worst_group"])

    mover = threading.Thread(target=slider)
    mover.start()
    try:
        saved = session.save(tmp_path / "saved", r)
    finally:
        stop.set()
        mover.join()
    assert session.remover.edits == [] and set(seen) == {session.at_rate(0.3)["validation"]["worst_group"]}
    card = open(os.path.join(saved, "README.md"), encoding="utf-8").read().split("---")[1]
    results = yaml.safe_load(card)["model-index"][0]["results"][0]["metrics"]
    carded = next(m["value"] for m in results if m["type"] == "worst_group_accuracy")
    reloaded = FictitiousClassRemover.from_pretrained(saved)
    feats = session.features["validation"]
    labels, ids, names = reloaded.group_labels(feats, "label", ["place"])
    worst = group_metrics(reloaded.logits(feats.features).argmax(1), labels, ids, names)["worst_group"]
    assert carded == pytest.approx(shown["worst_group"]) and worst == pytest.approx(shown["worst_group"])


@pytest.mark.slow
def test_a_checkpoint_the_studio_saved_reopens_with_its_edits_as_the_starting_point(session, tmp_path):
    """As its card says: reopened in the studio, the saved model keeps its own edits (they were reverted, the base
    shown as the model, and every save failed), the page's starting row is the saved model, and saving again works,
    the new edits recorded after the old ones."""
    saved = session.save(tmp_path / "first", 0.1)
    first = json.loads(open(os.path.join(saved, "fcr_config.json")).read())["edits"]
    card = open(os.path.join(saved, "README.md"), encoding="utf-8").read()
    assert "--dataset_name spurious_digits" in card or "hf-fcr studio  #" in card
    again = StudioSession.load(StudioSource(model_name_or_path=saved, dataset_name="spurious_digits", seed=0))
    assert [e.col for e in again.remover.edits] == [e["col"] for e in first]
    assert again.methods["erm"]["validation"]["worst_group"] == pytest.approx(
        session.at_rate(0.1)["validation"]["worst_group"]
    )
    resaved = again.save(tmp_path / "second", again.chosen_r)
    second = json.loads(open(os.path.join(resaved, "fcr_config.json")).read())["edits"]
    assert second[: len(first)] == first and len(second) >= len(first)
    assert [e.col for e in again.remover.edits] == [e["col"] for e in first]  # back to the loaded model


@pytest.mark.slow
def test_a_visitors_load_is_theirs_alone(session):
    """One visitor's Load gives them their own session (kept in their page's state); the server's session, which
    every other page shows, stays as it was."""
    pytest.importorskip("gradio")
    from hf_fcr.studio.app import _Handlers

    handlers = _Handlers(StudioSource(), session, 0, 0, StudioPolicy())
    out = handlers.load(None, "", "", "label", "place", progress=lambda fraction, desc=None: None)
    theirs = out[-1]
    assert isinstance(theirs, StudioSession) and theirs is not session and handlers.shared is session
    assert handlers.current(None) is session and handlers.current(theirs) is theirs
    failed = handlers.load(theirs, "no-such-org/no-such-model", "", "label", "place", progress=lambda *a, **k: None)
    assert failed[0].startswith("**Error") and failed[-1] is theirs  # a failed load keeps what they had


@pytest.mark.slow
def test_a_string_attribute_column_works_on_the_page(tmp_path):
    """The library takes string attributes ("place=water"); so does the studio (it refused them: "class labels
    must be integers")."""
    import timm

    from hf_fcr.data import load_data

    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    timm.models.save_for_hf(model, str(tmp_path / "model"), safe_serialization=True)
    data = load_data("spurious_digits")
    data = data.map(lambda b: {"texture": [f"texture-{p}" for p in b["place"]]}, batched=True)
    data.save_to_disk(str(tmp_path / "data"))
    source = StudioSource(
        model_name_or_path=str(tmp_path / "model"), dataset_name=str(tmp_path / "data"), attribute_column="texture"
    )
    session = StudioSession.load(source)
    rows = {row["method"].split(" ")[0] for row in session.table(session.chosen_r)}
    assert {"erm", "fcr", "fcr_random_attribute", "dfr", "class_balanced", "auto"} <= rows
    assert all("texture=texture-" in f["group"] for f in session.flips(1.0, limit=3))
