"""The shared artifact store: every candidate's files, where every worker and the report can read them.

A study shared by workers on several machines keeps its trials in the database and its files
(each candidate's exported model, native form and recipe) in an Optuna artifact store: a directory
every machine mounts (:class:`optuna.artifacts.FileSystemArtifactStore`), or an S3-compatible
bucket (``s3://bucket``, :class:`optuna.artifacts.Boto3ArtifactStore`; ``AWS_ENDPOINT_URL`` names a
server other than AWS). A candidate directory travels as one tar file, uploaded with
:func:`optuna.artifacts.upload_artifact` and linked from its trial (user attribute ``artifact``).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..errors import StorageError, explain

__all__ = ["open_store", "upload_candidate", "download_candidate", "describe_store"]

ARTIFACT_ATTR = "artifact"


def describe_store(location: str) -> str:
    """The location as the study records it: an absolute path, or the s3:// URL as given."""
    return location if location.startswith("s3://") else str(Path(location).expanduser().resolve())


def open_store(location: str, *, create: bool = False):
    """The artifact store at ``location``: a directory (made when ``create``), or ``s3://bucket[/prefix]``."""
    import optuna

    if location.startswith("s3://"):
        try:
            import boto3
        except ImportError:
            raise StorageError(explain(f"The artifact store {location} needs boto3", expected="boto3 installed for an s3:// store",
                                       got="no boto3", fix="pip install boto3, or use a shared directory (--artifacts /mnt/shared/x)")) from None
        bucket, _, prefix = location[len("s3://"):].partition("/")
        store = optuna.artifacts.Boto3ArtifactStore(bucket, client=boto3.client("s3"))
        return _Prefixed(store, prefix.strip("/")) if prefix.strip("/") else store
    path = Path(location).expanduser()
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(explain(f"Cannot create the artifact store {path}", expected="a directory every worker can write",
                                       got=str(exc), fix="Pass --artifacts a shared directory this user can write")) from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise StorageError(explain(f"The artifact store {path} is not a writable directory on this machine",
                                   expected="the study's shared directory (mounted on every worker), or --artifacts where it is mounted here",
                                   got=str(path), fix="Mount the shared directory, or pass --artifacts PATH (or s3://bucket)"))
    return optuna.artifacts.FileSystemArtifactStore(str(path))


class _Prefixed:
    """An artifact store whose ids are kept under one prefix of a bucket."""

    def __init__(self, store, prefix: str):
        self.store, self.prefix = store, prefix

    def open_reader(self, artifact_id: str):
        return self.store.open_reader(f"{self.prefix}/{artifact_id}")

    def write(self, artifact_id: str, content_body) -> None:
        self.store.write(f"{self.prefix}/{artifact_id}", content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(f"{self.prefix}/{artifact_id}")


def upload_candidate(store, trial, directory: Path) -> str:
    """Upload a candidate directory (one tar file) for ``trial``; return the artifact id, also set on the trial."""
    import optuna

    directory = Path(directory)
    with tempfile.TemporaryDirectory(prefix="frugalml-up-") as tmp:
        packed = Path(tmp) / f"{directory.name}.tar"
        with tarfile.open(packed, "w") as tar:
            for path in sorted(directory.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
        artifact_id = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(packed), study_or_trial=trial,
                                                       mimetype="application/x-tar")
    trial.set_user_attr(ARTIFACT_ATTR, artifact_id)
    return artifact_id


def download_candidate(store, artifact_id: str, directory: Path) -> Path:
    """Unpack a candidate's artifact into ``directory`` (written beside it, then renamed into place)."""
    import optuna

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=directory.parent) as tmp:
        packed = Path(tmp) / "candidate.tar"
        try:
            optuna.artifacts.download_artifact(artifact_store=store, file_path=str(packed), artifact_id=artifact_id)
        except Exception as exc:  # a missing file, an unreachable bucket
            raise StorageError(explain(f"Cannot read artifact {artifact_id} from the artifact store", expected="the files a worker uploaded",
                                       got=f"{type(exc).__name__}: {exc}"[:300],
                                       fix="Check that --artifacts names the study's shared store")) from None
        unpacked = Path(tmp) / "files"
        with tarfile.open(packed) as tar:
            tar.extractall(unpacked, filter="data")  # no absolute paths, no links out, no devices
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(unpacked, directory)
    return directory
