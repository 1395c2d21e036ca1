"""WARC import and export throughput and the export's peak memory (`python -m benchmarks.warc [MB]`).

Writes a WARC of MB one-megabyte pages (random bytes: no compression flatters the figure), imports it
into a fresh SQLite store with `mirror import warc`, exports it with `mirror export warc`, and prints
MB/s of content for each and the export's peak RSS (`/usr/bin/time`-free: `resource.getrusage` of the child).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


def main(megabytes: int = 256) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warc = root / "in.warc.gz"
        with warc.open("wb") as out:
            writer = WARCWriter(out, gzip=True)
            for i in range(megabytes):
                body = os.urandom(1 << 20)
                http = StatusAndHeaders(
                    "200 OK", [("Content-Type", "application/octet-stream")], protocol="HTTP/1.1"
                )
                writer.write_record(
                    writer.create_warc_record(
                        f"https://bench.example/{i}.bin",
                        "response",
                        payload=BytesIO(body),
                        length=len(body),
                        http_headers=http,
                        warc_headers_dict={"WARC-Date": "2020-01-01T00:00:00Z"},
                    )
                )
        (root / "m.toml").write_text("targets = []\n")
        env = {**os.environ, "MIRROR_DATABASE_URL": f"sqlite:///{root / 'm.db'}"}
        cmd = [sys.executable, "-m", "mirror", "--config", str(root / "m.toml")]
        started = time.monotonic()
        imported = json.loads(
            subprocess.run(
                [*cmd, "import", "warc", str(warc), "--json"], env=env, capture_output=True, check=True
            ).stdout
        )
        import_s = time.monotonic() - started
        started = time.monotonic()
        # A fresh parent per export, so its children's peak RSS is the export's alone.
        probe = (
            "import resource, subprocess, sys;"
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        export_cmd = [*cmd, "export", "warc", "--to", str(root / "out"), "--json"]
        peak = int(
            subprocess.run(
                [sys.executable, "-c", probe, *export_cmd], env=env, capture_output=True, check=True
            ).stdout
        )
        export_s = time.monotonic() - started
        mb = megabytes * (1 << 20) / 1e6
        print(f"content {mb:.0f} MB in {imported['imported']} versions")
        print(f"import: {import_s:.1f} s, {mb / import_s:.1f} MB/s")
        print(f"export: {export_s:.1f} s, {mb / export_s:.1f} MB/s, peak RSS {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
