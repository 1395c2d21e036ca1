"""How command results look: text lines for a person, JSON documents for scripts.

The JSON keys are a contract with users' scripts (documented in the README):
change them only on purpose, with a CHANGELOG entry.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, fields, is_dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from mirror.domain import OutcomeKind

if TYPE_CHECKING:
    from mirror.config_notify import Destination
    from mirror.domain import StoredEvent
    from mirror.notify_commands import DestinationStatus
    from mirror.reader import History, StoreStatus, TargetSummary
    from mirror.repack import GcReport
    from mirror.repair import RepairReport
    from mirror.restore import Restored, SiteRestore
    from mirror.rounds import RoundReport
    from mirror.verify import Problem, VerifyReport
    from mirror.webhook import Answer


_SCALARS = (str, int, float, type(None))  # bool is an int; a str enum is a str: as they are
_FIELDS: dict[type, tuple[str, ...]] = {}  # a dataclass's field names, looked up once per class


def jsonable(value: Any) -> Any:
    """Return `value` as plain JSON types: dataclasses as objects, times as ISO 8601."""
    if isinstance(value, _SCALARS):  # most values: a round's report holds thousands of checks
        return value
    names = _FIELDS.get(type(value))
    if names is None and is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[type(value)] = tuple(f.name for f in fields(value))
    if names is not None:
        # Field by field, not `asdict`: that deep-copies every value first.
        return {name: jsonable(getattr(value, name)) for name in names}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def to_json(document: Any) -> str:
    """Return one JSON document, indented, UTF-8 kept readable."""
    return json.dumps(jsonable(document), indent=2, ensure_ascii=False)


_INDENTED = json.JSONEncoder(indent=2, ensure_ascii=False)
JSON_PIECE_TOKENS = 4096  # tokens joined per piece: ~40 KB of text


def json_pieces(document: Any) -> Iterator[str]:
    """Yield `to_json(document)` in pieces, never the whole text nor all its tokens at once.

    With `indent`, `json` encodes in Python, a string per token, and `dumps` joins the
    list of all of them: `mirror check --json` of 10,000 targets held ~20 MiB of tokens and
    text at the end of its round (memray), the peak of the round's memory. Joined a piece
    at a time here (`islice` and `join` run in C), the text is the same.
    """
    tokens = _INDENTED.iterencode(jsonable(document))
    while piece := "".join(itertools.islice(tokens, JSON_PIECE_TOKENS)):
        yield piece


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def plural(n: int, word: str) -> str:
    """Return "1 target", "2 targets", "0 targets"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def fmt_size(size: int) -> str:
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{size} B"


def check_json(report: RoundReport) -> dict[str, Any]:
    return {
        "checked": len(report.checks),
        "elapsed_seconds": round(report.elapsed, 3),
        # Every outcome, zero included: `d["outcomes"]["changed"]` must never raise.
        "outcomes": {**dict.fromkeys(map(str, OutcomeKind), 0), **report.counts},
        "crashed": list(report.crashed),
        "skipped_claimed": report.skipped_claimed,
        "lost_processes": report.lost_processes,
        "targets": report.checks,
    }


def check_text(report: RoundReport) -> list[str]:
    lines = []
    for r in sorted(report.checks, key=lambda r: r.url):
        extra = f" ({r.error})" if r.error else ""
        lines.append(f"{r.outcome:<12} {r.status:<11} v{r.version:<4} {r.url}{extra}")
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts.items())) or "nothing to check"
    lines.append(f"checked {len(report.checks)} in {report.elapsed:.1f}s: {counts}")
    if report.skipped_claimed:
        lines.append(
            f"skipped {report.skipped_claimed} being checked by another process (`mirror run` or `check`)"
        )
    if report.lost_processes:
        lines.append(
            f"{report.lost_processes} of the round's processes died: their targets wait for the next round"
        )
    return lines


def status_text(report: StoreStatus) -> list[str]:
    states = ", ".join(f"{n} {s}" for s, n in sorted(report.targets_by_status.items()) if n) or "none"
    return [
        f"database:        {report.database}",
        f"targets:         {report.targets} ({states})",
        f"versions:        {report.versions} in {plural(report.blobs, 'blob')}",
        f"content:         {fmt_size(report.content_bytes)} stored as {fmt_size(report.stored_bytes)}",
        f"last check:      {fmt_time(report.last_check_at)}",
        f"next due:        {fmt_time(report.next_check_at)}",
        f"checks, 1 hour:  {report.checks_last_hour}",
        f"overdue:         {report.overdue} (lag {report.lag_seconds:.0f}s)",
        f"checking now:    {report.checking}",
        f"suspicious:      {report.suspicious}",
    ]


def targets_json_chunks(rows: Iterable[TargetSummary]) -> Iterator[str]:
    """Yield `mirror targets --json` as `to_json({"targets": rows})` would write it, one target at a time."""
    yield '{\n  "targets": ['
    first = True
    for row in rows:
        yield ("\n    " if first else ",\n    ") + _flat_object(jsonable(row))
        first = False
    yield "\n  ]\n}" if not first else "]\n}"


