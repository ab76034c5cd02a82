"""Where a file connection's data lives: a root on a filesystem, and paths confined to it.

A root is a local directory or an S3-compatible ``s3://bucket/prefix``, both used
through ``pyarrow.fs``. Every path a request gives is relative to the root and must
stay inside it: an absolute path, a ``..`` that climbs out, or (locally) a symlink
that resolves outside is refused with PERMISSION_DENIED / PATH_OUTSIDE_ROOT.
Messages name paths as the client gave them (or relative to the root), never the
server's absolute paths.

Hidden names, starting with ``.`` or ``_``, are never part of a directory or glob
read: in-progress writes (``.name.*.tmp``), staging directories and the append
ledger (``_datadog/``) live there.

Everything here blocks: callers run it off the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import secrets
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from datadog_platform.connector.base import option_error
from datadog_platform.core.errors import (
    DomainError,
    ErrorCode,
    FieldViolation,
    invalid_argument,
    not_found,
    permission_denied,
    unavailable,
)

TEMP_SUFFIX = ".tmp"
_GLOB_CHARS = re.compile(r"[*?\[]")
# Temporary names carry this host's tag and the writer's pid, so that a later write
# can remove what a killed writer on this host left behind (and nothing else).
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]+\.tmp$")
S3_CONNECT_TIMEOUT_SECONDS = 5.0
S3_REQUEST_TIMEOUT_SECONDS = 60.0


def is_hidden(name: str) -> bool:
    """Whether a directory entry is skipped by reads (``.x`` and ``_x``)."""
    return name.startswith((".", "_"))


def is_temp_name(name: str) -> bool:
    """Whether a directory entry is a write's temporary file (in progress or abandoned)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def temp_name(target_name: str) -> str:
    """A unique hidden name for a temporary file or directory beside ``target_name``."""
    return f".{target_name}.{_HOST_TAG}-{os.getpid()}-{secrets.token_hex(6)}{TEMP_SUFFIX}"


@dataclass(frozen=True)
class FileEntry:
    """One file of a read: its filesystem path and its path below the read's base."""

    path: str  # path on the filesystem (absolute locally, bucket/key on S3)
    rel: str  # relative to the directory the read names (for hive partitions)
    size: int


