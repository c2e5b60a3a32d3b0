"""Model identity: which weights computed a saved scene's geometry and tokens.

A saved scene (:mod:`vlm3r_ros.pipeline.scene_store`) records the identity of the models
that produced its poses, voxels, recurrent state and visual tokens; a node loading it
reuses them only when its own identity is equal, and recomputes them from the saved
images otherwise. The identity is the profile, fusion, backend and dtype plus a digest of
every weight file.

Digests: files up to :data:`FULL_HASH_LIMIT` bytes are hashed whole (SHA-256). Larger
files (the 7B shards) are fingerprinted by their size and three :data:`SAMPLE_BYTES`
samples (start, middle, end), so a node does not read 15 GB at every load; a retrained
checkpoint differs in those bytes in practice, but two files that differ only elsewhere
would pass as equal (prefix 'sampled:' says which kind a digest is). Digests are cached
per (path, size, mtime) for the process.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

FULL_HASH_LIMIT = 256 << 20
SAMPLE_BYTES = 4 << 20
_CACHE: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike[str]) -> str:
    """Return the file's SHA-256 (or a sampled fingerprint past FULL_HASH_LIMIT).

    Raises OSError when the file cannot be read.
    """
    source = Path(path).resolve()
    stat = source.stat()
    key = (str(source), stat.st_size, stat.st_mtime_ns)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    sha = hashlib.sha256()
    with source.open('rb') as f:
        if stat.st_size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b''):
                sha.update(block)
            digest = sha.hexdigest()
        else:
            sha.update(str(stat.st_size).encode())
            for offset in (0, stat.st_size // 2, stat.st_size - SAMPLE_BYTES):
                f.seek(offset)
                sha.update(f.read(SAMPLE_BYTES))
            digest = 'sampled:' + sha.hexdigest()
    _CACHE[key] = digest
    return digest


def path_digest(path: str | os.PathLike[str]) -> str:
    """Return the digest of a file, or of a directory's files (names and digests, sorted)."""
    source = Path(path)
    if not source.is_dir():
        return file_digest(source)
    sha = hashlib.sha256()
    for item in sorted(p for p in source.rglob('*') if p.is_file()):
        sha.update(f'{item.relative_to(source).as_posix()}|{file_digest(item)}|'.encode())
    return sha.hexdigest()


def model_identity(settings: Mapping[str, str],
                   weights: Mapping[str, str | None]) -> dict[str, str]:
    """Return the identity: ``settings`` (profile, fusion, ...) plus one digest per weight.

    ``weights`` maps a role ('cut3r', 'base_model_dir', ...) to a path, or to None or ''
    for a role the model does not use; a role with a non-path value (e.g. 'seeded random') is
    recorded as given.
    """
    identity = {key: str(value) for key, value in settings.items()}
    for role, path in sorted(weights.items()):
        if not path:
            continue
        identity[f'weights.{role}'] = path_digest(path) if Path(path).exists() else str(path)
    return identity
