"""Where finished snapshots are kept: the "snapshots" entry of settings.STORAGES.

A folder (SNAPSHOT_DIR) by default, where a build renames its complete folder into place; with
MEDIA_STORAGE=s3, the media's bucket under its own prefix, so a web host serves the files a
worker on another host built. The build always writes into a local folder first (the writers
need paths), then publishes it here."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils.functional import cached_property

STORAGE_NAME = "snapshots"


class SnapshotFolderStorage(FileSystemStorage):
    """A FileSystemStorage whose folder is SNAPSHOT_DIR unless given a location, and follows
    that setting when it changes (as FileSystemStorage follows MEDIA_ROOT), so tests and
    callers that point SNAPSHOT_DIR elsewhere need not rebuild STORAGES."""

    @cached_property
    def base_location(self) -> str:
        return self._value_or_setting(self._location, settings.SNAPSHOT_DIR)

    def _clear_cached_properties(self, setting: str, **kwargs: Any) -> None:
        super()._clear_cached_properties(setting, **kwargs)
        if setting == "SNAPSHOT_DIR":
            self.__dict__.pop("base_location", None)
            self.__dict__.pop("location", None)


def snapshot_storage() -> Storage:
    return storages[STORAGE_NAME]


def local_root(storage: Storage) -> Path | None:
    """The storage's folder on this machine, or None for a storage without local paths (an
    object store), which Django's storages tell by raising NotImplementedError."""
    try:
        return Path(storage.path(""))
    except NotImplementedError:
        return None


def stored_name(prefix: str, relative: str) -> str:
    return str(PurePosixPath(prefix) / relative)


def stored_files(storage: Storage, prefix: str) -> Iterator[str]:
    """Every stored name under `prefix`, whatever a build (complete or not) left there."""
    try:
        directories, files = storage.listdir(prefix)
    except FileNotFoundError:  # a folder storage without the folder; an object store lists none
        return
    for name in files:
        yield stored_name(prefix, name)
    for directory in directories:
        yield from stored_files(storage, stored_name(prefix, directory))


def open_stream(storage: Storage, name: str) -> IO[bytes]:
    """The stored file, opened for reading from its start. django-storages' S3File would
    download the whole object (into memory, by default) before the first byte is read; its
    object's body is read as it arrives instead, so a web worker's memory stays flat whatever
    the file's size."""
    opened = storage.open(name, "rb")
    obj = getattr(opened, "obj", None)  # an S3File's boto3 Object; nothing was read yet
    if obj is None:
        return opened
    opened.close()
    return obj.get()["Body"]


def copy_out(storage: Storage, name: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_stream(storage, name) as source, target.open("wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
