"""``disenttalk upload``: a local folder (or file) of videos → an ``s3://`` prefix, for jobs on a cluster.

``disenttalk upload ~/videos s3://disenttalk/videos`` copies every file under the folder, keeping
the folder structure the manifest reads speakers and languages from; files are streamed, and
one already there with the same size is skipped, so an interrupted upload is resumed by running
the command again. The endpoint and credentials come from the usual AWS variables
(``AWS_ENDPOINT_URL`` for S3-compatible stores).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from workflows.common import UserError, user_errors
from workflows.platform import storage


def upload(local: Path, uri: str) -> dict[str, int]:
    """Copy ``local`` (a folder or one file) under ``uri``; returns counts and bytes."""
    if not storage.is_s3(uri):
        raise UserError(f"{uri!r} is not an s3:// URI (for a local copy use cp)")
    if not local.exists():
        raise UserError(f"no such file or folder: {local}")
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    base = local.parent if local.is_file() else local
    fs, _ = storage.filesystem(uri)
    counts = {"uploaded": 0, "skipped": 0, "bytes": 0}
    for file in files:
        target = storage.join(uri, file.relative_to(base).as_posix())
        size = file.stat().st_size
        try:
            if fs.get_file_info(storage.filesystem(target)[1]).size == size:
                counts["skipped"] += 1
                continue
            storage.upload_file(file, target)
        except OSError as exc:  # no such bucket, no access, endpoint down: say where it stopped
            raise UserError(f"{target}: {exc} ({counts['uploaded']} files uploaded before it; "
                            "run again to resume)") from None
        counts["uploaded"] += 1
        counts["bytes"] += size
    return counts


@user_errors("upload")
def cli(
    local: Path = typer.Argument(..., help="A folder of videos (sub-folders kept) or a single file."),
    uri: str = typer.Argument(..., help="Destination prefix, e.g. s3://disenttalk/videos."),
) -> None:
    """Copy a local folder of videos to S3, for a manifest and jobs on a cluster."""
    typer.echo(json.dumps({"to": uri, **upload(local, uri)}))


if __name__ == "__main__":
    typer.run(cli)
