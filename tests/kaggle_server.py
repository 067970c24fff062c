"""A local HTTP server that speaks the part of the Kaggle API that kagglehub 1.0.3 uses.

It lets the tests run the real kagglehub client (and so kagglesdk and requests) against files
built in memory, with faults that can be switched on and off. What it answers:

* ``POST /api/v1/datasets.DatasetApiService/DownloadDataset`` – ``302`` to a blob URL of the
  version's zip archive, or of one file when the request names ``fileName``;
* ``POST /api/v1/datasets.DatasetApiService/GetDataset`` – the current version number;
* ``POST /api/v1/datasets.DatasetApiService/ListTreeDatasetFiles`` – ``404`` (kagglehub calls it
  only after a single-file download answered ``404``);
* ``POST /api/v1/models.ModelApiService/GetModelInstance`` – the current version number;
* ``POST /api/v1/models.ModelApiService/ListModelInstanceVersionFiles`` – the file list;
* ``POST /api/v1/models.ModelApiService/DownloadModelInstanceVersion`` – ``302`` to one file
  (``path``) or to a zip archive of the version;
* ``GET /blobs/<id>/<name>`` – the bytes, with ``Content-Length``, ``Last-Modified``,
  ``Accept-Ranges: bytes`` and ``x-goog-hash: md5=…`` like Kaggle's storage; ``Range: bytes=N-``
  is answered with ``206``.

Errors are JSON bodies ``{"code": …, "message": …}`` as Kaggle sends them.

How kagglehub reaches it: kagglesdk takes its endpoint only from ``KAGGLE_API_ENVIRONMENT``
(``TEST`` is ``http://localhost:7777`` and prints every request, its ``Authorization`` header
included, and every response body to stdout; ``LOCALHOST`` is ``http://localhost`` on port
80). :meth:`KaggleTestServer.client_env` therefore selects ``LOCALHOST`` and names this server
as the HTTP proxy (``HTTP_PROXY``, which requests honours): every request, API call or blob,
then arrives here whatever port the server has, so parallel test runs do not collide. Started
with ``port=7777`` it also serves ``KAGGLE_API_ENVIRONMENT=TEST`` directly.

Faults (attributes, changed between calls):

* ``api_fault`` – an HTTP status (401, 403, 404, 500, ...) answered to every API call;
* ``blob_fault`` – for the blob downloads: ``"truncate"`` (announce the full ``Content-Length``,
  send half, close), ``"damaged"`` (serve the first half as if it were the whole object, with a
  matching MD5) or an HTTP status;
* ``require_auth`` – answer ``401`` to API calls without the configured credentials
  (``token`` as ``Authorization: Bearer``, or ``username``/``key`` as HTTP basic auth).

Every request is logged in :attr:`KaggleTestServer.log` (method, API name or blob path, the
JSON body, the auth scheme and whether it matched, the ``Range`` header), never the
credentials themselves.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import zipfile
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from kagglehub.handle import parse_model_handle

API_PREFIX = "/api/v1/"
BLOB_PREFIX = "/blobs/"
# A fixed modification time, so the served files look like a published, immutable version.
LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A zip archive of ``files`` (path -> bytes), members in sorted order, fixed timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2023, 11, 14, 22, 13, 20))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    return buf.getvalue()


@dataclass
class Request:
    """One request as the server saw it (no credential values)."""

    method: str
    name: str  # API method name (e.g. "DownloadDataset") or blob path
    body: dict[str, Any] = field(default_factory=dict)
    auth: str | None = None  # "Bearer", "Basic" or None
    auth_ok: bool = False
    range: str | None = None


@dataclass
class _Blob:
    name: str
    data: bytes


class KaggleTestServer:
    """The server and its catalogue of datasets and models (see the module docstring)."""

    def __init__(
        self,
        *,
        port: int = 0,
        token: str | None = None,
        username: str | None = None,
        key: str | None = None,
        require_auth: bool = False,
    ) -> None:
        self.token, self.username, self.key = token, username, key
        self.require_auth = require_auth
        self.api_fault: int | None = None
        self.blob_fault: str | int | None = None
        self.log: list[Request] = []
        # (owner, slug) -> {version: {path: bytes}}
        self.datasets: dict[tuple[str, str], dict[int, dict[str, bytes]]] = {}
        # (owner, model, FRAMEWORK_ENUM_NAME, variation) -> {version: {path: bytes}}
        self.models: dict[tuple[str, str, str, str], dict[int, dict[str, bytes]]] = {}
        self._blobs: dict[str, _Blob] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- catalogue ---------------------------------------------------------------------------
    def add_dataset(self, ref: str, version: int, files: dict[str, bytes]) -> None:
        """Serve ``files`` as version ``version`` of dataset ``owner/slug``."""
        owner, slug = ref.split("/")
        self.datasets.setdefault((owner, slug), {})[version] = dict(files)

    def add_model(self, ref: str, version: int, files: dict[str, bytes]) -> None:
        """Serve ``files`` as version ``version`` of model ``owner/model/framework/variation``."""
        h = parse_model_handle(ref)
        key = (h.owner, h.model, h.framework_enum().name, h.variation)
        self.models.setdefault(key, {})[version] = dict(files)

    # -- life cycle --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KaggleTestServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port: later requests fail to connect, like no network."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()

    def client_env(self) -> dict[str, str]:
        """Environment variables that send kagglehub's requests to this server."""
        return {
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "HTTP_PROXY": self.url,
            "http_proxy": self.url,
        }

    def calls(self, name: str) -> list[Request]:
        return [r for r in self.log if r.name == name]

    # -- helpers used by the handler ---------------------------------------------------------
    def _record(self, req: Request) -> None:
        with self._lock:
            self.log.append(req)

    def _blob_url(self, name: str, data: bytes) -> str:
        blob_id = hashlib.sha256(data).hexdigest()[:16]
        with self._lock:
            self._blobs[blob_id] = _Blob(name, data)
        return f"{self.url}{BLOB_PREFIX}{blob_id}/{quote(name)}"

    def _blob(self, blob_id: str) -> _Blob | None:
        with self._lock:
            return self._blobs.get(blob_id)

    def _check_auth(self, header: str | None) -> tuple[str | None, bool]:
        if not header:
            return None, False
        scheme, _, value = header.partition(" ")
        if scheme == "Bearer":
            return scheme, self.token is not None and value == self.token
        if scheme == "Basic":
            try:
                user, _, key = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return scheme, False
            ok = self.username is not None and (user, key) == (self.username, self.key)
            return scheme, ok
        return scheme, False


