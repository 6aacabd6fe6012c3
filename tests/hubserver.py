"""A local Hugging Face hub (and a plain file server) for tests, on 127.0.0.1, stdlib only.

``HubServer`` answers the part of the Hub's HTTP protocol that the real clients use to download
(huggingface_hub 2.4 ``hf_hub_download``/``snapshot_download``, timm ``hf-hub:`` models,
transformers ``from_pretrained``), so tests can run those clients against it by pointing
``HF_ENDPOINT`` at :attr:`HubServer.endpoint`, then stop it and check offline use of the cache::

    with HubServer() as hub:
        sha = hub.add_repo("org/name", {"config.json": b"{}"})
        ...  # run a client with HF_ENDPOINT=hub.endpoint, HF_HOME=tmp
        assert hub.count("/resolve/") == 1

``FileServer`` serves arbitrary bytes at arbitrary URL paths, e.g. for
``torch.hub.load_state_dict_from_url`` (see :func:`torch_hub_filename`).

Protocol notes (checked against huggingface_hub 2.4.0's own code):

- ``GET|HEAD /{repo}/resolve/{rev}/{path}`` (``/datasets/{repo}/...`` for data sets). The client
  HEADs first, without following redirects to another host, and reads ``X-Repo-Commit`` (the
  commit the revision resolved to: it names ``snapshots/<commit>/`` and is written to
  ``refs/<rev>``), ``X-Linked-Etag`` or else ``ETag`` (quotes stripped: the blob's file name in
  the cache; the Hub sends the git blob sha1 for plain files and the sha256 for LFS files) and
  ``X-Linked-Size`` or else ``Content-Length`` (checked against the bytes received). A 404 is
  turned into an exception by its ``X-Error-Code`` header alone: ``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound`` (the last with ``X-Repo-Commit``, so the client can
  record the miss under ``.no_exist/<commit>/``). Any ``X-Xet-*`` header (or a ``Link`` with
  ``rel="xet-auth"``) would switch the client to the Xet protocol: this server sends none.
- The client sends the revision percent-encoded with ``safe=""`` (``refs%2Fpr%2F1``) and the
  tree's sub-folder likewise, so the path is split on ``/`` *before* each segment is decoded.
- ``GET /api/{models|datasets}/{repo}/revision/{rev}`` → repo info (``snapshot_download`` takes
  ``sha`` from it; transformers asks for it too). ``GET /api/.../tree/{commit}[/{dir}]`` →
  the file listing ``snapshot_download`` iterates over (cached by the client under
  ``trees/<commit>.json``). ``POST /api/.../paths-info/{rev}`` (form fields ``paths``,
  ``expand``) → the same entries for the paths asked for. No pagination (no ``Link`` header).
- Every response carries ``Content-Length`` and ``Connection: close``: one request per
  connection, so nothing is served from a kept-alive connection after :meth:`HubServer.stop`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "FileServer",
    "HubServer",
    "RepoKind",
    "git_blob_sha1",
    "sha256_hex",
    "torch_hub_filename",
]

RepoKind = Literal["model", "dataset", "space"]
_S = TypeVar("_S", bound="_BackgroundServer")

_KINDS: tuple[RepoKind, ...] = ("model", "dataset", "space")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
# Suffixes the Hub's default .gitattributes stores with git-LFS; any file of 10 MiB or more is
# LFS as well (the Hub refuses larger plain git blobs).
DEFAULT_LFS_SUFFIXES: frozenset[str] = frozenset(
    {
        ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gz", ".h5", ".joblib", ".mlmodel",
        ".model", ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle",
        ".pkl", ".pt", ".pth", ".rar", ".safetensors", ".tar", ".tflite", ".tgz", ".wasm",
        ".xz", ".zip", ".zst",
    }
)  # fmt: skip
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
_LFS_POINTER_SIZE = 134  # the size of a git-LFS pointer file, as the Hub reports it
_FIXED_DATE = "2024-01-01T00:00:00.000Z"  # every commit's date: keeps the answers deterministic
_CHUNK = 1 << 20


def sha256_hex(data: bytes | Path) -> str:
    """The sha256 of ``data`` (bytes, or a file's contents read in chunks), in hex."""
    digest = hashlib.sha256()
    for chunk in _chunks(data):
        digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(data: bytes | Path) -> str:
    """Git's object id of a blob: sha1 of ``b"blob <size>\\0"`` followed by the contents."""
    size = len(data) if isinstance(data, bytes) else data.stat().st_size
    digest = hashlib.sha1(f"blob {size}\0".encode())
    for chunk in _chunks(data):
        digest.update(chunk)
    return digest.hexdigest()


def torch_hub_filename(stem: str, data: bytes | Path, suffix: str = ".pth") -> str:
    """``<stem>-<first 8 hex of sha256>.pth``: the name ``check_hash=True`` in torch.hub accepts."""
    return f"{stem}-{sha256_hex(data)[:8]}{suffix}"


def _chunks(data: bytes | Path, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of ``data`` (``end=None``: to the end), in chunks."""
    if isinstance(data, bytes):
        stop = len(data) if end is None else end
        for offset in range(start, stop, _CHUNK):
            yield data[offset : min(offset + _CHUNK, stop)]
        return
    with data.open("rb") as handle:
        handle.seek(start)
        left = None if end is None else end - start
        while left is None or left > 0:
            chunk = handle.read(_CHUNK if left is None else min(_CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


# --------------------------------------------------------------------------------------------
# The data: blobs, commits, repositories
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Blob:
    """One file of a commit: its contents (in memory or on disk) and its hashes."""

    data: bytes | Path
    size: int
    git_sha1: str
    sha256: str
    lfs: bool

    @classmethod
    def of(cls, path: str, data: bytes | Path, lfs_suffixes: frozenset[str]) -> _Blob:
        size = len(data) if isinstance(data, bytes) else data.stat().st_size
        lfs = Path(path).suffix.lower() in lfs_suffixes or size >= LFS_SIZE_THRESHOLD
        return cls(data, size, git_blob_sha1(data), sha256_hex(data), lfs)

    @property
    def etag(self) -> str:
        """What the Hub sends as the ETag: the sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_sha1


@dataclass(frozen=True)
class _Commit:
    sha: str
    files: Mapping[str, _Blob]

    def directories(self) -> set[str]:
        """Every folder holding a file, at any depth ("" excluded)."""
        found: set[str] = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return found

    def tree_oid(self, folder: str) -> str:
        """A deterministic id for a folder (not git's tree id: no client checks it)."""
        prefix = f"{folder}/" if folder else ""
        listing = "".join(
            f"{path}\0{blob.git_sha1}\n"
            for path, blob in sorted(self.files.items())
            if path.startswith(prefix)
        )
        return hashlib.sha1(f"tree {folder}\n{listing}".encode()).hexdigest()


@dataclass
class _Repo:
    kind: RepoKind
    repo_id: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag name -> commit sha
    last_added: str | None = None

    def resolve(self, revision: str) -> _Commit | None:
        """A branch/tag name or a full commit sha → the commit; None when unknown."""
        sha = self.refs.get(revision, revision)
        return self.commits.get(sha)

    @property
    def default_revision(self) -> str:
        return "main" if "main" in self.refs else (self.last_added or "main")


# --------------------------------------------------------------------------------------------
# HTTP plumbing shared by both servers
# --------------------------------------------------------------------------------------------


@dataclass
class _Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Path = b""
    # The byte range of `body` sent, [start, end); None: all of it.
    span: tuple[int, int] | None = None

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> _Response:
        body = json.dumps(payload).encode()
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, body)

    @classmethod
    def error(cls, status: int, message: str, **headers: str) -> _Response:
        """A Hub-style error: JSON ``{"error": ...}`` plus ``X-Error-Message``."""
        return cls.json(status, {"error": message}, {"X-Error-Message": message, **headers})


def _content(
    data: bytes | Path, size: int, range_header: str | None, headers: dict[str, str]
) -> _Response:
    """200 with the whole of ``data``, or 206/416 for a single ``Range: bytes=…`` request.

    A malformed or multi-range header is ignored (200), as RFC 9110 allows.
    """
    headers = {"Accept-Ranges": "bytes", **headers}
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header or "")
    if match is None or match.group(1) == match.group(2) == "":
        return _Response(200, headers, data)
    first, last = match.groups()
    if first == "":  # a suffix: the last N bytes
        start, end = max(size - int(last), 0), size
    else:
        start, end = int(first), size if last == "" else min(int(last) + 1, size)
    if start >= size or start >= end:
        return _Response(416, {**headers, "Content-Range": f"bytes */{size}"})
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return _Response(206, headers, data, (start, end))


