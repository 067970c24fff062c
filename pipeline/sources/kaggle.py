"""``data.source: kaggle`` and ``model.weights: kaggle``: pinned Kaggle downloads through kagglehub.

Both go through kagglehub's own cache (``KAGGLEHUB_CACHE``, default ``~/.cache/kagglehub``), so a
second run with the same pinned version needs no network, and an interrupted download is resumed
(and checked against Kaggle's MD5) by the next run instead of being trusted.

Handles must be pinned to a version: ``owner/slug/versions/N`` for a dataset,
``owner/model/framework/variation/N`` for a model. An unpinned handle makes kagglehub ask Kaggle
for the latest version on every run, so the same params could give different data.

* :class:`KaggleSource` downloads the dataset ``data.kaggle.handle`` and copies the class folders
  found inside it (e.g. ``tom_and_jerry/tom_and_jerry/<class>/``) to the stage output.
* :func:`download_weights_file` downloads ``model.kaggle_handle`` (a dataset or a model) and
  returns the keras.applications weights file in it (``model.kaggle_file``, or found by name).
* :func:`download_keras_hub_preset` downloads the KerasHub preset ``model.kaggle_handle`` (a
  Kaggle model, ``model.architecture: keras_hub``) file by file and returns its folder.

Credentials are kagglehub's: ``KAGGLE_API_TOKEN``, then ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``, then
``~/.kaggle/kaggle.json``. They are never logged, written or put in provenance records.
Every failure becomes a :class:`~pipeline.utils.PipelineError` saying what failed and what to do.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.architectures import KERAS_HUB_EXAMPLE, weights_file, weights_file_pattern
from pipeline.params import Params
from pipeline.sources import DataSource, copy_class_tree, find_class_root
from pipeline.utils import PipelineError, log

CREDENTIALS_HELP = (
    "kagglehub reads credentials, in this order, from the KAGGLE_API_TOKEN environment variable "
    "(an API token created at https://www.kaggle.com/settings), from KAGGLE_USERNAME and "
    "KAGGLE_KEY, or from ~/.kaggle/kaggle.json holding "
    '{"username": "...", "key": "..."} (folder overridable with KAGGLE_CONFIG_DIR)'
)
WEIGHT_SUFFIXES = (".h5", ".hdf5")
# The files of a KerasHub preset that the pipeline uses, in the order they are downloaded.
KERAS_HUB_FILES = ("config.json", "image_converter.json", "model.weights.h5")
HTTP_UNAUTHORIZED, HTTP_FORBIDDEN, HTTP_NOT_FOUND, HTTP_SERVER_ERROR = 401, 403, 404, 500

_SLUG = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
_DATASET = re.compile(rf"(?P<ref>{_SLUG}/{_SLUG})/versions/(?P<version>[1-9][0-9]*)")
_MODEL = re.compile(rf"(?P<ref>{_SLUG}/{_SLUG}/{_SLUG}/{_SLUG})/(?P<version>[1-9][0-9]*)")
_UNPINNED_DATASET = re.compile(rf"{_SLUG}/{_SLUG}")
_UNPINNED_MODEL = re.compile(rf"{_SLUG}/{_SLUG}/{_SLUG}/{_SLUG}")


@dataclass(frozen=True)
class KaggleHandle:
    """A Kaggle dataset or model handle pinned to one version."""

    kind: Literal["dataset", "model"]
    handle: str  # as kagglehub takes it, version included
    ref: str  # without the version
    version: int

    @property
    def page(self) -> str:
        """The resource's page on kaggle.com (where its versions are listed)."""
        return f"https://www.kaggle.com/{self.kind}s/{self.ref}"