def _make_handler(server: KaggleTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        srv = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    srv: KaggleTestServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- responses ---------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"code": status, "message": message})

    def _redirect(self, url: str) -> None:
        self._send(302, b"", {"Location": url})

    # -- API ---------------------------------------------------------------------------------
    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        name = path.removeprefix(API_PREFIX).rpartition("/")[2]
        scheme, auth_ok = self.srv._check_auth(self.headers.get("Authorization"))
        self.srv._record(Request("POST", name, body, scheme, auth_ok))
        if not path.startswith(API_PREFIX):
            return self._error(404, f"no such endpoint: {path}")
        if self.srv.api_fault is not None:
            return self._error(self.srv.api_fault, f"injected fault {self.srv.api_fault}")
        if self.srv.require_auth and not auth_ok:
            return self._error(401, "Unauthenticated")
        method = getattr(self, f"_api_{name}", None)
        if method is None:
            return self._error(404, f"unsupported API method: {name}")
        return method(body)

    def _dataset_files(self, body: dict[str, Any], version_key: str) -> dict[str, bytes] | None:
        versions = self.srv.datasets.get((body.get("ownerSlug"), body.get("datasetSlug")))
        if not versions:
            return None
        return versions.get(body.get(version_key))

    def _api_GetDataset(self, body: dict[str, Any]) -> None:
        versions = self.srv.datasets.get((body.get("ownerSlug"), body.get("datasetSlug")))
        if not versions:
            return self._error(404, "Dataset not found")
        return self._json(200, {"currentVersionNumber": max(versions)})

    def _api_DownloadDataset(self, body: dict[str, Any]) -> None:
        files = self._dataset_files(body, "datasetVersionNumber")
        if files is None:
            return self._error(404, "Dataset or version not found")
        name = body.get("fileName")
        if name:
            if name not in files:
                return self._error(404, f"File not found: {name}")
            return self._redirect(self.srv._blob_url(name.rpartition("/")[2], files[name]))
        return self._redirect(self.srv._blob_url(f"{body['datasetSlug']}.zip", zip_bytes(files)))

    def _api_ListTreeDatasetFiles(self, body: dict[str, Any]) -> None:
        return self._error(404, "Folder not found")

    def _model_versions(self, body: dict[str, Any]) -> dict[int, dict[str, bytes]] | None:
        key = (
            body.get("ownerSlug"),
            body.get("modelSlug"),
            body.get("framework"),
            body.get("instanceSlug"),
        )
        return self.srv.models.get(key)

    def _api_GetModelInstance(self, body: dict[str, Any]) -> None:
        versions = self._model_versions(body)
        if not versions:
            return self._error(404, "Model instance not found")
        return self._json(200, {"versionNumber": max(versions), "slug": body["instanceSlug"]})

    def _api_ListModelInstanceVersionFiles(self, body: dict[str, Any]) -> None:
        files = (self._model_versions(body) or {}).get(body.get("versionNumber"))
        if files is None:
            return self._error(404, "Model instance version not found")
        listed = [{"name": n, "size": len(b)} for n, b in sorted(files.items())]
        page = int(body.get("pageSize") or 25)
        more = "next" if len(listed) > page else ""
        return self._json(200, {"files": listed[:page], "nextPageToken": more})

    def _api_DownloadModelInstanceVersion(self, body: dict[str, Any]) -> None:
        files = (self._model_versions(body) or {}).get(body.get("versionNumber"))
        if files is None:
            return self._error(404, "Model instance version not found")
        name = body.get("path")
        if name:
            if name not in files:
                return self._error(404, f"File not found: {name}")
            return self._redirect(self.srv._blob_url(name.rpartition("/")[2], files[name]))
        return self._redirect(self.srv._blob_url("model.zip", zip_bytes(files)))

    # -- blobs -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        range_header = self.headers.get("Range")
        scheme, auth_ok = self.srv._check_auth(self.headers.get("Authorization"))
        self.srv._record(Request("GET", path, {}, scheme, auth_ok, range_header))
        blob_id = path.removeprefix(BLOB_PREFIX).partition("/")[0]
        blob = self.srv._blob(blob_id) if path.startswith(BLOB_PREFIX) else None
        if blob is None:
            return self._error(404, "No such object")
        fault = self.srv.blob_fault
        if isinstance(fault, int):
            return self._error(fault, f"injected fault {fault}")
        data, start, status = blob.data, 0, 200
        if fault == "damaged":
            # A consistent but damaged object: half the bytes, with their own MD5 and length.
            data = data[: len(data) // 2]
        headers = {
            "Content-Type": "application/octet-stream",
            "Last-Modified": LAST_MODIFIED,
            "Accept-Ranges": "bytes",
            "x-goog-hash": "md5=" + base64.b64encode(hashlib.md5(data).digest()).decode(),
        }
        if range_header and range_header.startswith("bytes=") and range_header.endswith("-"):
            start = int(range_header[len("bytes=") : -1])
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        payload = data[start:]
        if fault == "truncate":
            # Promise the whole body, send half of it, then hang up.
            self.close_connection = True
            try:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            return None
        return self._send(status, payload, headers)
