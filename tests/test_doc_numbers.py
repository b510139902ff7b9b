"""The result numbers of README.md and docs/*.md are what ``make docs`` (``tools/make_docs.py``) writes from the
committed outputs under ``results/reference/``: every table and quoted figure sits in a marker, a hand-written
decimal or percentage must be an allow-listed setting in its phrase, and a claim beside the prose must hold. An
arbitrary change of any result number fails (the mutation test), and an output older than the code's result
version is marked stale in the docs. A failure says which line; ``make docs`` rewrites the numbers."""

from __future__ import annotations

import random
import sys

import pytest

from conftest import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.report import RESULT_VERSION, read_result_version, write_table  # noqa: E402
from tools import make_docs  # noqa: E402
from tools.doc_allowed import ALLOWED  # noqa: E402

DOCS = make_docs.documents()


@pytest.fixture(scope="module")
def sources():
    return make_docs.Sources()


@pytest.mark.parametrize("doc", DOCS, ids=make_docs.doc_name)
def test_the_committed_docs_are_what_make_docs_writes(doc, sources):
    problems = make_docs.check_text(make_docs.doc_name(doc), doc.read_text(), sources)
    assert not problems, "run `make docs` (or fix the marker):\n" + "\n".join(problems)


def test_changing_one_digit_of_any_result_number_fails(sources):
    """20 result numbers drawn at random over README.md and docs/*.md, one digit of each changed in memory."""
    texts = {make_docs.doc_name(doc): doc.read_text() for doc in DOCS}
    pool = [(name, span) for name, text in texts.items() for span in make_docs.result_numbers(text)]
    assert len(pool) > 300, "the docs should hold their results through markers"
    rng = random.Random(25)
    passed = []
    for name, (a, b) in rng.sample(pool, 20):
        text = texts[name]
        digits = [i for i in range(a, b) if text[i].isdigit()]
        i = rng.choice(digits)
        mutated = text[:i] + rng.choice([d for d in "0123456789" if d != text[i]]) + text[i + 1:]
        if not make_docs.check_text(name, mutated, sources):
            passed.append(f"{name}:{text.count(chr(10), 0, a) + 1}: {text[a:b]!r} -> {mutated[a:b]!r}")
    assert not passed, "changed numbers the check accepts:\n" + "\n".join(passed)


def test_an_arbitrary_number_is_refused_in_hand_written_prose(sources):
    doc = ROOT / "README.md"
    text = doc.read_text().replace("## Quick start", "PixCorr 0.642 beats 0.601 by 4 %.\n\n## Quick start", 1)
    problems = make_docs.check_text(doc.name, text, sources)
    assert sum("written by hand" in p for p in problems) == 3, problems


def test_every_allow_list_phrase_is_in_use():
    texts = {make_docs.doc_name(doc): doc.read_text() for doc in DOCS}
    unused = [(name, phrase) for name, phrases in ALLOWED.items() for phrase in phrases
              if phrase not in texts.get(name, "")]
    assert not unused, f"allow-list phrases no document holds any more: {unused}"


def _reference(tmp_path, version: int | None):
    """A tiny run folder under ``tmp_path/ref/run``: reconstruction.md/.csv by write_table (stamped with
    ``version``, or unstamped) and a metrics.json."""
    run = tmp_path / "ref" / "run"
    run.mkdir(parents=True)
    write_table(run / "reconstruction", [{"method": "a", "pixcorr": 0.6712}, {"method": "b", "pixcorr": 0.5}],
                ["method", "pixcorr"])
    md = run / "reconstruction.md"
    if version is None:
        md.write_text(md.read_text().split("<!--")[0])
    else:
        md.write_text(md.read_text().replace(f"version {RESULT_VERSION}", f"version {version}"))
    (run / "metrics.json").write_text('{"reconstruction": {"a": {"pixcorr": 0.6712}}}')
    return make_docs.Sources(tmp_path / "ref")


DOC = ("# Title\n\nIt scores <!--n run:reconstruction.a.pixcorr--> (table: "
       "<!--n run/reconstruction.csv:[method=b].pixcorr | .2f-->, twice: <!--n 2 * {run:reconstruction.a.pixcorr} | .1f-->)"
       "<!--? {run:reconstruction.a.pixcorr} > {run/reconstruction.md:[method=b].pixcorr} -->.\n")


def test_write_table_stamps_the_result_version(tmp_path):
    _reference(tmp_path, RESULT_VERSION)
    run = tmp_path / "ref" / "run"
    assert read_result_version(run / "reconstruction.md") == RESULT_VERSION
    assert read_result_version(run / "reconstruction.csv") == RESULT_VERSION  # a CSV has its .md twin's
    assert (run / "reconstruction.csv").read_text().startswith("method,pixcorr\n")  # CSV stays plain
    assert make_docs.folder_version(run) == RESULT_VERSION  # metrics.json has none: its tables'


def test_current_outputs_fill_markers_without_a_stale_mark(tmp_path):
    text, problems = make_docs.render(DOC, _reference(tmp_path, RESULT_VERSION))
    assert not problems
    assert "It scores 0.671<!--n" in text and "(table: 0.50<!--n" in text and "twice: 1.3<!--n" in text
    assert make_docs.STALE not in text and "generated: stale" not in text