class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer that hands every request to its owner's ``_answer``."""

    daemon_threads = True
    owner: _BackgroundServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self, method: str) -> None:
        owner = cast(_Server, self.server).owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        asked = f" (Range: {headers['range']})" if "range" in headers else ""
        owner._record(f"{method} {self.path}{asked}")
        try:
            response = owner._answer(method, self.path, headers, body)
        except Exception as error:  # a bug here should fail the client's call loudly
            response = _Response.error(500, f"{type(error).__name__}: {error}")
        self._send(method, response)

    def _send(self, method: str, response: _Response) -> None:
        body = response.body
        start, end = response.span or (0, len(body) if isinstance(body, bytes) else None)
        if end is None:
            end = cast(Path, body).stat().st_size
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if method == "HEAD":
            return
        if response.status in (200, 206):
            # A fault asked for by `interrupt_next`: hang up after `cut` bytes of the body.
            cut = cast(_Server, self.server).owner._take_interrupt(self.path)
            if cut is not None:
                end = min(end, start + cut)
        try:
            for chunk in _chunks(body, start, end):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up (e.g. it only wanted the headers)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the owner keeps its own log (``requests``)."""


class _BackgroundServer:
    """An HTTP server on 127.0.0.1 (OS-chosen port) in a daemon thread, with a request log."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[str] = []
        self._interrupts: list[tuple[str, int]] = []

    # -- life cycle ------------------------------------------------------------------------

    def _bind(self) -> _Server:
        """Bind (listen) now if not yet bound: ``endpoint`` is known from then on."""
        if self._server is None:
            server = _Server((self._host, self._port), _Handler)
            server.owner = self
            self._port = server.server_address[1]
            self._server = server
        return self._server

    def start(self: _S) -> _S:
        """Serve in a background thread (does nothing when already serving)."""
        server = self._bind()
        if self._thread is None:
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{type(self).__name__}:{self._port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; connections are refused afterwards.

        The port is kept (``endpoint`` still names it), so a client pointed at it afterwards
        sees a dead endpoint, as when offline. ``start()`` serves again, on the same port.
        """
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None:
            if thread is not None:
                server.shutdown()  # waits for serve_forever to return
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash).

        The OS picks the port when the socket is first bound: by ``start()``, or by asking for
        the endpoint before it (requests then wait in the listen queue until ``start()``).
        """
        if self._port == 0:
            self._bind()
        return f"http://{self._host}:{self._port}"

    # -- request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[str]:
        """Every request received so far, in order (a copy): ``"METHOD /raw/path?query"``,
        followed by ``" (Range: bytes=…)"`` when the request asked for a range."""
        with self._lock:
            return list(self._requests)

    def count(self, fragment: str = "", method: str | None = None) -> int:
        """How many requests had ``fragment`` in their path (and ``method``, when given)."""
        with self._lock:
            return sum(
                1
                for line in self._requests
                if fragment in line.split(" ")[1]
                and (method is None or line.startswith(f"{method} "))
            )

    def interrupt_next(self, fragment: str, after_bytes: int) -> None:
        """Fault injection: the next GET whose path holds ``fragment`` announces its full
        ``Content-Length`` but sends only ``after_bytes`` bytes, then closes the connection
        (as a dropped download does; huggingface_hub then resumes with a ``Range`` request)."""
        with self._lock:
            self._interrupts.append((fragment, after_bytes))

    def _take_interrupt(self, target: str) -> int | None:
        with self._lock:
            for index, (fragment, after_bytes) in enumerate(self._interrupts):
                if fragment in target:
                    del self._interrupts[index]
                    return after_bytes
        return None

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, line: str) -> None:
        with self._lock:
            self._requests.append(line)

    def _answer(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> _Response:
        """The response to one request: ``target`` is the raw path and query, ``headers`` have
        lower-case names, ``body`` is the request's body (POST)."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# The hub
# --------------------------------------------------------------------------------------------

_API_KINDS: dict[str, RepoKind] = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX: dict[str, RepoKind] = {"datasets": "dataset", "spaces": "space"}
# The word after a repo id in a URL: it tells where a one-part id ("gpt2") ends.
_OPERATIONS = frozenset({"resolve", "revision", "tree", "paths-info", "refs"})


class HubServer(_BackgroundServer):
    """A Hugging Face hub serving repositories held in memory (or read from folders).

    Each :meth:`add_repo` adds a commit (its sha is a sha1 of the repo id and the file listing,
    so equal inputs give equal shas) and points the branch ``revision`` at it; earlier commits
    stay reachable by their sha. Repos may be added while the server runs.

    Requests that no route answers (404) are also listed in :attr:`unhandled`, which is how a
    test finds out what else a client asks for.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        lfs_suffixes: frozenset[str] = DEFAULT_LFS_SUFFIXES,
    ) -> None:
        super().__init__(host, port)
        self._repos: dict[tuple[RepoKind, str], _Repo] = {}
        self._lfs_suffixes = lfs_suffixes
        self._unhandled: list[str] = []

    # -- content -------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        kind: RepoKind = "model",
        revision: str = "main",
    ) -> str:
        """Add a commit holding ``files`` (path in repo → bytes, or a file that is hashed now
        and read when served, so it must not change).

        The branch or tag ``revision`` then points at it. Returns the commit's 40-hex sha.
        """
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
        if _COMMIT_RE.fullmatch(revision):
            raise ValueError(f"revision {revision!r} looks like a commit sha: name a branch or tag")
        blobs: dict[str, _Blob] = {}
        for path, data in files.items():
            clean = path.strip("/")
            if not clean or any(part in ("", ".", "..") for part in clean.split("/")):
                raise ValueError(f"bad path in repo: {path!r}")
            blobs[clean] = _Blob.of(clean, data, self._lfs_suffixes)
        listing = "".join(f"{path}\0{blob.git_sha1}\n" for path, blob in sorted(blobs.items()))
        sha = hashlib.sha1(f"commit {kind}/{repo_id}\n{listing}".encode()).hexdigest()
        with self._lock:
            repo = self._repos.setdefault((kind, repo_id), _Repo(kind, repo_id))
            repo.commits[sha] = _Commit(sha, blobs)
            repo.refs[revision] = sha
            repo.last_added = sha
        return sha

    def add_folder(
        self,
        repo_id: str,
        folder: str | Path,
        *,
        kind: RepoKind = "model",
        revision: str = "main",
    ) -> str:
        """:meth:`add_repo` with every file under ``folder`` (read from disk when served)."""
        root = Path(folder)
        files: dict[str, bytes | Path] = {
            path.relative_to(root).as_posix(): path
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }
        return self.add_repo(repo_id, files, kind=kind, revision=revision)

    def set_ref(self, repo_id: str, name: str, sha: str, *, kind: RepoKind = "model") -> None:
        """Point branch or tag ``name`` at an existing commit ``sha``."""
        with self._lock:
            repo = self._repos[(kind, repo_id)]
            if sha not in repo.commits:
                raise KeyError(f"{repo_id} has no commit {sha}")
            repo.refs[name] = sha

    def resolve(self, repo_id: str, revision: str = "main", *, kind: RepoKind = "model") -> str:
        """The commit sha that ``revision`` of a served repo resolves to (KeyError if none)."""
        with self._lock:
            repo = self._repos[(kind, repo_id)]
            commit = repo.resolve(revision)
        if commit is None:
            raise KeyError(f"{repo_id} has no revision {revision!r}")
        return commit.sha

    @property
    def unhandled(self) -> list[str]:
        """The requests answered with a 404 because no route matched them (a copy)."""
        with self._lock:
            return list(self._unhandled)

    # -- routing -------------------------------------------------------------------------------

    def _split_repo(self, kind: RepoKind, parts: list[str]) -> tuple[str, list[str]]:
        """``["org", "name", "resolve", ...]`` → ``("org/name", ["resolve", ...])``.

        Repo ids have one part (``gpt2``) or two (``org/name``): a served id wins, else the
        word after the id (``resolve``, ``tree``, ...) decides.
        """
        with self._lock:
            if len(parts) >= 2 and (kind, f"{parts[0]}/{parts[1]}") in self._repos:
                return f"{parts[0]}/{parts[1]}", parts[2:]
            if parts and (kind, parts[0]) in self._repos:
                return parts[0], parts[1:]
        if len(parts) >= 2 and parts[1] not in _OPERATIONS:
            return f"{parts[0]}/{parts[1]}", parts[2:]
        return (parts[0] if parts else ""), parts[1:]

    def _answer(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> _Response:
        url = urlsplit(target)
        # Split before decoding: a revision such as "refs/pr/1" arrives as "refs%2Fpr%2F1".
        parts = [unquote(part) for part in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        response: _Response | None = None
        if parts and parts[0] == "api":
            if len(parts) >= 3 and parts[1] in _API_KINDS:
                kind = _API_KINDS[parts[1]]
                repo_id, rest = self._split_repo(kind, parts[2:])
                response = self._api(method, kind, repo_id, rest, query, body)
        elif method in ("GET", "HEAD") and parts:
            kind = _URL_PREFIX.get(parts[0], "model")
            repo_id, rest = self._split_repo(kind, parts[1:] if parts[0] in _URL_PREFIX else parts)
            if len(rest) >= 3 and rest[0] == "resolve":
                response = self._resolve(kind, repo_id, rest[1], "/".join(rest[2:]), headers)
        if response is None:  # e.g. /api/agent-harnesses, which a 404 answers well enough
            with self._lock:
                self._unhandled.append(f"{method} {target}")
            response = _Response.error(404, "Sorry, we can't find the page you are looking for.")
        return response

    def _lookup(self, kind: RepoKind, repo_id: str, revision: str) -> _Commit | _Response:
        """The commit, or the 404 the Hub gives for an unknown repo or revision."""
        with self._lock:
            repo = self._repos.get((kind, repo_id))
            commit = repo.resolve(revision) if repo is not None else None
        if repo is None:
            return _Response.error(404, "Repository not found", **{"X-Error-Code": "RepoNotFound"})
        if commit is None:
            return _Response.error(
                404, f"Invalid rev id: {revision}", **{"X-Error-Code": "RevisionNotFound"}
            )
        return commit

    def _resolve(
        self, kind: RepoKind, repo_id: str, revision: str, path: str, headers: Mapping[str, str]
    ) -> _Response:
        """``/[datasets/]{repo}/resolve/{rev}/{path}``: a file's bytes and its metadata."""
        commit = self._lookup(kind, repo_id, revision)
        if isinstance(commit, _Response):
            return commit
        blob = commit.files.get(path)
        if blob is None:
            # X-Repo-Commit lets the client cache the miss under .no_exist/<commit>/<path>.
            return _Response.error(
                404,
                "Entry not found",
                **{"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit.sha},
            )
        meta = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{blob.etag}"',
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{Path(path).name}";',
        }
        if blob.lfs:
            # The Hub sends these on the redirect of an LFS file to its CDN; huggingface_hub
            # prefers them to ETag/Content-Length. Same values here, so either reading works.
            meta["X-Linked-Etag"] = f'"{blob.sha256}"'
            meta["X-Linked-Size"] = str(blob.size)
        return _content(blob.data, blob.size, headers.get("range"), meta)

    def _api(
        self,
        method: str,
        kind: RepoKind,
        repo_id: str,
        rest: list[str],
        query: Mapping[str, list[str]],
        body: bytes,
    ) -> _Response | None:
        """``/api/{models|datasets|spaces}/{repo}[/revision|tree|paths-info|refs/...]``."""
        if method == "GET" and (not rest or (rest[0] == "revision" and len(rest) >= 2)):
            revision = "/".join(rest[1:]) if rest else None
            return self._info(kind, repo_id, revision, with_blobs=_flag(query, "blobs"))
        if method == "GET" and rest and rest[0] == "tree" and len(rest) >= 2:
            return self._tree(
                kind,
                repo_id,
                rest[1],
                "/".join(rest[2:]),
                recursive=_flag(query, "recursive"),
                expand=_flag(query, "expand"),
            )
        if method == "POST" and rest and rest[0] == "paths-info" and len(rest) >= 2:
            return self._paths_info(kind, repo_id, "/".join(rest[1:]), body)
        if method == "GET" and rest == ["refs"]:
            return self._refs(kind, repo_id)
        return None

    # -- API answers ---------------------------------------------------------------------------

    def _info(
        self, kind: RepoKind, repo_id: str, revision: str | None, *, with_blobs: bool
    ) -> _Response:
        """Repo info (``ModelInfo``/``DatasetInfo`` fields); ``sha`` is the resolved commit."""
        if revision is None:
            with self._lock:
                repo = self._repos.get((kind, repo_id))
            revision = repo.default_revision if repo is not None else "main"
        commit = self._lookup(kind, repo_id, revision)
        if isinstance(commit, _Response):
            return commit
        siblings: list[dict[str, Any]] = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:  # ?blobs=true (files_metadata=True)
                sibling.update(size=blob.size, blobId=blob.git_sha1)
                if blob.lfs:
                    sibling["lfs"] = {
                        "sha256": blob.sha256,
                        "size": blob.size,
                        "pointerSize": _LFS_POINTER_SIZE,
                    }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{kind}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0] if "/" in repo_id else None,
            "sha": commit.sha,
            "lastModified": _FIXED_DATE,
            "createdAt": _FIXED_DATE,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        if kind == "model":
            info["modelId"] = repo_id
        if with_blobs:
            info["usedStorage"] = sum(blob.size for blob in commit.files.values())
        return _Response.json(200, info)

    def _entry(self, commit: _Commit, path: str, *, expand: bool) -> dict[str, Any]:
        """One tree / paths-info entry: a file or a directory."""
        blob = commit.files.get(path)
        entry: dict[str, Any]
        if blob is None:
            entry = {"type": "directory", "oid": commit.tree_oid(path), "size": 0, "path": path}
        else:
            entry = {"type": "file", "oid": blob.git_sha1, "size": blob.size, "path": path}
            if blob.lfs:
                entry["lfs"] = {
                    "oid": blob.sha256,
                    "size": blob.size,
                    "pointerSize": _LFS_POINTER_SIZE,
                }
        if expand:
            entry["lastCommit"] = {"id": commit.sha, "title": "Upload", "date": _FIXED_DATE}
            if blob is not None:
                entry["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
        return entry

    def _tree(
        self,
        kind: RepoKind,
        repo_id: str,
        revision: str,
        folder: str,
        *,
        recursive: bool,
        expand: bool,
    ) -> _Response:
        """The entries under ``folder`` (direct children, or all with ``recursive``), sorted:
        folders first, then files, as the Hub lists them."""
        commit = self._lookup(kind, repo_id, revision)
        if isinstance(commit, _Response):
            return commit
        folder = folder.strip("/")
        directories = commit.directories()
        if folder and folder not in directories:
            return _Response.error(
                404,
                f"{folder} does not exist on {revision}",
                **{"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit.sha},
            )
        prefix = f"{folder}/" if folder else ""

        def wanted(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        paths = [p for p in sorted(directories) if wanted(p)]
        paths += [p for p in sorted(commit.files) if wanted(p)]
        return _Response.json(200, [self._entry(commit, p, expand=expand) for p in paths])

    def _paths_info(self, kind: RepoKind, repo_id: str, revision: str, body: bytes) -> _Response:
        """The entries of the paths asked for (form-encoded, or JSON); unknown paths left out."""
        commit = self._lookup(kind, repo_id, revision)
        if isinstance(commit, _Response):
            return commit
        text = body.decode()
        if text.lstrip().startswith("{"):
            payload = json.loads(text)
            paths = list(payload.get("paths", []))
            expand = bool(payload.get("expand", False))
        else:
            form = parse_qs(text)
            paths = form.get("paths", [])
            expand = _flag(form, "expand")
        directories = commit.directories()
        entries = [
            self._entry(commit, path.strip("/"), expand=expand)
            for path in paths
            if path.strip("/") in commit.files or path.strip("/") in directories
        ]
        return _Response.json(200, entries)

    def _refs(self, kind: RepoKind, repo_id: str) -> _Response:
        """Branches (every ref here is a branch), for ``list_repo_refs``."""
        with self._lock:
            repo = self._repos.get((kind, repo_id))
            refs = dict(repo.refs) if repo is not None else None
        if refs is None:
            return _Response.error(404, "Repository not found", **{"X-Error-Code": "RepoNotFound"})
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
            for name, sha in sorted(refs.items())
        ]
        return _Response.json(200, {"branches": branches, "converts": [], "tags": []})


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    """A boolean query parameter: httpx sends ``true``/``false``, others ``1``/``True``."""
    values = query.get(name)
    return values is not None and values[-1].lower() in ("1", "true", "yes")


# --------------------------------------------------------------------------------------------
# A plain file server
# --------------------------------------------------------------------------------------------


class FileServer(_BackgroundServer):
    """Serves given bytes (or files) at given URL paths, with ETag, Content-Length and Range.

    For ``torch.hub.load_state_dict_from_url``::

        with FileServer() as files:
            url = files.add(f"/weights/{torch_hub_filename('resnet18', data)}", data)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._files: dict[str, tuple[bytes | Path, int, str]] = {}

    def add(self, url_path: str, data: bytes | Path) -> str:
        """Serve ``data`` (bytes, or a file that must not change) at ``url_path`` (decoded,
        e.g. ``/a/b.pth``); returns its full URL."""
        url_path = "/" + url_path.lstrip("/")
        size = len(data) if isinstance(data, bytes) else data.stat().st_size
        with self._lock:
            self._files[url_path] = (data, size, sha256_hex(data))
        return self.url(url_path)

    def url(self, url_path: str) -> str:
        return self.endpoint + "/" + url_path.lstrip("/")

    def _answer(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> _Response:
        path = unquote(urlsplit(target).path)
        with self._lock:
            found = self._files.get(path)
        if method not in ("GET", "HEAD") or found is None:
            return _Response.error(404, f"no file at {path}")
        data, size, digest = found
        meta = {"ETag": f'"{digest}"', "Content-Type": "application/octet-stream"}
        return _content(data, size, headers.get("range"), meta)


# -- data set repos ------------------------------------------------------------------------------


def dataset_card(splits: list[str], class_names: list[str] | None = None) -> str:
    """A data set repo's README.md: a ``configs:`` block mapping each split to
    ``data/<split>-*``, and, given ``class_names``, the features (an ``image`` Image column and a
    ``label`` ClassLabel; without them ``datasets`` reads the parquet schema)."""
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: data/{split}-*"]
    if class_names is not None:
        lines += ["dataset_info:", "  features:", "  - name: image", "    dtype: image",
                  "  - name: label", "    dtype:", "      class_label:", "        names:"]  # fmt: skip
        lines += [f"          '{i}': {name}" for i, name in enumerate(class_names)]
    return "\n".join([*lines, "---", "# test images", ""])


# -- clients of the servers -------------------------------------------------------------------

_MARK = "@@result "
_DROPPED_ENV = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH_HOME", "XDG_CACHE_HOME")
_PROXIES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def client_env(home: Path, endpoint: str, *, offline: bool = False, **extra: str) -> dict[str, str]:
    """The environment of a client of the hub at ``endpoint``: caches under ``home``, no
    proxies, no telemetry, ``HF_HUB_OFFLINE`` as asked, and ``extra`` on top."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_DROPPED_ENV) and key not in _PROXIES
    }
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(home / "hf"),
        TORCH_HOME=str(home / "torch"),
        XDG_CACHE_HOME=str(home / "cache"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",
        HF_HUB_OFFLINE="1" if offline else "0",
        NO_PROXY="*",
        no_proxy="*",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        **extra,
    )
    return env


def run_client(
    code: str,
    home: Path,
    endpoint: str,
    *,
    offline: bool = False,
    timeout: float = 120,
    **extra_env: str,
) -> dict[str, Any]:
    """Run ``code`` in a fresh Python with the hub at ``endpoint`` and caches under ``home``.

    ``code`` stores what it found in a dict named ``result``; its wall time (imports included)
    comes back as ``result["seconds"]``.
    """
    script = (
        "import json as _json, time as _time\n_start = _time.perf_counter()\nresult = {}\n"
        + textwrap.dedent(code)
        + f"\nresult['seconds'] = _time.perf_counter() - _start\nprint({_MARK!r} + _json.dumps(result))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=client_env(home, endpoint, offline=offline, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if done.returncode != 0 or not lines:
        _fail(f"client failed (rc {done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}")
    found: dict[str, Any] = json.loads(lines[-1][len(_MARK) :])
    return found


def _fail(message: str) -> None:
    import pytest

    pytest.fail(message)