def targets_text_chunks(rows: Iterable[TargetSummary]) -> Iterator[str]:
    """Yield the lines of `targets_text(rows)` one target at a time (each but the last ends in a newline)."""
    count = 0
    for row in rows:
        yield target_line(row) + "\n"
        count += 1
    yield plural(count, "target")


_scalar = json.JSONEncoder(ensure_ascii=False).encode  # one encoder: `json.dumps` builds one per call


def _flat_object(item: dict[str, Any]) -> str:
    """Return a flat object as `json.dumps(indent=2)` writes it at depth 2 (in a list in an object).

    With `indent`, `json` encodes in Python; scalars one by one go through its C encoder (3x faster).
    """
    if any(isinstance(v, dict | list) for v in item.values()):
        return json.dumps(item, indent=2, ensure_ascii=False).replace("\n", "\n    ")
    fields = ",\n".join(
        f"      {json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
        for k, v in item.items()
    )
    return "{\n" + fields + "\n    }"


def target_line(t: TargetSummary) -> str:
    return f"{t.status:<11} v{t.versions:<4} {fmt_time(t.last_checked_at)}  {t.url}" + (
        f"  (unwatched since {fmt_time(t.unwatched_since)})" if t.unwatched_since else ""
    )


def targets_text(rows: list[TargetSummary]) -> list[str]:
    return [*map(target_line, rows), plural(len(rows), "target")]


def restored_text(done: Restored) -> str:
    """Return the line `mirror restore` prints for one file written."""
    return f"restored {done.url} v{done.version} ({fmt_size(done.size)}, sha256 {done.sha256}) to {done.path}"


def site_restore_text(site: SiteRestore) -> list[str]:
    folder = f"{site.folder} (created)" if site.created else site.folder
    lines = [
        f"restored {plural(site.files, 'document')} ({fmt_size(site.bytes)}) as of {site.at.isoformat()} "
        f"to {folder}: a BagIt bag, manifests sha256 and sha512",
        f"chain head {site.head_seq} {site.head_hash} (later: mirror verify --published "
        f"{site.head_seq}:{site.head_hash})",
    ]
    lines += [f"left out (gone since {fmt_time(since)}): {url}" for url, since in site.left_out]
    return lines


def history_json(h: History) -> dict[str, Any]:
    return {
        "url": h.url,
        "status": h.status,
        "unwatched_since": h.unwatched_since,
        "versions": h.versions,
        "events": [_event_json(e) for e in h.events],
    }


def _event_json(event: StoredEvent) -> dict[str, Any]:
    """Return an event for `history --json`: its fields, a change's `significance` and `noise` lifted out."""
    document = {k: v for k, v in asdict(event).items() if k != "diff"}
    document["significance"] = event.details.get("significance")
    document["noise"] = event.details.get("noise")
    return document


def history_text(h: History) -> list[str]:
    since = f" since {fmt_time(h.unwatched_since)}" if h.unwatched_since else ""
    lines = [f"{h.url}  ({h.status}{since})"]
    for v in h.versions:
        lines.append(
            f"  v{v.number:<4} {v.sha256[:12]}  {fmt_size(v.size):>10}  {fmt_time(v.first_seen)} .. "
            f"{fmt_time(v.last_seen)}  HTTP {v.status or '-'}"
        )
    lines += [f"  #{e.seq:<5} {fmt_time(e.at)}  {e.kind}" + _event_summary(e.details) for e in h.events]
    return lines


def _event_summary(details: Mapping[str, Any]) -> str:
    weight = ""
    significance, noise = details.get("significance"), details.get("noise")
    if isinstance(significance, int | float) and not isinstance(significance, bool):
        # Details are read back as stored: `verify` reports a damaged one; this only must not crash.
        names = [str(n) for n in noise] if isinstance(noise, list) else []
        weight = f"significance={significance:g}" + (f" noise={','.join(names)}" if names else "")
    keys = (
        "lines_added",
        "lines_removed",
        "same_content",
        "to",
        "cross_host",
        "suspicious",
        "error",
        "status",
        "rule",  # document.blocked
        "soft",  # a soft 404's document.disappeared
        "reason",
        "title",
        "versions",  # document.repaired: the versions the blob it put back gives back
        "source",
    )
    parts = [f"{k}={_shown(_listed(details[k]))}" for k in keys if details.get(k) is not None]
    if weight:
        parts.insert(0, weight)
    return ("  " + " ".join(parts)) if parts else ""


def _listed(value: object) -> object:
    """Return a list of details as `1,2,3`; anything else as it is."""
    return ",".join(map(str, value)) if isinstance(value, list) else value


def _shown(value: object) -> str:
    """Return a detail as `history` prints it: quoted when it holds a space."""
    text = str(value)
    return f'"{text}"' if " " in text else text


