"""The HTML report as a reader meets it: tables rendered from the table data (no Markdown
syntax), best cells marked, what was run stated per experiment, definitions after the tables,
figures that link to their full-size files; the sample choice prefers images with content."""
import json
import re

import numpy as np
import pytest

from conftest import tiny_params, write_params
from inpaintbench import paths
from inpaintbench.cli import main
from inpaintbench.io import save_image


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        write_params(folder, tiny_params())
        for argv in (["prepare", "photos"], ["prepare", "textures"], ["masks", "generated", "--size", "32"],
                     ["pairs", "tiny", "photos", "--split", "val"], ["pairs", "tiny", "photos"], ["pairs", "tiny", "textures"],
                     ["train", "tiny", "photos", "pconv", "--no-mlflow"],
                     *[["evaluate", "tiny", "photos", m, "--no-mlflow"] for m in ("copy-input", "biharmonic", "pconv")],
                     ["efficiency", "tiny"], ["aggregate", "tiny"], ["report", "tiny"], ["index", "tiny"]):
            assert main(argv) == 0, argv
        yield folder, (folder / "reports" / "index.html").read_text(encoding="utf-8")


def test_html_has_no_markdown_and_marks_the_best(report):
    _, page = report
    assert "**" not in page
    assert not re.search(r"(?m)^\|.*\|$", page)  # no Markdown table rows
    assert "<td class='best'><strong>" in page
    # captions are plain text, not bold
    assert not re.search(r"<(b|strong)>[^<]{120,}</(b|strong)>", page)


def test_first_screen_is_what_was_run_then_the_main_table(report):
    _, page = report
    run = page.index("What was run")
    table = page.index("<h3>tiny on photos</h3>")
    definitions = page.index("id='definitions'")
    assert run < table < definitions
    assert page.index("Paper layout") < definitions and page.index("<figure>") < definitions
    box = page[run:table]
    for text in ("32 × 32 px", "2 epochs × 3 steps = 6 steps, batch 4", "n=3", "random-vgg16", "seed 0"):
        assert text in box, text


def test_figures_link_to_full_size_and_say_what_they_show(report):
    folder, page = report
    figs = re.findall(r"<figure><a href='([^']+)'><img src='([^']+)'", page)
    assert figs and all(a == b for a, b in figs)
    for a, _ in figs:
        assert (folder / "reports" / a).exists(), a
    info = json.loads((folder / "reports" / "experiments" / "tiny" / "report.json").read_text())
    caps = dict((p.split("/")[-1], c) for p, c in info["figures"])
    assert "own y-axis" in caps["loss_curves_photos.png"]
    assert "PSNR (dB" in caps["val_curves_photos.png"]
    assert "not repeated" in caps["samples_photos.png"]  # the floor column is left out, and says so


def test_sample_choice_prefers_content_over_dark_crops(tmp_path):
    from inpaintbench.report.plots import pick_samples

    rng = np.random.default_rng(0)
    pairs = []
    for i, (scale, offset) in enumerate([(0.02, 0.02), (0.3, 0.35), (0.1, 0.45), (0.5, 0.9)]):
        img = np.clip(offset + scale * rng.random((16, 16, 3)), 0, 1).astype(np.float32)
        save_image(tmp_path / f"{i}.png", img)
        pairs.append({"pair_id": str(i), "bucket": "(0.1, 0.3]", "image_path": str(tmp_path / f"{i}.png")})
    chosen = pick_samples(pairs, lambda p: True)
    assert [p["pair_id"] for p in chosen] == ["1"]  # the textured mid-grey one, not the black or the white one
    assert pick_samples(pairs, lambda p: p["pair_id"] == "0") == [pairs[0]]  # only what every method has


def test_plot_styles_are_distinct_for_many_methods():
    from inpaintbench.report.plots import style_for

    seen = {(str(s["color"]), s["linestyle"], s["marker"]) for s in (style_for(i) for i in range(20))}
    assert len(seen) == 20


def test_what_was_run_states_the_fine_tune_phase(report, tmp_path, monkeypatch):
    """A run whose run.json records a fine-tune plan (training.finetune, train/phases.py): the box,
    the sentence under each paper table and the paper table's Markdown name the second phase."""
    import shutil

    folder, page = report
    assert "fine-tune phase" not in page  # no plan, no row
    work = tmp_path / "ft"
    shutil.copytree(folder, work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    raw = tiny_params()
    raw["models"]["pconv"].setdefault("training", {})["finetune"] = {"fraction": 0.5, "lr": 5e-5, "freeze_bn": "encoder"}
    write_params(work, raw)
    for argv in (["train", "tiny", "photos", "pconv", "--no-mlflow", "--restart"], ["report", "tiny"], ["index", "tiny"]):
        assert main(argv) == 0, argv
    run = json.loads((paths.run_dir("tiny", "photos", "pconv") / "run.json").read_text())
    assert run["finetune"]["describe"] == "phase 2 (fine-tune): steps 4-6 of 6, lr 5e-05, batch norm frozen: encoder"
    page = (work / "reports" / "index.html").read_text(encoding="utf-8")
    box = page[page.index("What was run"):page.index("<h3>tiny on photos</h3>")]
    text = "phase 2 (fine-tune): steps 4-6 of 6, lr 5e-05, batch norm frozen: encoder; the last 50 % of steps"
    assert f"<th>fine-tune phase</th><td>pconv: {text}</td>" in box  # the model's label (tiny params: none, so its name)
    assert f"fine-tune phase: pconv: {text}" in page[page.index("Paper layout"):]  # the sentence under the paper table
    md = (work / "reports" / "experiments" / "tiny" / "paper_tables" / "ccsa_table4_tiny.md").read_text(encoding="utf-8")
    assert f"Fine-tune phase: pconv: {text}." in md
    info = json.loads((work / "reports" / "experiments" / "tiny" / "report.json").read_text())
    assert [f["model_name"] for f in info["what_was_run"]["finetune"]] == ["pconv"]
