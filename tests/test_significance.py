"""How much a change matters: significance 0 for noise, clearly more for what an archive must notice.

The page pairs are made from two documents written for these tests (tests/data/significance/):
- `report.html`: an annual censorship report page, modelled on the archive pages of
  prisoncensorship.info (a site banner, a menu, an article with a figure and its caption,
  a list of dataset downloads, a footer with "Last updated" and a view counter): 783 words,
  15 links, one image.
- `letter.txt`: a transcribed denial letter served as plain text, with a transcription time
  and a view counter in its header, as the archive's etext pages have.
Each variant below is the page with one real-world edit applied, named after what happened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.config import load_config
from mirror.diff import compare
from mirror.errors import ConfigError
from mirror.ignore import NO_RULES, IgnoreRules, make_rules
from mirror.significance import weigh
from mirror.textpool import MIN_POOL_BYTES, TextPool

DATA = Path(__file__).parent / "data" / "significance"
PAGE = (DATA / "report.html").read_bytes()
LETTER = (DATA / "letter.txt").read_bytes()
HTML = "text/html; charset=utf-8"
DATASET_LINE = (
    b'<li><a href="/archive/reports/2024/data/denials-2024.csv">'
    b"All 41,207 denials as a spreadsheet (CSV, 6.1 MB)</a></li>\n"
)


def edit(*pairs: tuple[bytes, bytes], page: bytes = PAGE) -> bytes:
    for old, new in pairs:
        assert page.count(old) == 1, old
        page = page.replace(old, new)
    return page


def cut(start: bytes, end: bytes, page: bytes = PAGE) -> bytes:
    """Return `page` without the part from `start` up to (not including) `end`."""
    return page[: page.index(start)] + page[page.index(end) :]


def weighed(new: bytes, rules: IgnoreRules = NO_RULES, old: bytes = PAGE, content_type: str = HTML):
    diff = compare(old, content_type, new, content_type, rules=rules)
    return diff.significance, list(diff.noise)


FOOTER_DATE = (b"3 December 2026, 14:05", b"4 December 2026, 09:12")
VIEWS = (b"12,408", b"12,533")

NOISE = {
    "footer date and time": (edit(FOOTER_DATE), ["date", "time"]),
    "view counter": (edit(VIEWS), ["number"]),
    "footer date and view counter": (edit(FOOTER_DATE, VIEWS), ["date", "number", "time"]),
    "session id in the contact link and a script": (
        PAGE.replace(b"4f3a9c2e11b07d85", b"a90b12ce77f04d31"),
        ["token"],
    ),
    "stylesheet cache-buster in the head": (edit((b"v=20241203", b"v=20250101")), ["markup"]),
    "a heading's case": (edit((b"Data and documents", b"Data and Documents")), ["case"]),
    "copyright year": (edit((b"&copy; 2026", b"&copy; 2027")), ["number"]),
}


@pytest.mark.parametrize("name", list(NOISE))
def test_a_change_that_is_only_noise_weighs_exactly_zero_and_says_what_it_was(name):
    new, noise = NOISE[name]
    assert new != PAGE
    assert weighed(new) == (0.0, noise)


SIGNIFICANT = {
    "a dataset download removed": edit((DATASET_LINE, b"")),
    "a dataset link removed, its words kept": edit(
        (
            b'<a href="/archive/reports/2024/data/denials-2024.csv">All 41,207 denials as a spreadsheet '
            b"(CSV, 6.1 MB)</a>",
            b"All 41,207 denials as a spreadsheet (CSV, 6.1 MB)",
        )
    ),
    "a dataset link pointed elsewhere": edit((b'denials-2024.csv"', b'denials-2024-summary.csv"')),
    "the image and its caption removed": cut(b'<figure class="evidence">', b"<h3>Departments"),
    "the image alone removed": cut(b"<img src=", b"<figcaption>"),
    "a section removed": cut(b"<h3>Departments that did not answer", b"<h3>How we counted"),
    "a paragraph rewritten": edit(
        (
            b"Two departments told us that they keep no log of rejected publications. One of them had "
            b"published, in its own policy manual, a requirement",
            b"Every department eventually sent its logs after we appealed. Our earlier account said that "
            b"one of them had published a requirement",
        )
    ),
}


@pytest.mark.parametrize("name", list(SIGNIFICANT))
def test_what_an_archive_must_notice_is_clearly_significant(name):
    significance, noise = weighed(SIGNIFICANT[name])
    assert significance >= 0.05
    assert noise == []


def test_significant_changes_keep_their_weight_when_noise_comes_with_them():
    alone, _ = weighed(SIGNIFICANT["a dataset download removed"])
    with_noise = edit((DATASET_LINE, b""), FOOTER_DATE, VIEWS)
    assert weighed(with_noise) == (alone, [])


def test_the_scale_orders_changes_by_how_much_of_the_page_they_touch():
    word, _ = weighed(edit((b"very different ways", b"quite different ways")))
    link, _ = weighed(SIGNIFICANT["a dataset download removed"])
    section, _ = weighed(SIGNIFICANT["a section removed"])
    everything, _ = weighed(b"<html><body><p>This archive has closed.</p></body></html>")
    assert 0 < word < 0.05 <= link < section < everything == 1.0


def test_a_number_removed_or_added_is_a_change_not_noise():
    # Only a number changed in place for another is set aside.
    significance, _ = weighed(edit((b"(CSV, 6.1 MB)", b"(CSV)")))
    assert significance > 0


def test_plain_text_documents_are_weighed_the_same_way():
    header = edit(
        (b"Mon, 2 Dec 2026 at 9:41 am", b"Tue, 3 Dec 2026 at 10:02 am"),
        (b"3,207", b"3,300"),
        page=LETTER,
    )
    assert weighed(header, old=LETTER, content_type="text/plain") == (0.0, ["date", "number", "time"])
    reason = edit((b"Page(s) cited: none given.", b"Page(s) cited: 3, 7 and 12."), page=LETTER)
    assert weighed(reason, old=LETTER, content_type="text/plain")[0] >= 0.05


def test_whitespace_and_reflowed_lines_are_noise():
    reflowed = LETTER.replace(
        b"the publication listed below, addressed to an\noffender",
        b"the  publication listed below,\naddressed to an offender",
    )
    assert weighed(reflowed, old=LETTER, content_type="text/plain") == (0.0, ["whitespace"])


BANNER = (b"Our volunteers scan every denial letter by hand.", b"Help us file this year's records requests.")


def test_ignore_selectors_set_aside_a_rotating_banner():
    new = edit(BANNER)
    assert weighed(new)[0] > 0  # without a rule, the banner's words count
    assert weighed(new, make_rules([], ["#appeal"])) == (0.0, ["ignored"])
    assert weighed(new, make_rules([], ["div.banner"])) == (0.0, ["ignored"])


def test_ignore_lines_set_aside_matching_lines_of_the_text():
    new = edit(BANNER)
    rules = make_rules([r"^(Our volunteers|Help us) "], [])
    assert weighed(new, rules) == (0.0, ["ignored"])


def test_an_ignore_rule_never_hides_a_change_outside_what_it_selects():
    rules = make_rules([r"^Last updated:"], ["#appeal", "footer .stamp"])
    assert weighed(edit(FOOTER_DATE), rules) == (0.0, ["ignored"])
    significance, _ = weighed(SIGNIFICANT["a dataset download removed"], rules)
    assert significance >= 0.05


def test_links_inside_ignored_elements_do_not_count():
    # The banner's donate link moves: the selector sets aside the element with its link.
    new = edit((b'<a href="/donate/">', b'<a href="/donate/2027/">'))
    assert weighed(new)[0] > 0
    assert weighed(new, make_rules([], ["#appeal"])) == (0.0, ["ignored"])


def test_links_and_images_nobody_sees_do_not_count():
    hidden = (
        b"<template><a href='/t/1.html'>t</a></template><div hidden><img src='/h/1.png'></div>"
        b"<p style='DISPLAY: None'><a href='/s/1.html'>s</a></p>"
    )
    old = edit((b"<footer>", hidden + b"<footer>"))
    new = edit((b"<footer>", hidden.replace(b"/1.", b"/2.") + b"<footer>"))
    assert weighed(new, old=old) == (0.0, ["markup"])


def test_a_huge_rewrite_is_weighed_within_bounds():
    import random
    import time

    rng = random.Random(13)
    vocabulary = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=6)) for _ in range(5000)]
    words = rng.choices(vocabulary, k=200_000)
    old = "\n".join(" ".join(words[i : i + 10]) for i in range(0, len(words), 10))
    rng.shuffle(words)
    new = "\n".join(" ".join(words[i : i + 10]) for i in range(0, len(words), 10))
    started = time.monotonic()
    significance, noise = weigh(old, new, NO_RULES)
    assert time.monotonic() - started < 10  # ~0.5 s alone; the machine may be busy
    assert significance > 0 and noise == ()


def test_a_listing_whose_every_view_counter_moved_is_noise_even_past_the_word_bound():
    from mirror.significance import MAX_WORDS

    def listing(seed: int) -> bytes:
        items = "".join(
            f"<li><a href='/etext/{n}.html'>Issue {n} of the newsletter</a> {(n * seed) % 9973:,} views</li>"
            for n in range(1500)
        )
        return f"<html><body><ul>{items}</ul></body></html>".encode()

    assert MAX_WORDS < 1500 * 2 * 7
    assert weighed(listing(7), old=listing(3)) == (0.0, ["number"])


def test_a_paragraph_that_only_moved_is_a_small_change():
    paragraph = PAGE[PAGE.index(b"<p>An item is one") : PAGE.index(b"<p>We did not try")]
    moved = edit((paragraph, b""), (b'<section id="downloads">', paragraph + b'<section id="downloads">'))
    significance, noise = weighed(moved)
    assert 0 < significance < 0.05 and noise == []


def test_a_binary_change_cannot_be_weighed_and_counts_fully():
    pdf_old, pdf_new = b"%PDF-1.7\n1 0 obj\n", b"%PDF-1.7\n2 0 obj\n"
    assert weighed(pdf_new, old=pdf_old, content_type="application/pdf") == (1.0, [])
    assert weigh(None, "text", NO_RULES) == (1.0, ())


def test_a_large_page_is_weighed_the_same_in_the_helper_process():
    filler = b"".join(
        b"<p>Archived letter %d: the mailroom denied the publication.</p>\n" % i for i in range(900)
    )
    old = PAGE.replace(b"<h3>Earlier reports</h3>", filler + b"<h3>Earlier reports</h3>")
    assert len(old) * 2 >= MIN_POOL_BYTES
    rules = make_rules([], ["#appeal"])
    pool = TextPool(workers=1, start_after=0)
    try:
        assert pool.start(timeout=60)
        for new in (edit(FOOTER_DATE, BANNER, page=old), edit((DATASET_LINE, b""), page=old)):
            helper = compare(old, HTML, new, HTML, rules=rules, run=pool.run)
            assert helper == compare(old, HTML, new, HTML, rules=rules)
        assert compare(
            old, HTML, edit(FOOTER_DATE, BANNER, page=old), HTML, rules=rules, run=pool.run
        ).noise == (
            "date",
            "ignored",
            "time",
        )
    finally:
        pool.close()


# -- ignore rules in the config ------------------------------------------------------------------


def test_ignore_rules_of_targets_and_sources_reach_their_pages(tmp_path):
    config = tmp_path / "mirror.toml"
    config.write_text(
        'targets = [{ url = "https://a.org/report.html", ignore_lines = ["^Last updated:"] }]\n\n'
        "[[sources]]\n"
        'start = "https://a.org/archive/"\n'
        'ignore_selectors = ["footer .stamp", "#appeal"]\n'
    )
    ignore = load_config(config, {}).ignore
    assert ignore.rules_for("https://a.org/report.html").lines == ("^Last updated:",)
    found = ignore.rules_for("https://a.org/archive/2024/letters.html")
    assert found.selectors == ("footer .stamp", "#appeal") and found.lines == ()
    assert not ignore.rules_for("https://a.org/other.html")


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ('ignore_lines = ["(views"]', "targets[0].ignore_lines[0]", "not a regular expression"),
        ('ignore_lines = ["ok", ".*"]', "targets[0].ignore_lines[1]", "matches an empty line"),
        ('ignore_selectors = ["div > > p"]', "targets[0].ignore_selectors[0]", "not a CSS selector"),
        ('ignore_selectors = ["p::first-line"]', "targets[0].ignore_selectors[0]", "not a CSS selector"),
        ('ignore_lines = "views"', "targets[0].ignore_lines", "expected a list"),
    ],
)
def test_a_bad_ignore_rule_is_a_config_error_naming_its_key(tmp_path, table, key, problem):
    config = tmp_path / "mirror.toml"
    config.write_text(f'[[targets]]\nurl = "https://a.org/report.html"\n{table}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config, {})
    assert caught.value.key == key
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_selector_of_a_source_names_the_source(tmp_path):
    config = tmp_path / "mirror.toml"
    config.write_text(
        '[[sources]]\nsitemap = "https://a.org/sitemap.xml"\nignore_selectors = ["[unclosed"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config, {})
    assert caught.value.key == "sources[0].ignore_selectors[0]"


# -- through `mirror check`, `history` and `diff` ------------------------------------------------


def test_a_footer_date_change_is_recorded_as_noise_and_history_significant_hides_it(
    site, database_url, tmp_path
):
    from tests.test_cli import Mirror, write_config

    site.put("/report.html", PAGE)
    url = site.url("/report.html")
    rules = f'[[targets]]\nurl = "{url}"\nignore_selectors = ["#appeal"]\n'
    config = write_config(tmp_path / "mirror.toml", [])
    config.write_text(config.read_text().replace("targets = [\n]\n", "") + rules)
    m = Mirror(config, database_url, tmp_path)
    m("check")

    site.put("/report.html", edit(FOOTER_DATE, BANNER))  # the footer's date, and the banner it ignores
    assert m.json("check")["outcomes"]["changed"] == 1
    site.put("/report.html", edit(FOOTER_DATE, BANNER, (DATASET_LINE, b"")))  # a dataset link goes
    m("check")

    history = m.json("history", url)
    assert [v["number"] for v in history["versions"]] == [1, 2, 3]  # the bytes are all kept
    changes = [e for e in history["events"] if e["kind"] == "document.changed"]
    assert [(e["significance"], e["noise"]) for e in changes] == [
        (0.0, ["date", "ignored", "time"]),
        (changes[1]["significance"], []),
    ]
    assert changes[1]["significance"] >= 0.05
    assert changes[0]["details"]["significance"] == 0.0  # stored with the event, in its hash chain
    assert changes[0]["details"]["noise"] == ["date", "ignored", "time"]
    new = next(e for e in history["events"] if e["kind"] == "document.new")
    assert (new["significance"], new["noise"]) == (None, None)

    significant = m.json("history", url, "--significant")
    assert [e["seq"] for e in significant["events"] if e["kind"] == "document.changed"] == [changes[1]["seq"]]
    assert [v["number"] for v in significant["versions"]] == [1, 2, 3]

    text = m("history", url).stdout.decode()
    assert "document.changed  significance=0 noise=date,ignored,time" in text
    assert f"significance={changes[1]['significance']:g} lines_added=" in text
    assert "noise=" not in m("history", url, "--significant").stdout.decode()

    assert m("diff", url).stdout.decode().startswith(f"# significance {changes[1]['significance']:g}\n--- ")
    noise = m("diff", url, "--from", "1", "--to", "2").stdout.decode()
    assert noise.startswith("# significance 0 (noise: date, ignored, time)\n--- ")
    assert "+Last updated: 4 December 2026, 09:12 UTC" in noise
    assert m("verify").returncode == 0


def test_the_readme_example_of_ignore_rules_loads_and_its_error_line_is_the_real_one(tmp_path):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### How much a change matters", 1)[1].split("\n## ", 1)[0]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "mirror.toml"
    config.write_text(example)
    loaded = load_config(config, {})
    wim = "https://www.prisoncensorship.info/archive/etext/wim/"
    assert loaded.ignore.rules_for(wim).selectors == (
        "#donate-banner",
        "footer .counter",
        "aside.rotating",
        "div.random-quote",
    )
    # `^Last updated:` sets aside the footer line that holds the view counter too.
    assert weighed(edit(VIEWS), make_rules(loaded.ignore.rules_for(wim).lines, [])) == (0.0, ["ignored"])
    config.write_text(f'[[targets]]\nurl = "{wim}"\nignore_selectors = ["#a", "div > > p"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config, {})
    assert f"config/mirror.toml: {caught.value.key}: {caught.value.problem}" in section


def test_history_text_shows_a_damaged_significance_without_crashing():
    from datetime import UTC, datetime

    from mirror.archive import History
    from mirror.domain import StoredEvent
    from mirror.render import history_text

    def change(seq: int, details: dict) -> StoredEvent:
        at = datetime(2026, 12, 3, tzinfo=UTC)
        return StoredEvent(
            seq, "document.changed", "https://a.org/", at, "a" * 64, "b" * 64, details, None, "h"
        )

    lines = history_text(
        History(
            "https://a.org/",
            "ok",
            [],
            [
                change(1, {"significance": 0.0, "noise": ["date", "number"]}),
                change(2, {"significance": 0.104, "noise": []}),
                change(3, {"significance": "lots", "noise": "date"}),  # edited in the database
                change(4, {"lines_added": 1}),  # recorded before changes were weighed
            ],
        )
    )
    assert lines[1].endswith("document.changed  significance=0 noise=date,number")
    assert lines[2].endswith("document.changed  significance=0.104")
    assert lines[3].endswith("document.changed")
    assert lines[4].endswith("document.changed  lines_added=1")


def test_the_daemon_weighs_changes_with_the_rules_of_the_config_it_runs(tmp_path):
    from mirror.check import Checker

    config = tmp_path / "mirror.toml"
    config.write_text('[[targets]]\nurl = "https://a.org/report.html"\nignore_selectors = ["#appeal"]\n')
    checker = Checker.from_config(
        load_config(config, {}), archive=None
    )  # the archive is only kept, not used here
    try:
        assert checker.ignore.rules_for("https://a.org/report.html").selectors == ("#appeal",)
    finally:
        checker.close()