def verify_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "blobs": report.blobs,
        "blob_bytes": report.blob_bytes,
        "snapshots": report.snapshots,
        "events": report.events,
        "head_seq": report.head_seq,
        "head_hash": report.head_hash,
        "problems": report.problems,
    }


def verify_text(report: VerifyReport) -> list[str]:
    n = len(report.problems)
    return [
        f"blobs:      {report.blobs} ({fmt_size(report.blob_bytes)}) re-hashed",
        f"snapshots:  {report.snapshots} checked against blobs and the event log",
        f"events:     {report.events} in the hash chain",
        f"head:       {report.head_seq} {report.head_hash}",
        *(line for p in report.problems for line in _problem_lines(p)),
        "intact" if report.ok else f"{n} problem{'' if n == 1 else 's'} found",
    ]


def repair_json(report: RepairReport) -> dict[str, Any]:
    return {
        "source": report.source,
        "repaired": report.repaired,
        "unrepaired": report.unrepaired,
        "verify": verify_json(report.verify),
    }


def repair_text(report: RepairReport) -> list[str]:
    """Return what `verify --repair-from` prints: each blob put back or not, then the verification after."""
    lines = [
        f"repair from {report.source}: {plural(len(report.repaired), 'blob')} put back, "
        f"{len(report.unrepaired)} not"
    ]
    for r in report.repaired:
        events = ", ".join(f"#{seq}" for seq in r.events)
        lines.append(f"REPAIRED blob {r.sha256} ({fmt_size(r.size)}; was {r.problem}): event {events}")
        lines += [f"  gives back {name}" for name in r.snapshots]
    for u in report.unrepaired:
        lines.append(f"NOT REPAIRED blob {u.sha256} ({u.problem}): {u.reason}")
        lines += [f"  spoils {name}" for name in u.snapshots]
    return [*lines, *verify_text(report.verify)]


def _problem_lines(p: Problem) -> list[str]:
    """Return a problem's line, and for a damaged blob one line per version whose bytes it spoils."""
    lines = [f"DAMAGED {p.item} {p.key}: {p.problem}"]
    if p.item == "blob":
        lines += [f"  spoils {name}" for name in p.snapshots]
    return lines


# -- notifications --------------------------------------------------------------------------------


def notify_test_json(results: list[tuple[Destination, str, Answer]]) -> dict[str, Any]:
    return {
        "ok": all(answer.ok for _d, _u, answer in results),
        "answers": [
            {
                "name": dest.name,
                "kind": dest.kind,
                "to": shown,
                "ok": answer.ok,
                "status": answer.status,
                "error": answer.error,
                "answer": answer.text,
            }
            for dest, shown, answer in results
        ],
    }


def notify_test_text(results: list[tuple[Destination, str, Answer]]) -> list[str]:
    return [
        f"{dest.name}  {shown}  {'ok' if answer.ok else 'FAILED'}  {answer.summary()}"
        for dest, shown, answer in results
    ]


def notify_status_json(rows: list[DestinationStatus], head_seq: int) -> dict[str, Any]:
    return {"head_seq": head_seq, "destinations": rows}


def notify_status_text(rows: list[DestinationStatus], head_seq: int) -> list[str]:
    lines = []
    for row in rows:
        where = ", ".join(row.to) or "(no longer configured)"
        delivered = (
            f"last delivered #{row.last_delivered_seq} at {fmt_time(row.last_delivered_at)}"
            if row.last_delivered_seq is not None
            else "nothing delivered yet"
        )
        backlog = "-" if row.backlog is None else str(row.backlog)
        lines.append(f"{row.name} ({row.kind or '-'}) {where}")
        lines.append(
            f"  {delivered}; cursor #{row.cursor if row.cursor is not None else '-'}; backlog {backlog}"
        )
        if row.last_error:
            retry = f", retry at {fmt_time(row.retry_at)}" if row.failures else ""
            when = fmt_time(row.last_error_at)
            lines.append(f"  last error at {when} ({row.failures} failed in a row{retry}): {row.last_error}")
    lines.append(f"chain head #{head_seq}; {plural(len(rows), 'destination')}")
    return lines


def gc_json(report: GcReport) -> dict[str, Any]:
    document: dict[str, Any] = jsonable(report)
    return {**document, "seconds": round(report.seconds, 3)}


def gc_text(report: GcReport) -> list[str]:
    saved = report.stored_before - report.stored_after
    return [
        f"examined:   {report.examined} blobs in {report.seconds:.1f} s",
        f"re-packed:  {report.repacked} ({fmt_size(report.stored_before)} -> "
        f"{fmt_size(report.stored_after)}, {fmt_size(saved)} saved)",
        f"skipped:    {report.skipped} (unreadable, or changed meanwhile: `mirror verify` names damage)",
        f"remaining:  {report.remaining} not re-packed yet",
    ]
