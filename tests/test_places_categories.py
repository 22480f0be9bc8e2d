"""Places365 categories drawn by count (SAHN: "five complete categories", params
`categories: 5`): fetch extracts only the categories prepare then draws with the same seed."""
import csv

from fakedata import fake_server, places_files  # noqa: F401  (fixture)

from inpaintbench.data.fetch import fetch_source
from inpaintbench.data.prepare import prepare_real


def test_integer_categories_extract_only_the_drawn_categories(fake_server, tmp_path):  # noqa: F811
    raw = tmp_path / "raw"
    override = fake_server.publish("places365", places_files(train_per_cat=2, val_per_cat=1))
    fetch_source("places365", raw, accept_terms=True, urls_override=override, progress=False, categories=2, seed=3)
    data = raw / "places365" / "data_256"
    extracted = {p.parent.relative_to(data).as_posix().split("/", 1)[1] for p in data.rglob("*.jpg")}
    assert len(extracted) == 2  # two of the four categories' folders, not the whole archive
    out = prepare_real("places2", {"source": "places365", "size": 32, "categories": 2, "test_per_category": 1},
                       raw, tmp_path / "p", seed=3, workers=1)
    rows = list(csv.DictReader(out.open()))
    assert {r["labels"] for r in rows} == extracted  # prepare draws the same two
    assert len(rows) == 2 * (2 + 1)
    # asking again with the same count and seed downloads nothing and extracts nothing new
    n = len(fake_server.requests)
    fetch_source("places365", raw, accept_terms=True, urls_override=override, progress=False, categories=[2], seed=3)
    assert len(fake_server.requests) == n
