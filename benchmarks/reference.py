"""The reference client: as many threads as `mirror`, each GETs pages with `requests` and SHA-256s the body.

It stores nothing and decides nothing: the speed `mirror check` is compared with.
Run as `python -m benchmarks.reference URLS_FILE --concurrency 8`; prints one JSON
document (pages, bytes, seconds, count by HTTP status) on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

CHUNK = 64 * 1024  # as mirror's fetch reads


def fetch_all(urls: Sequence[str], concurrency: int) -> dict[str, object]:
    """GET every URL over `concurrency` threads, hashing each body; return counts and the elapsed time."""
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def get(url: str) -> tuple[int, int]:
        session: requests.Session | None = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            with lock:
                sessions.append(session)
        with session.get(url, stream=True, timeout=60) as response:
            digest = hashlib.sha256()
            size = 0
            for chunk in response.iter_content(CHUNK):
                digest.update(chunk)
                size += len(chunk)
            digest.hexdigest()
            return response.status_code, size

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(get, urls))
    finally:
        for session in sessions:
            session.close()
    seconds = time.perf_counter() - started
    statuses = Counter(status for status, _ in results)
    return {
        "pages": len(results),
        "bytes": sum(size for _, size in results),
        "seconds": seconds,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Read URLs (one a line) and print the JSON result of `fetch_all`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference")
    parser.add_argument("urls", type=Path)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    urls = [line for line in args.urls.read_text().splitlines() if line.strip()]
    print(json.dumps(fetch_all(urls, args.concurrency)))


if __name__ == "__main__":
    main()
