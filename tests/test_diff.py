"""What a user reads when a document changed: line counts, a short diff, and never a stalled worker."""

from __future__ import annotations

import difflib
import random
import time

import pytest

from mirror.diff import MAX_LINE_CHARS, TEXT_CACHE_BYTES, TEXTS, VIEWS, compare, unified

PDF_A = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n"
PDF_B = PDF_A + b"2 0 obj << /Type /Pages >> endobj\n"


def html(*paragraphs: str, head: str = "") -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f"<html><head>{head}</head><body><nav>Home | Texts</nav>{body}<footer>Contact</footer></body></html>"
    )


def plain(lines: list[str]) -> bytes:
    return "\n".join(lines).encode()


@pytest.mark.parametrize(
    ("content_type", "head"),
    [
        pytest.param("text/html", '<meta charset="windows-1252">', id="charset-only-in-meta"),
        pytest.param("text/html; charset=iso-8859-1", "", id="only-iso-8859-1-in-header"),
    ],
)
def test_windows_1252_page_change_shows_the_right_characters(content_type, head):
    old = html("Die Seite.", "Preis: 4 €.", head=head).encode("cp1252")
    new = html("Die Seite.", "„Anführungszeichen“ für das Café — Preis: 5 €.", head=head).encode("cp1252")

    diff = compare(old, content_type, new, content_type)

    assert diff.text
    assert (diff.lines_added, diff.lines_removed) == (1, 1)
    assert "-Preis: 4 €." in diff.unified.splitlines()
    assert "+„Anführungszeichen“ für das Café — Preis: 5 €." in diff.unified.splitlines()


def test_one_paragraph_reworded_counts_one_line_added_and_one_removed():
    paragraphs = [f"Paragraph {n} of the note from the chair." for n in range(1, 8)]
    reworded = [*paragraphs[:3], "Paragraph 4, corrected after the congress.", *paragraphs[4:]]

    diff = compare(html(*paragraphs).encode(), "text/html", html(*reworded).encode(), "text/html")

    assert (diff.old_size, diff.new_size) == (len(html(*paragraphs).encode()), len(html(*reworded).encode()))
    assert (diff.text, diff.lines_added, diff.lines_removed) == (True, 1, 1)
    lines = diff.unified.splitlines()
    assert lines[:2] == ["--- old", "+++ new"]
    assert lines[2].startswith("@@ ")
    assert "-Paragraph 4 of the note from the chair." in lines
    assert "+Paragraph 4, corrected after the congress." in lines
    assert "Paragraph 1 of the note from the chair." not in diff.unified  # beyond the 3 lines of context


def test_paragraph_added_counts_its_lines_of_text_but_not_the_blank_line_before_it():
    old = html("First paragraph.", "Second paragraph.").encode()
    new = html("First paragraph.", "Second paragraph.", "A third one,<br>on two lines.").encode()

    diff = compare(old, "text/html", new, "text/html")

    assert (diff.lines_added, diff.lines_removed) == (2, 0)
    added = [line for line in diff.unified.splitlines() if line.startswith("+") and line != "+++ new"]
    assert added == ["+A third one,", "+on two lines.", "+"]


def test_short_diff_is_cut_at_max_lines_but_counts_cover_everything():
    old = [f"line {n}" for n in range(200)]
    new = [f"line {n} changed" if n % 2 else f"line {n}" for n in range(200)]

    diff = compare(plain(old), "text/plain", plain(new), "text/plain", max_lines=20)

    full = unified("\n".join(old), "\n".join(new), "old", "new").splitlines()
    lines = diff.unified.splitlines()
    assert (diff.lines_added, diff.lines_removed) == (100, 100)
    assert len(lines) == 21
    assert lines[:20] == full[:20]
    assert lines[-1] == f"... {len(full) - 20} more lines"


def test_short_diff_that_fits_has_no_more_lines_marker():
    diff = compare(b"a\nb\nc", "text/plain", b"a\nB\nc", "text/plain")
    assert diff.unified == "--- old\n+++ new\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c"


def test_one_huge_line_is_shortened_in_the_short_diff_only():
    old, new = "x" * 50_000, "y" * 50_000
    diff = compare(old.encode(), "application/json", new.encode(), "application/json")
    assert (diff.lines_added, diff.lines_removed) == (1, 1)
    assert f"+{'y' * (MAX_LINE_CHARS - 1)}…" in diff.unified.splitlines()
    assert f"+{new}" in unified(old, new, "a", "b").splitlines()