class FileRoot:
    """A connection's root: a filesystem, the base path on it, and how to show it."""

    def __init__(self, filesystem: pafs.FileSystem, base: str, uri: str, local: bool) -> None:
        self.fs = filesystem
        self.base = base.rstrip("/") if base != "/" else base
        self.uri = uri
        self.local = local

    # ------------------------------------------------------------------ construction

    @classmethod
    def local_dir(cls, root: Path, *, must_exist: bool = True) -> FileRoot:
        """A local directory (resolved); CONFIG_INVALID if it must exist and does not."""
        resolved = Path(root).expanduser().resolve()
        if must_exist and not resolved.is_dir():
            problem = "is not a directory" if resolved.exists() else "does not exist"
            raise invalid_argument(
                "CONFIG_INVALID",
                f"root {resolved} {problem}",
                [FieldViolation("root", problem)],
            )
        return cls(pafs.LocalFileSystem(), str(resolved), f"file://{resolved}", True)

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], base_dir: Path, *, must_exist: bool = True
    ) -> FileRoot:
        """The root an entry's ``root`` (+ S3 options) names; CONFIG_INVALID naming the option."""
        root = options.get("root")
        if not isinstance(root, str) or not root.strip():
            raise option_error("root", "is required: a local directory or s3://bucket/prefix")
        s3_options = ("endpoint_url", "region", "access_key_id", "secret_access_key")
        if not root.startswith("s3://"):
            if "://" in root:
                raise option_error("root", f"scheme of {root!r} is not supported; use s3://")
            given = [k for k in s3_options if options.get(k)]
            if given:
                raise option_error(given[0], "only applies to an s3:// root")
            return cls.local_dir(Path(base_dir) / Path(root).expanduser(), must_exist=must_exist)
        parts = urlsplit(root)
        bucket = parts.netloc
        prefix = posixpath.normpath(parts.path.strip("/")) if parts.path.strip("/") else ""
        if not bucket or prefix.startswith("..") or parts.query or parts.fragment:
            raise option_error("root", f"{root!r} is not of the form s3://bucket/prefix")
        return cls(_s3_filesystem(options), f"{bucket}/{prefix}".rstrip("/"), root, False)

    # ------------------------------------------------------------------ paths

    def resolve(self, given: str, field: str, connection: str) -> str:
        """The filesystem path ``given`` names inside the root, or a domain error.

        ``field`` is the request field holding the path (e.g. ``source.file``).
        """
        if not given:
            raise invalid_argument(
                "REQUIRED_FIELD_MISSING",
                f"{field}.path is required",
                [FieldViolation(f"{field}.path", "must not be empty")],
            )
        if "\x00" in given:
            raise invalid_argument(
                "INVALID_PATH",
                f"path {given!r} contains a NUL byte",
                [FieldViolation(f"{field}.path", "must not contain NUL bytes")],
            )
        outside = permission_denied(
            "PATH_OUTSIDE_ROOT",
            f"path {given!r} is outside the root of connection {connection!r}; "
            "paths are relative to the connection's root and may not leave it",
            path=given,
            connection=connection,
        )
        if PurePosixPath(given).is_absolute() or given.startswith("\\"):
            raise outside
        if not self.local:
            normal = posixpath.normpath(given)
            if normal == ".." or normal.startswith("../"):
                raise outside
            return self.base if normal == "." else f"{self.base}/{normal}".lstrip("/")
        try:
            resolved = (Path(self.base) / given).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop (Python 3.11/3.12)
            raise invalid_argument(
                "INVALID_PATH",
                f"path {given!r} cannot be resolved: {reason_of(exc)}",
                [FieldViolation(f"{field}.path", "cannot be resolved")],
            ) from None
        if not resolved.is_relative_to(self.base):
            raise outside
        return str(resolved)

    def check_inside(self, path: str, shown: str, connection: str) -> None:
        """Refuse a listed local file whose real path (symlinks resolved) leaves the root."""
        if self.local and not Path(os.path.realpath(path)).is_relative_to(self.base):
            raise permission_denied(
                "PATH_OUTSIDE_ROOT",
                f"{shown!r} is a symlink that leads outside the root of connection {connection!r}",
                path=shown,
                connection=connection,
            )

    def relative(self, path: str) -> str:
        """``path`` (on the filesystem) relative to the root, as messages show it."""
        if path == self.base:
            return "."
        if self.base and path.startswith(self.base.rstrip("/") + "/"):
            return path[len(self.base.rstrip("/")) + 1 :]
        return path

    def location(self, path: str) -> str:
        """A URI for a written path: ``file:///abs`` or ``s3://bucket/key``."""
        return f"file://{path}" if self.local else f"s3://{path}"

    def info(self, path: str) -> pafs.FileInfo:
        """``get_file_info`` of one path."""
        return self.fs.get_file_info(path)

    # ------------------------------------------------------------------ listing

    def expand(self, given: str, field: str, connection: str) -> list[FileEntry]:
        """The files a read names: a file, a directory (recursively) or a glob; sorted.

        Hidden entries are skipped; none matching is NOT_FOUND (SOURCE_NOT_FOUND).
        """
        match = _GLOB_CHARS.search(given)
        if match is None:
            path = self.resolve(given, field, connection)
            info = self.info(path)
            if info.type == pafs.FileType.File:
                self.check_inside(path, given, connection)
                return [FileEntry(path, PurePosixPath(path).name, info.size or 0)]
            if info.type != pafs.FileType.Directory:
                raise not_found("SOURCE_NOT_FOUND", f"file {given!r} does not exist", path=given)
            entries = self._walk(path, connection)
            if not entries:
                raise not_found(
                    "SOURCE_NOT_FOUND", f"directory {given!r} contains no files", path=given
                )
            return entries
        # The directory part before the first glob character is listed recursively.
        head = given[: match.start()]
        base_given = head.rsplit("/", 1)[0] if "/" in head else "."
        pattern = given[len(base_given) + 1 :] if base_given != "." else given
        base = self.resolve(base_given, field, connection)
        regex = glob_regex(pattern)
        entries = []
        if self.info(base).type == pafs.FileType.Directory:
            entries = [e for e in self._walk(base, connection) if regex.match(e.rel)]
        if not entries:
            raise not_found("SOURCE_NOT_FOUND", f"no file matches {given!r}", path=given)
        return entries

    def _walk(self, directory: str, connection: str) -> list[FileEntry]:
        if self.local:
            entries = self._walk_local(directory, connection)
        else:
            selector = pafs.FileSelector(directory, recursive=True, allow_not_found=True)
            prefix = directory.rstrip("/") + "/"
            entries = []
            for info in self.fs.get_file_info(selector):
                if info.type != pafs.FileType.File or not info.path.startswith(prefix):
                    continue
                rel = info.path[len(prefix) :]
                if not any(is_hidden(part) for part in rel.split("/")):
                    entries.append(FileEntry(info.path, rel, info.size or 0))
        entries.sort(key=lambda e: e.rel)
        return entries

    def _walk_local(self, directory: str, connection: str) -> list[FileEntry]:
        """Files below ``directory``, hidden ones skipped, symlinks checked as they are met.

        A symlink leaving the root is refused before anything behind it is listed, and
        a directory reached twice (a symlink loop) is listed once.
        """
        entries: list[FileEntry] = []
        seen: set[str] = set()
        pending = [(directory, "")]
        while pending:
            current, rel_dir = pending.pop()
            real = os.path.realpath(current)
            if real in seen:
                continue
            seen.add(real)
            with os.scandir(current) as listing:
                for item in listing:
                    if is_hidden(item.name):
                        continue
                    rel = f"{rel_dir}{item.name}"
                    if item.is_symlink():
                        self.check_inside(item.path, self.relative(item.path), connection)
                    if item.is_dir():
                        pending.append((item.path, f"{rel}/"))
                    elif item.is_file():
                        entries.append(FileEntry(item.path, rel, item.stat().st_size))
        return entries

    # ------------------------------------------------------------------ housekeeping

    def sweep_stale_temps(self, directory: str, target_name: str) -> None:
        """Remove temporaries of ``target_name`` left in ``directory`` by dead writers.

        Only local roots, and only names made on this host by a process that no
        longer exists: a live writer's temporary is never touched.
        """
        if not self.local:
            return
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                found = _TEMP_NAME.match(entry.name)
                if not found or found["target"] != target_name or found["host"] != _HOST_TAG:
                    continue
                if _alive(int(found["pid"])):
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        _rmtree_local(entry.path)
                    else:
                        os.unlink(entry.path)