def parse_handle(
    value: str, key: str, kinds: tuple[Literal["dataset", "model"], ...] = ("dataset",)
) -> KaggleHandle:
    """Parse a pinned handle of one of ``kinds``; refuse unpinned or malformed ones clearly."""
    handle = value.strip().strip("/")
    if "dataset" in kinds and (m := _DATASET.fullmatch(handle)):
        return KaggleHandle("dataset", handle, m["ref"], int(m["version"]))
    if "model" in kinds and (m := _MODEL.fullmatch(handle)) and "/versions/" not in handle:
        return KaggleHandle("model", handle, m["ref"], int(m["version"]))
    why = (
        "kagglehub would then ask Kaggle for the latest version on every run, so the same "
        "params could silently give different files and results (it breaks reproducibility), "
        "and every run would need the network"
    )
    if "dataset" in kinds and _UNPINNED_DATASET.fullmatch(handle):
        raise PipelineError(
            f"{key} = {value!r} is not pinned to a version: {why}. Pin it as "
            f"'{handle}/versions/N' with N the version to use (the versions are listed on "
            f"https://www.kaggle.com/datasets/{handle})"
        )
    if "model" in kinds and _UNPINNED_MODEL.fullmatch(handle) and "/versions" not in handle:
        raise PipelineError(
            f"{key} = {value!r} is not pinned to a version: {why}. Pin it as '{handle}/N' with "
            f"N the version to use (the versions are listed on https://www.kaggle.com/models/"
            f"{handle})"
        )
    forms = ["owner/dataset/versions/N (a Kaggle dataset)"]
    if "model" in kinds:
        forms.append("owner/model/framework/variation/N (a Kaggle model)")
    raise PipelineError(
        f"{key} = {value!r} is not a pinned Kaggle handle: expected {' or '.join(forms)}, "
        "e.g. balabaskar/tom-and-jerry-image-classification/versions/1"
    )


def credentials_source() -> str | None:
    """Where kagglehub takes credentials from (a name, never the value), or ``None``.

    kagglehub's own lookup (``kagglehub.config.get_kaggle_credentials``) finds them; only the
    name of the place they came from is worked out here, in the same order.
    """
    from kagglehub.config import get_kaggle_credentials

    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle").expanduser()
    try:
        found = get_kaggle_credentials()
    except ValueError:  # kaggle.json without username/key: named, kagglehub refuses it
        return str(folder / "kaggle.json")
    if found is None:
        return None
    if found.api_key:
        from_env = os.environ.get("KAGGLE_API_TOKEN")
        return "KAGGLE_API_TOKEN" if from_env else "~/.kaggle/access_token"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME and KAGGLE_KEY"
    return str(folder / "kaggle.json")


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _cache_root() -> str:
    from kagglehub.config import get_cache_folder

    return get_cache_folder()


def _explain(
    exc: Exception, h: KaggleHandle, key: str, path: str | None, note: str | None = None
) -> tuple[str, bool]:
    """A message for a failed download, and whether a partial download must be discarded.

    ``note``: a sentence added when Kaggle answers 404 (no such handle, version or file); then
    ``model.kaggle_file`` is not named as a thing to check.
    """
    what = f"{h.kind} {h.handle}" + (f" (file {path})" if path else "")
    answer = _explain_refusal(exc, h, key, path, note, what)
    if answer is None:
        answer = _explain_failure(exc, what)
    return answer