def test_change_only_in_scripts_is_a_text_change_of_nothing():
    old = html("Same words.", head="<script>var v = 1;</script>").encode()
    new = html("Same words.", head="<script>var v = 2;</script>").encode()
    diff = compare(old, "text/html", new, "text/html")
    assert (diff.text, diff.lines_added, diff.lines_removed, diff.unified) == (True, 0, 0, "")
    assert diff.old_chars == diff.new_chars > 0


@pytest.mark.parametrize(
    ("old", "old_type", "new", "new_type"),
    [
        pytest.param(PDF_A, "application/pdf", PDF_B, "application/pdf", id="pdf-to-pdf"),
        pytest.param(html("Now a PDF.").encode(), "text/html", PDF_B, "application/pdf", id="html-to-pdf"),
        pytest.param(PDF_A, "application/pdf", html("Now a page.").encode(), "text/html", id="pdf-to-html"),
        pytest.param(PDF_A, "application/octet-stream", PDF_B, None, id="pdf-without-type"),
    ],
)
def test_binary_versions_compare_by_size_only(old, old_type, new, new_type):
    diff = compare(old, old_type, new, new_type)
    assert (diff.text, diff.old_size, diff.new_size) == (False, len(old), len(new))
    assert (diff.lines_added, diff.lines_removed, diff.unified) == (0, 0, "")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param([], ["only", "new"], id="from-empty"),
        pytest.param(["only", "old"], [], id="to-empty"),
        pytest.param(["a", "b", "c"], ["x", "a", "b", "c"], id="insert-at-start"),
        pytest.param(
            [f"l{n}" for n in range(30)], [f"l{n}" for n in range(30) if n not in (3, 20)], id="two-hunks"
        ),
        pytest.param(["same"], ["same"], id="equal"),
    ],
)
def test_full_diff_reads_like_difflib(old, new):
    expected = "\n".join(difflib.unified_diff(old, new, "v1", "v2", lineterm=""))
    assert unified("\n".join(old), "\n".join(new), "v1", "v2") == expected


def test_two_one_megabyte_texts_with_many_changes_compare_well_under_a_second():
    rng = random.Random(7)
    words = ["archive", "prison", "note", "chair", "congress", "letter", "court", "appeal", "ruling"]
    old = [" ".join(rng.choices(words, k=8)) + f" {n}" for n in range(19_000)]
    new = [" ".join(rng.choices(words, k=8)) if rng.random() < 0.2 else line for line in old]
    old_bytes, new_bytes = plain(old), plain(new)
    assert len(old_bytes) > 1_000_000

    started = time.process_time()  # CPU time: other processes on a busy machine do not count
    diff = compare(old_bytes, "text/plain", new_bytes, "text/plain")
    elapsed = time.process_time() - started

    changed = sum(a != b for a, b in zip(old, new, strict=True))
    assert (diff.lines_added, diff.lines_removed) == (changed, changed)
    assert elapsed < 0.8


def test_texts_too_costly_to_align_fall_back_promptly_and_say_so():
    # Interleaving reversed unique lines is difflib's quadratic worst case (5 s at this size).
    n = 14_000
    old = [f"entry {i}" for i in range(n)]
    new = [x for i in range(0, n, 2) for x in (old[n - 1 - i], old[i])]
    new[:2] = ["brand new entry", "another new entry"]

    started = time.process_time()  # CPU time, as above
    diff = compare(plain(old), "text/plain", plain(new), "text/plain")
    elapsed = time.process_time() - started

    lines = diff.unified.splitlines()
    assert elapsed < 1.5
    assert lines[2].startswith("# 14000 -> 14000 lines: too costly to align")
    assert (diff.lines_added, diff.lines_removed) == (2, 2)
    assert lines[3:7] == ["-entry 0", f"-entry {n - 1}", "+brand new entry", "+another new entry"]


def test_texts_kept_for_the_next_change_stay_within_their_bytes_however_many_pages_change():
    # Curly quotes: Python keeps these texts at 2 bytes a character.
    words = ["“archive”", "prison", "note", "chair", "congress", "letter", "court", "appeal", "ruling"]
    rng = random.Random(11)
    kept = []
    for n in range(120):  # ~60 KB of text a page: twice the cache's bytes in all
        lines = [" ".join(rng.choices(words, k=10)) for _ in range(500)]
        old, new = plain(lines), plain([f"page {n} changed", *lines[1:]])
        compare(old, "text/plain", new, "text/plain", old_sha256=f"old{n}", new_sha256=f"new{n}")
        kept.append(f"new{n}")

    assert 0 < TEXTS.size <= TEXT_CACHE_BYTES and 0 < VIEWS.size <= TEXT_CACHE_BYTES
    assert TEXTS.get(kept[-1], "text/plain") is not None  # the last changes are kept
    assert TEXTS.get(kept[0], "text/plain") is None  # the first are dropped
