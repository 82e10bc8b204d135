"""Sources: discover FAERS quarterly ASCII zips and download the new or changed ones into ``landing/``.

A source is FDA's quarterly-files page (the default), any http(s) page or folder listing that links
the zips, a ``file://`` URL of such a page or folder, or a local folder. Zip names are always taken
from the links (FDA mixes ``q``/``Q`` between quarters).

Downloads go to ``<name>.part`` and are renamed only after the zip passed its integrity check;
an interrupted download resumes with an HTTP range request (sent with ``Accept-Encoding:
identity``: FDA's server hangs on ranged gzip requests). ``landing/manifest.json`` records, per
zip, where it came from, when, its size, sha256 and the server's validators (ETag,
Last-Modified), which decide whether a zip changed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html.parser
import json
import logging
import os
import random
import shutil
import time
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.atomic import sha256_file, write_json
from pipeline.errors import SourceError
from pipeline.ingest import ZIP_NAME
from pipeline.layout import DataDir
from pipeline.quarters import Quarter

log = logging.getLogger(__name__)

USER_AGENT = "ketamine-faers-signals/0.1 (pharmacovigilance research pipeline)"
CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    quarter: Quarter
    name: str
    url: str            # http(s) URL or absolute local path


@dataclass
class FetchResult:
    source: str
    offered: list[RemoteFile] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed_quarters(self) -> list[str]:
        return [str(r.quarter) for r in self.offered if r.name in self.downloaded]

    def summary_line(self) -> str:
        return (f"fetch: {len(self.offered)} quarter(s) offered, {len(self.downloaded)} downloaded"
                f"{' (' + ', '.join(self.downloaded) + ')' if self.downloaded else ''}, "
                f"{len(self.unchanged)} unchanged")


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------
class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag.lower() == "a":
            for k, v in attrs:
                if k.lower() == "href" and v:
                    self.hrefs.append(v.strip())


def _zip_links(page_html: str, base: str) -> list[tuple[str, str]]:
    parser = _Links()
    parser.feed(page_html)
    out = []
    for href in parser.hrefs:
        url = urllib.parse.urljoin(base, href)
        name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
        if ZIP_NAME.match(name):
            out.append((name, url))
    return out


def _is_http(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def _local_path(source: str) -> Path:
    if source.lower().startswith("file://"):
        parsed = urllib.parse.urlparse(source)
        return Path(urllib.parse.unquote(parsed.path))
    return Path(source).expanduser()


def _session():
    import requests

    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    return s


def session_for(source: str):
    """A reusable HTTP session for an http(s) source, ``None`` for local ones."""
    return _session() if _is_http(source) else None


def discover(source: str, quarters: list[Quarter] | None = None, *, session=None,
             retries: int = 3) -> list[RemoteFile]:
    """List the ASCII quarterly zips a source offers (one per quarter, newest link wins)."""
    links: list[tuple[str, str]]
    if _is_http(source):
        session = session or _session()
        resp = _request(session, "GET", source, retries=retries)
        links = _zip_links(resp.text, resp.url)
    else:
        path = _local_path(source)
        if path.is_dir():
            links = [(p.name, str(p.resolve())) for p in sorted(path.iterdir())
                     if p.is_file() and ZIP_NAME.match(p.name)]
        elif path.is_file():
            links = []
            for name, url in _zip_links(path.read_text(errors="replace"), path.resolve().as_uri()):
                links.append((name, str(_local_path(url))))
        else:
            raise SourceError(f"source not found: {source}")
    by_quarter: dict[Quarter, RemoteFile] = {}
    for name, url in links:
        m = ZIP_NAME.match(name)
        q = Quarter(int(m.group(1)), int(m.group(2)))
        by_quarter[q] = RemoteFile(q, name, url)
    if not by_quarter:
        raise SourceError(f"no FAERS ASCII quarterly zips listed at {source}")
    if quarters is not None:
        absent = [str(q) for q in quarters if q not in by_quarter]
        if absent:
            raise SourceError(f"{source} does not offer {', '.join(absent)} "
                              f"(it lists {min(by_quarter)}..{max(by_quarter)})")
        return [by_quarter[q] for q in sorted(quarters)]
    return [by_quarter[q] for q in sorted(by_quarter)]


# --------------------------------------------------------------------------------------------
# HTTP with retries
# --------------------------------------------------------------------------------------------
def _request(session, method: str, url: str, *, retries: int = 3, backoff: float = 1.0,
             stream: bool = False, headers: dict | None = None, timeout=(10, 60)):
    """One HTTP request with exponential backoff on connection errors, timeouts and 5xx/429."""
    import requests

    last = None
    for attempt in range(retries + 1):
        try:
            resp = session.request(method, url, stream=stream, headers=headers, timeout=timeout,
                                   allow_redirects=True)
            if resp.status_code in (429, 500, 502, 503, 504):
                last = f"HTTP {resp.status_code}"
                resp.close()
            elif resp.status_code >= 400:
                raise SourceError(f"{url}: HTTP {resp.status_code} {resp.reason}")
            else:
                return resp
        except requests.exceptions.RequestException as exc:
            last = _short_reason(exc)
        if attempt < retries:
            delay = backoff * 2**attempt * (1 + 0.25 * random.random())
            log.warning("%s %s failed (%s); retry %d/%d in %.1fs", method, url, last, attempt + 1, retries, delay)
            time.sleep(delay)
    raise SourceError(f"cannot reach {url}: {last} (after {retries + 1} attempts)")


def _short_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Failed to establish a new connection: ", "Read timed out", "Connection refused"):
        if marker in text:
            tail = text.split(marker, 1)[1] if marker.endswith(": ") else marker
            return tail.strip(" ')\"")[:160]
    return f"{type(exc).__name__}: {text[:160]}"


# --------------------------------------------------------------------------------------------
# Landing manifest
# --------------------------------------------------------------------------------------------
def read_manifest(data_dir: DataDir) -> dict:
    path = data_dir.landing_manifest
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            log.warning("landing manifest %s is unreadable; starting a new one", path)
    return {"files": {}}


def _verify_zip(path: Path, name: str) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(f"{name}: downloaded file is not a valid zip ({exc})") from None
    if bad is not None:
        raise SourceError(f"{name}: member {bad} fails its CRC check (corrupt download)")


# --------------------------------------------------------------------------------------------
# Fetch
# --------------------------------------------------------------------------------------------
def fetch(source: str, data_dir: DataDir, quarters: list[Quarter] | None = None, *, progress: bool = True,
          retries: int | None = None, backoff: float = 1.0) -> FetchResult:
    """Download every offered zip (or those of ``quarters``) that is new or changed.

    ``retries`` defaults to ``$FAERS_FETCH_RETRIES`` or 3 (with exponential backoff from ``backoff`` s).
    """
    retries = _retries(retries)
    session = session_for(source)
    offered = discover(source, quarters, session=session, retries=retries)
    result = FetchResult(source=source, offered=offered)
    for remote in offered:
        got = fetch_one(remote, data_dir, session=session, progress=progress, retries=retries, backoff=backoff)
        (result.downloaded if got else result.unchanged).append(remote.name)
    return result


def _retries(retries: int | None) -> int:
    return int(os.environ.get("FAERS_FETCH_RETRIES", "3")) if retries is None else retries


def is_current(remote: RemoteFile, data_dir: DataDir, *, session=None, retries: int | None = None) -> bool:
    """True when the landing copy of ``remote`` exists and the source has not changed it since."""
    entry = read_manifest(data_dir)["files"].get(remote.name)
    target = data_dir.landing / remote.name
    if not _unchanged_locally(target, entry):
        return False
    if _is_http(remote.url):
        head = _request(session or _session(), "HEAD", remote.url, retries=_retries(retries),
                        headers={"Accept-Encoding": "identity"})
        return _same_remote(entry, _validators(head))
    return _same_local_source(entry, Path(remote.url).stat())


def _same_local_source(entry: dict, st: os.stat_result) -> bool:
    return entry.get("source_size") == st.st_size and entry.get("source_mtime_ns") == st.st_mtime_ns


def fetch_one(remote: RemoteFile, data_dir: DataDir, *, session=None, progress: bool = True,
              retries: int | None = None, backoff: float = 1.0) -> dict | None:
    """Download one zip if new or changed; return its new manifest entry, or None when current."""
    retries = _retries(retries)
    data_dir.landing.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(data_dir)
    entry = manifest["files"].get(remote.name)
    if _is_http(remote.url):
        got = _fetch_http(session or _session(), remote, data_dir, entry, progress=progress, retries=retries,
                          backoff=backoff)
    else:
        got = _fetch_local(remote, data_dir, entry)
    if got is None:
        return None
    with _manifest_lock(data_dir):  # parallel (mapped) fetches update the same manifest
        manifest = read_manifest(data_dir)
        manifest["files"][remote.name] = got
        write_json(manifest, data_dir.landing_manifest)
    log.info("fetched %s (%s bytes, sha256 %s)", remote.name, f"{got['size']:,}", got["sha256"][:12])
    return got


@contextlib.contextmanager
def _manifest_lock(data_dir: DataDir):
    import fcntl

    with open(data_dir.landing / ".manifest.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _validators(resp) -> dict:
    return {"etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified"),
            "content_length": _int_or_none(resp.headers.get("Content-Length"))}


def _unchanged_locally(target: Path, entry: dict | None) -> bool:
    return (entry is not None and target.exists() and target.stat().st_size == entry.get("size")
            and target.stat().st_mtime_ns == entry.get("mtime_ns"))


def _entry(remote: RemoteFile, target: Path, **extra) -> dict:
    st = target.stat()
    return {"quarter": str(remote.quarter), "url": remote.url, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": sha256_file(target),
            "fetched_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **extra}


def _fetch_local(remote: RemoteFile, data_dir: DataDir, entry: dict | None) -> dict | None:
    src = Path(remote.url)
    target = data_dir.landing / remote.name
    st = src.stat()
    if _unchanged_locally(target, entry) and _same_local_source(entry, st):
        return None
    part = target.with_name(target.name + ".part")
    shutil.copyfile(src, part)
    _verify_zip(part, remote.name)
    os.replace(part, target)
    return _entry(remote, target, source_size=st.st_size, source_mtime_ns=st.st_mtime_ns)


def _fetch_http(session, remote: RemoteFile, data_dir: DataDir, entry: dict | None, *, progress: bool,
                retries: int, backoff: float) -> dict | None:
    target = data_dir.landing / remote.name
    head = _request(session, "HEAD", remote.url, retries=retries, backoff=backoff,
                    headers={"Accept-Encoding": "identity"})
    validators = _validators(head)
    if _unchanged_locally(target, entry) and _same_remote(entry, validators):
        return None
    part = target.with_name(target.name + ".part")
    for attempt in range(retries + 1):
        try:
            _download(session, remote, part, validators["content_length"], progress=progress,
                      retries=retries, backoff=backoff)
        except _Interrupted:
            if attempt == retries:
                raise
            time.sleep(backoff * 2**attempt)
            continue  # resume from what the .part holds
        try:
            _verify_zip(part, remote.name)
            break
        except SourceError:
            part.unlink(missing_ok=True)  # corrupt: start once more from scratch
            if attempt == retries:
                raise
    os.replace(part, target)
    return _entry(remote, target, **validators)


def _same_remote(entry: dict, validators: dict) -> bool:
    if validators["etag"] and entry.get("etag"):
        return validators["etag"] == entry["etag"]
    if validators["last_modified"] and entry.get("last_modified"):
        return (validators["last_modified"] == entry["last_modified"]
                and validators["content_length"] in (None, entry.get("size")))
    return validators["content_length"] is not None and validators["content_length"] == entry.get("size")


def _int_or_none(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


class _Interrupted(SourceError):
    """The transfer stopped early; the .part file keeps what arrived."""


def _download(session, remote: RemoteFile, part: Path, total: int | None, *, progress: bool,
              retries: int, backoff: float) -> None:
    import requests
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    if total is not None and have > total:
        part.unlink()
        have = 0
    headers = {"Accept-Encoding": "identity"}
    if have and (total is None or have < total):
        headers["Range"] = f"bytes={have}-"
    elif have and have == total:
        return  # complete .part from an interrupted run: verify and rename
    resp = _request(session, "GET", remote.url, stream=True, headers=headers, retries=retries, backoff=backoff)
    mode = "ab"
    if resp.status_code != 206:  # server ignored the range: start over
        have, mode = 0, "wb"
    bar = tqdm(total=total, initial=have, desc=f"fetch {remote.name}", unit="B", unit_scale=True,
               unit_divisor=1024, disable=None if progress else True, leave=False)
    try:
        with open(part, mode) as fh:
            for block in resp.iter_content(64 * 1024):  # small blocks: a cut loses at most one
                fh.write(block)
                bar.update(len(block))
    except requests.exceptions.RequestException as exc:
        raise _Interrupted(f"download of {remote.name} interrupted: {_short_reason(exc)} "
                          f"(run fetch again to resume)") from None
    finally:
        bar.close()
        resp.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Interrupted(f"{remote.name}: got {size:,} of {total:,} bytes (run fetch again to resume)")