def probe_root(root: FileRoot) -> str:
    """Check a root: it exists (its bucket, on S3), lists, and takes a probe file."""
    shown = root.uri
    try:
        if not root.local:
            bucket = root.base.split("/", 1)[0]
            if root.info(bucket).type != pafs.FileType.Directory:
                raise not_found(
                    "BUCKET_NOT_FOUND", f"{shown}: bucket {bucket!r} does not exist", path=shown
                )
        elif root.info(root.base).type != pafs.FileType.Directory:
            raise not_found(
                "SOURCE_NOT_FOUND", f"{shown}: the root directory does not exist", path=shown
            )
        listed = root.fs.get_file_info(pafs.FileSelector(root.base, allow_not_found=True))
    except Exception as exc:
        raise _or(io_error(exc, shown, writing=False), exc) from exc
    probe = f"{root.base}/.datadog-probe-{secrets.token_hex(6)}"
    try:
        with root.fs.open_output_stream(probe) as out:
            out.write(b"probe")
        root.fs.delete_file(probe)
    except Exception as exc:
        raise _or(io_error(exc, shown, writing=True), exc) from exc
    return f"{shown}: listed {len(listed)} entries, created and deleted a probe file"


def _or(error: DomainError | None, exc: Exception) -> Exception:
    return error if error is not None else exc


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob over ``/``-separated relative paths.

    ``*`` and ``?`` never match ``/``; ``**`` matches across directories (``a/**/b``
    also matches ``a/b``); ``[abc]``/``[!abc]`` are character classes.
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = re.escape(body[1:] if negate else body).replace(r"\-", "-")
            out.append(f"[{'^/' if negate else ''}{body}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def reason_of(exc: BaseException) -> str:
    """An exception's message without any server path in it."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def io_error(exc: BaseException, given: str, *, writing: bool) -> DomainError | None:
    """An OS/object-store failure as a domain error naming ``given``; None if not one.

    S3 errors arrive from pyarrow as ``OSError`` whose text carries the AWS error name.
    """
    if isinstance(exc, DomainError):
        return exc
    if not isinstance(exc, OSError):
        return None
    verb = "write" if writing else "read"
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or "NO_SUCH_KEY" in text:
        if writing:
            return unavailable("SINK_UNAVAILABLE", f"cannot write {given!r}: {reason_of(exc)}")
        return not_found("SOURCE_NOT_FOUND", f"file {given!r} does not exist", path=given)
    if "NO_SUCH_BUCKET" in text:
        return not_found(
            "BUCKET_NOT_FOUND", f"cannot {verb} {given!r}: the bucket does not exist", path=given
        )
    if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError)):
        return invalid_argument(
            "INVALID_PATH",
            f"cannot {verb} {given!r}: it is a directory, or one of its parents is a file",
            path=given,
        )
    if isinstance(exc, PermissionError) or "ACCESS_DENIED" in text:
        return permission_denied(
            "ACCESS_DENIED", f"cannot {verb} {given!r}: permission denied", path=given
        )
    if any(code in text for code in ("INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH")):
        return DomainError(
            ErrorCode.UNAUTHENTICATED,
            "AUTHENTICATION_FAILED",
            f"cannot {verb} {given!r}: the object store refused the credentials",
            {"path": given},
        )
    reason = "SINK_UNAVAILABLE" if writing else "SOURCE_UNAVAILABLE"
    # AWS messages can be long; the first line says what happened.
    detail = reason_of(exc).splitlines()[0] if reason_of(exc) else type(exc).__name__
    return unavailable(reason, f"cannot {verb} {given!r}: {detail}", path=given)


def _s3_filesystem(options: Mapping[str, Any]) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {
        "connect_timeout": S3_CONNECT_TIMEOUT_SECONDS,
        "request_timeout": S3_REQUEST_TIMEOUT_SECONDS,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
    }
    endpoint = options.get("endpoint_url")
    if endpoint:
        if not isinstance(endpoint, str):
            raise option_error("endpoint_url", "must be a URL such as http://127.0.0.1:9000")
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise option_error("endpoint_url", f"{endpoint!r} is not an http(s) URL")
        kwargs["endpoint_override"] = parts.netloc
        kwargs["scheme"] = parts.scheme
    if options.get("region"):
        kwargs["region"] = str(options["region"])
    key, secret = options.get("access_key_id"), options.get("secret_access_key")
    if bool(key) != bool(secret):
        missing = "secret_access_key" if key else "access_key_id"
        raise option_error(missing, "is required when the other S3 credential is given")
    if key:
        kwargs["access_key"] = str(key)
        kwargs["secret_key"] = str(secret)
    try:
        return pafs.S3FileSystem(**kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise option_error("root", f"cannot set up the S3 client: {exc}") from None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _rmtree_local(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
