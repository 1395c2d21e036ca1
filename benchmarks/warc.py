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
        # A fresh parent per command, so its children's peak RSS is the command's alone.
        probe = (
            "import resource, subprocess, sys;"
            "sys.stdout.write(subprocess.run(sys.argv[1:], check=True, capture_output=True).stdout.decode());"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )

        def measured(*args: str) -> tuple[dict[str, object], int, float]:
            started = time.monotonic()
            out = subprocess.run(
                [sys.executable, "-c", probe, *cmd, *args, "--json"], env=env, capture_output=True, check=True
            ).stdout.decode()
            document, _, peak = out.rpartition("}")
            return json.loads(document + "}"), int(peak), time.monotonic() - started

        imported, import_peak, import_s = measured("import", "warc", str(warc))
        _, peak, export_s = measured("export", "warc", "--to", str(root / "out"))
        mb = megabytes * (1 << 20) / 1e6
        print(f"content {mb:.0f} MB in {imported['imported']} versions")
        print(f"import: {import_s:.1f} s, {mb / import_s:.1f} MB/s, peak RSS {import_peak / 1024:.0f} MiB")
        print(f"export: {export_s:.1f} s, {mb / export_s:.1f} MB/s, peak RSS {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