@pytest.mark.parametrize("version", [RESULT_VERSION - 1, None])
def test_an_older_or_unstamped_table_is_marked_stale(tmp_path, version):
    sources = _reference(tmp_path, version)
    text, _ = make_docs.render(DOC, sources)
    assert f"0.671{make_docs.STALE}<!--n" in text and f"1.3{make_docs.STALE}<!--n" in text
    note = text.split("<!-- generated: stale -->\n", 1)[1].split("<!-- /generated -->")[0]
    made = f"made by result version {version}" if version else "made before result versions were recorded"
    assert "`results/reference/run/`" in note and made in note and f"the code is at version {RESULT_VERSION}" in note
    assert make_docs.render(text, sources)[0] == text  # a second pass changes nothing


def test_a_claim_the_outputs_no_longer_support_fails(tmp_path):
    sources = _reference(tmp_path, RESULT_VERSION)
    text, problems = make_docs.render(DOC.replace("} > {", "} < {"), sources)
    assert len(problems) == 1 and "no longer holds" in problems[0]


def test_a_claim_may_compare_a_verdict_as_text_but_not_do_arithmetic_with_it(tmp_path):
    sources = _reference(tmp_path, RESULT_VERSION)
    (tmp_path / "ref" / "run" / "stats.csv").write_text("variant,pixcorr_verdict\nb,loss\n")
    ref = "{run/stats.csv:[variant=b].pixcorr_verdict}"
    assert not make_docs.render(f'x<!--? {ref} == "loss" -->', sources)[1]
    assert not make_docs.render(f'x<!--? {ref} != "win" and {{run:reconstruction.a.pixcorr}} > 0.6 -->', sources)[1]
    assert "no longer holds" in make_docs.render(f'x<!--? {ref} == "win" -->', sources)[1][0]
    for bad in (f'{ref} > "a"', f'{ref} + 1 > 0', f'{{run:reconstruction.a.pixcorr}} != "win"',
                f'min({ref}, "a") == "a"'):
        with pytest.raises(make_docs.DocError, match="is not a number"):
            make_docs.render(f"x<!--? {bad} -->", sources)
    for bare in (ref, f"{ref} and {{run:reconstruction.a.pixcorr}} > 0", "{run:reconstruction.a.pixcorr}"):
        with pytest.raises(make_docs.DocError, match="is not a comparison"):
            make_docs.render(f"x<!--? {bare} -->", sources)


def test_a_marker_naming_nothing_is_an_error(tmp_path):
    sources = _reference(tmp_path, RESULT_VERSION)
    with pytest.raises(make_docs.DocError, match="no key 'c'"):
        make_docs.render("<!--n run:reconstruction.c.pixcorr-->", sources)
    with pytest.raises(make_docs.DocError, match="matches 0 rows"):
        make_docs.render("<!--n run/reconstruction.md:[method=z].pixcorr-->", sources)


def test_an_ablation_overview_reads_reconstruction_and_decoding_side_by_side(sources):
    """The overview block of a comparison's README (``tools/doc_ablations.py``), on a committed comparison: each
    variant's wgan_gp means and seed SDs as table.csv holds them, its verdict against the reference from stats.csv,
    and its decoding averaged over the layers of decoding.csv."""
    import csv

    import numpy as np

    from tools.doc_ablations import ablation

    folder = ROOT / "results" / "reference" / "compare" / "lowlevel_demo"
    text = ablation(make_docs.Context(sources), "lowlevel_demo")
    rows = {r.split(" | ")[0].strip("| "): r for r in text.splitlines()[2:]}
    table = [r for r in csv.DictReader((folder / "table.csv").open()) if r["method"] == "wgan_gp"]
    decoding = list(csv.DictReader((folder / "decoding.csv").open()))
    assert set(rows) == {r["variant"] for r in table}
    for r in table:
        assert f"{float(r['pixcorr']):.3f} ±{float(r['pixcorr_seed_sd']):.3f}" in rows[r["variant"]]
    assert "| reference |" in rows["features"] and "within noise" in rows["pixels16 start"]
    mean = np.mean([float(d["profile_corr"]) for d in decoding])
    assert f"| {mean:.3f} / " in rows["pixels16 start"]  # one stage 1 shared by both variants


def test_a_selector_value_may_hold_commas_and_a_shared_baseline_stands_in_each_overview_row(sources):
    """Variant names such as "dense, layer penalty" hold commas: a comma starts the next condition only before its
    `key=`. A baseline that every variant shares is one table row (`all variants`); the overview shows it in the
    row of each variant, beside the variant's own nearest_train, and lists no row of its own for it."""
    import csv

    from tools.doc_ablations import ablation

    table = "compare/decoders/table.csv"
    text, problems = make_docs.render(f"<!--n {table}:[variant=dense, unit penalty,method=wgan_gp].pixcorr | .6f-->",
                                      sources)
    rows = list(csv.DictReader((ROOT / "results" / "reference" / table).open()))
    want = next(r for r in rows if r["variant"] == "dense, unit penalty" and r["method"] == "wgan_gp")
    assert not problems and text.split("<!--n")[0].rstrip("⚠") == f"{float(want['pixcorr']):.6f}"  # ⚠: stale
    ridge = next(r for r in rows if r["method"] == "pixel_ridge")
    assert ridge["variant"] == "all variants"
    # nearest_train searches the decoded features, which each decoder has its own of: one row per variant
    nearest = {r["variant"]: r for r in rows if r["method"] == "nearest_train"}
    overview = ablation(make_docs.Context(sources), "decoders").splitlines()[2:]
    assert len(overview) == len({r["variant"] for r in rows if r["method"] == "wgan_gp"}) == len(nearest) == 3
    for line in overview:
        variant = line.split(" | ")[0].lstrip("| ")
        assert f"| {float(ridge['pixcorr']):.3f} / {float(nearest[variant]['pixcorr']):.3f} |" in line
