"""`--json` documents written a piece at a time read exactly as the whole document would."""

from __future__ import annotations

import json

from mirror import render
from mirror.check import CheckReport
from mirror.rounds import RoundReport


def test_a_rounds_json_written_in_pieces_is_the_same_document_and_no_piece_holds_it_all():
    checks = tuple(
        CheckReport(
            url=f"https://www.prisoncensorship.info/archive/etext/{n}/“notes”.html",
            outcome="changed" if n % 10 == 0 else "unchanged",
            status="ok",
            version=2,
            sha256=f"{n:064x}",
            http_status=200,
            error=None,
            events=("document.changed",) if n % 10 == 0 else (),
        )
        for n in range(3000)
    )
    document = render.check_json(RoundReport(checks, 12.5, (), {"changed": 300, "unchanged": 2700}))

    pieces = list(render.json_pieces(document))
    whole = render.to_json(document)

    assert "".join(pieces) == whole
    assert json.loads(whole)["targets"][10]["outcome"] == "changed"
    assert len(pieces) > 10 and max(len(p) for p in pieces) < len(whole) / 10