def _explain_refusal(
    exc: Exception, h: KaggleHandle, key: str, path: str | None, note: str | None, what: str
) -> tuple[str, bool] | None:
    """:func:`_explain` for an answer of Kaggle's: refused access, 404, an HTTP error."""
    from kagglehub.exceptions import UnauthenticatedError

    status = _status(exc)
    if isinstance(exc, UnauthenticatedError) or status in (HTTP_UNAUTHORIZED, HTTP_FORBIDDEN):
        origin = credentials_source()
        found = (
            f"the credentials from {origin} were refused"
            if origin
            else "no Kaggle credentials were found"
        )
        return (
            f"Kaggle refused access to {what} (HTTP {status or HTTP_UNAUTHORIZED}): {found}. "
            f"{CREDENTIALS_HELP}. If the credentials are right, open {h.page} while signed in "
            "and accept its terms (some resources require that) or check that the account may "
            "see it",
            False,
        )
    if status == HTTP_NOT_FOUND:
        fix = f"check {key}" + (" and model.kaggle_file" if path and not note else "")
        private = f"A private {h.kind} also answers 404 to accounts that may not see it"
        if credentials_source() is None:
            private += f", and no Kaggle credentials were found: {CREDENTIALS_HELP}"
        return (
            f"Kaggle has no {what} (HTTP 404): {fix} (owner, name and version {h.version}; the "
            f"versions are listed on {h.page}). {note + ' ' if note else ''}{private}",
            False,
        )
    if status is not None and status >= HTTP_SERVER_ERROR:
        return (
            f"Kaggle answered HTTP {status} (a server error) while downloading {what}: "
            f"the kagglehub cache holds no complete copy of it, so run the stage again later "
            f"({_first_line(exc)})",
            False,
        )
    if status is not None:
        return f"downloading {what} failed with HTTP {status}: {_first_line(exc)}", False
    return None


def _explain_failure(exc: Exception, what: str) -> tuple[str, bool]:
    """:func:`_explain` for a download that failed without an answer of Kaggle's."""
    import requests
    from kagglehub.exceptions import DataCorruptionError

    if isinstance(exc, DataCorruptionError):
        return (
            f"the download of {what} did not match Kaggle's MD5 checksum; kagglehub deleted it: "
            "run the stage again to download it afresh",
            True,
        )
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ReadTimeout):
        return (
            f"the download of {what} was cut off before its end ({_first_line(exc)}). The partial "
            f"file stays in the kagglehub cache ({_cache_root()}) without its completion marker, "
            "so it is never used as is: run the stage again and kagglehub resumes or restarts "
            "it and checks it against Kaggle's checksum",
            False,
        )
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return (
            f"could not reach Kaggle, or lost the connection, while downloading {what} "
            f"({_first_line(exc)}). Check the network connection (and HTTPS_PROXY if one is "
            "needed), then run the stage again: a partial download is resumed, never used as "
            "is. Without network, a pinned version that an earlier run downloaded is read from "
            f"the kagglehub cache ({_cache_root()})",
            False,
        )
    if isinstance(exc, zipfile.BadZipFile | tarfile.TarError) or (
        isinstance(exc, ValueError) and "archive type" in str(exc)
    ):
        return (
            f"the archive downloaded for {what} is damaged ({_first_line(exc)}); it was removed "
            "from the kagglehub cache: run the stage again to download it afresh",
            True,
        )
    if isinstance(exc, ValueError) and "credentials" in str(exc).lower():
        return f"{_first_line(exc)}. {CREDENTIALS_HELP}", False
    if isinstance(exc, OSError):
        return (
            f"could not write the download of {what} to the kagglehub cache ({_cache_root()}): "
            f"{_first_line(exc)}. Free disk space or set KAGGLEHUB_CACHE to a writable folder",
            True,
        )
    return f"kagglehub could not download {what}: {_first_line(exc)}", True


def _discard_partial(h: KaggleHandle, path: str | None) -> None:
    """Remove what a failed download left in the cache unless kagglehub marked it complete."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_dataset_handle, parse_model_handle

    try:
        rh = (parse_dataset_handle if h.kind == "dataset" else parse_model_handle)(h.handle)
        cache = Cache()
        if cache.load_from_cache(rh, path):
            return
        Path(cache.get_archive_path(rh)).unlink(missing_ok=True)
        cache.delete_from_cache(rh, path)
    except Exception as exc:  # best effort: the error being reported matters more
        log.warning("could not clean the partial download of %s: %s", h.handle, exc)


def kaggle_download(
    h: KaggleHandle, key: str, path: str | None = None, note: str | None = None
) -> Path:
    """Download (or read from kagglehub's cache) a pinned handle; return the local path.

    ``path``: one file of the handle (then only that file is downloaded); ``note``: a sentence
    that the error message adds when Kaggle has no such handle, version or file (HTTP 404).
    """
    import kagglehub

    fn: Callable[..., str] = (
        kagglehub.dataset_download if h.kind == "dataset" else kagglehub.model_download
    )
    log.info("kaggle %s %s%s", h.kind, h.handle, f" file {path}" if path else "")
    try:
        local = fn(h.handle, path) if path else fn(h.handle)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        message, discard = _explain(exc, h, key, path, note)
        if discard:
            _discard_partial(h, path)
        raise PipelineError(message) from None
    return Path(local)


class KaggleSource(DataSource):
    """The Kaggle dataset ``data.kaggle.handle`` (pinned), through kagglehub's cache."""

    name = "kaggle"

    def fetch(self, out: Path) -> dict[str, Any]:
        key = "data.kaggle.handle"
        h = parse_handle(self.params.data.kaggle.handle, key)
        root = kaggle_download(h, key)
        class_root = find_class_root(root)
        counts = copy_class_tree(class_root, out)
        import kagglehub

        return {
            "source": "kaggle",
            "handle": h.handle,
            "version": h.version,
            "class_root": class_root.relative_to(root).as_posix(),
            "images": counts,
            "kagglehub": kagglehub.__version__,
        }


def _listing(paths: list[str], limit: int = 20) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _pick_weights_file(root: Path, params: Params, h: KaggleHandle) -> Path:
    """The weights file in a whole download: the only .h5 one, or the one named for the base."""
    m = params.model
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if {"config.json", "model.weights.h5"} <= set(files):
        raise PipelineError(
            f"Kaggle {h.kind} {h.handle} is a KerasHub preset (config.json, model.weights.h5), "
            f"not a keras.applications weights file of {m.architecture}: set "
            "model.architecture to 'keras_hub' and model.alpha to 1.0 to use it"
        )
    candidates = [f for f in files if f.lower().endswith(WEIGHT_SUFFIXES)]
    if len(candidates) == 1:
        return root / candidates[0]
    if not candidates:
        raise PipelineError(
            f"Kaggle {h.kind} {h.handle} holds no Keras weights file (.h5); it holds: "
            f"{_listing(files) or 'nothing'}. Point model.kaggle_handle at a {h.kind} that holds "
            f"the keras.applications file, e.g. {weights_file(m.architecture, m.alpha)}"
        )
    pattern = weights_file_pattern(m.architecture, m.alpha)
    named = [f for f in candidates if pattern.fullmatch(f.rsplit("/", 1)[-1])]
    if len(named) == 1:
        log.info(
            "picked %s: keras.applications' name for %s alpha %s", named[0], m.architecture, m.alpha
        )
        return root / named[0]
    raise PipelineError(
        f"Kaggle {h.kind} {h.handle} holds {len(candidates)} weights files: "
        f"{_listing(candidates)}. Set model.kaggle_file to the headless ('no_top') one for "
        f"{m.architecture} with alpha {m.alpha}"
    )


def _check_file_param(value: str) -> str | None:
    path = value.strip().replace("\\", "/").strip("/")
    if not path:
        return None
    if ".." in path.split("/"):
        raise PipelineError(f"model.kaggle_file = {value!r} must stay inside the download")
    if not path.lower().endswith(WEIGHT_SUFFIXES):
        raise PipelineError(
            f"model.kaggle_file = {value!r} is not a Keras weights file: expected a name ending "
            "in .h5 (a keras.applications '_no_top.h5' file or a '.weights.h5' file)"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_weights_file(params: Params) -> tuple[Path, dict[str, Any]]:
    """Download the weights named by ``model.kaggle_handle``; return the file and provenance.

    ``model.kaggle_handle`` is a pinned Kaggle dataset (``owner/slug/versions/N``) or model
    (``owner/model/framework/variation/N``). With ``model.kaggle_file`` set only that file is
    downloaded; otherwise the whole handle is, and the file is the single ``.h5`` file in it or
    the one keras.applications names for ``model.architecture`` and ``model.alpha``.
    """
    key = "model.kaggle_handle"
    h = parse_handle(params.model.kaggle_handle, key, kinds=("dataset", "model"))
    wanted = _check_file_param(params.model.kaggle_file)
    local = kaggle_download(h, key, wanted)
    if wanted:
        if not local.is_file():
            raise PipelineError(
                f"model.kaggle_file = {params.model.kaggle_file!r} is not a file in Kaggle "
                f"{h.kind} {h.handle}"
            )
        path = local
        name = wanted
    else:
        path = _pick_weights_file(local, params, h)
        name = path.relative_to(local).as_posix()
    import kagglehub

    return path, {
        "source": "kaggle",
        "kind": h.kind,
        "handle": h.handle,
        "version": h.version,
        "file": name,
        "sha256": _sha256(path),
        "kagglehub": kagglehub.__version__,
    }


def _preset_json(path: Path, h: KaggleHandle) -> dict[str, Any]:
    import json

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineError(
            f"{path.name} of Kaggle model {h.handle} is not valid JSON ({_first_line(exc)}): it "
            "is not a KerasHub preset; check model.kaggle_handle"
        ) from None
    if not isinstance(value, dict):
        raise PipelineError(
            f"{path.name} of Kaggle model {h.handle} is not a JSON object: it is not a KerasHub "
            "preset; check model.kaggle_handle"
        )
    return value


def download_keras_hub_preset(
    params: Params, backbone_class: Callable[[dict[str, Any]], type]
) -> tuple[Path, dict[str, Any]]:
    """Download the KerasHub image preset ``model.kaggle_handle``; return its folder and provenance.

    ``model.kaggle_handle`` is a pinned Kaggle model (``owner/model/keras/preset/N``). Only the
    files the pipeline uses are downloaded, one by one, each checked before the next
    (:data:`KERAS_HUB_FILES`): ``config.json`` must name a KerasHub image backbone
    (``backbone_class(config)`` returns its class or raises ``ValueError`` saying why not:
    :func:`pipeline.models.keras_hub_backbone_class`), so a wrong or non-image preset fails
    before its weights are downloaded. They land in one folder of
    kagglehub's cache, which :func:`pipeline.models.keras_hub_base_from_preset` builds from.
    """
    key = "model.kaggle_handle"
    h = parse_handle(params.model.kaggle_handle, key, kinds=("model",))
    preset = h.ref.rsplit("/", 1)[-1]
    note = (
        f"A KerasHub preset holds {', '.join(KERAS_HUB_FILES)}; the official ones are listed in "
        "keras-hub's keras_hub/src/models/*/*_presets.py and on "
        "https://www.kaggle.com/organizations/keras/models."
    )
    config_path = kaggle_download(h, key, "config.json", note)
    config = _preset_json(config_path, h)
    try:
        cls = backbone_class(config)
    except ValueError as exc:
        raise PipelineError(
            f"Kaggle model {h.handle} cannot be the base: {exc}. Set model.kaggle_handle to a "
            f"KerasHub image preset, e.g. {KERAS_HUB_EXAMPLE}"
        ) from None
    converter = kaggle_download(
        h,
        key,
        "image_converter.json",
        f"This preset of {cls.__name__} has no image converter, so no preprocessing for images: "
        "use a preset of an image classifier.",
    )
    weights = kaggle_download(h, key, "model.weights.h5", note)
    folder = config_path.parent
    if {converter.parent, weights.parent} != {folder}:
        raise PipelineError(
            f"kagglehub put the files of Kaggle model {h.handle} in different folders "
            f"({config_path}, {converter}, {weights}); clear its cache folder and run again"
        )
    import kagglehub
    import keras_hub

    return folder, {
        "source": "kaggle",
        "kind": "model",
        "handle": h.handle,
        "version": h.version,
        "preset": preset,
        "backbone": config.get("registered_name"),
        "file": "model.weights.h5",
        "sha256": _sha256(weights),
        "kagglehub": kagglehub.__version__,
        "keras_hub": keras_hub.__version__,
    }
