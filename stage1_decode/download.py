"""Download the Deep Image Reconstruction fMRI files (figshare collection 7033577), checked.

For every file the experiment needs (each subject's training and test BData file, and the
two image lists), the download:

1. looks up the publisher's size and MD5 in figshare's public API (the collection's articles,
   then each article's files), and keeps them in ``<data.root>/.download/manifest.json``;
2. skips a file already in place with that size and MD5;
3. otherwise downloads to ``<name>.part``, resuming a partial one with an HTTP ``Range``
   request (and retrying an interrupted transfer from where it stopped), with a progress bar;
4. checks size and MD5, then renames ``.part`` to the final name; a mismatch deletes the
   ``.part`` file and stops with one line. A file under its final name is always complete.

Python's ``urllib`` does the HTTP (no extra dependency); the addresses are configurable
(``download.*``), which is how the tests serve everything from 127.0.0.1.

``download_verb`` is stage 1's ``download`` verb: it refuses a config whose ``data.source`` is not
``bdata``, then calls ``download``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING

from shared.config import Config
from shared.errors import UserError

if TYPE_CHECKING:
    from shared.datasets import DataSource

log = logging.getLogger(__name__)

# figshare file ids (../shared/DESIGN.md): subject -> (training, test) BData; then the image lists
DIR_BDATA = {"sub-01": (14830643, 14830631), "sub-02": (14830712, 14830697), "sub-03": (14830862, 14830856)}
DIR_IMAGE_LISTS = {"train": 14830601, "test": 14876738}
CHUNK = 1 << 20


@dataclass
class Wanted:
    file_id: int
    dest: Path


def wanted_files(src: DataSource) -> list[Wanted]:
    """The DIR files this data section reads, where it reads them."""
    from shared.datasets import bdata_path, split_files

    out = []
    for subject in src.data.subjects:
        if subject not in DIR_BDATA:
            raise UserError(f"subject {subject!r} is not in the Deep Image Reconstruction set; the download knows "
                            f"{', '.join(DIR_BDATA)}")
        train_id, test_id = DIR_BDATA[subject]
        out.append(Wanted(train_id, bdata_path(src, subject, "train")))
        if "natural" in src.data.test:
            out.append(Wanted(test_id, bdata_path(src, subject, "natural")))
    out.append(Wanted(DIR_IMAGE_LISTS["train"], src.root / src.data.train.image_list))
    if "natural" in src.data.test:
        out.append(Wanted(DIR_IMAGE_LISTS["test"], src.root / split_files(src, "natural").image_list))
    return out


def _get_json(url: str, timeout: float):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read().decode())
    except (urllib.error.URLError, HTTPException, socket.timeout, json.JSONDecodeError, OSError) as exc:
        raise UserError(f"cannot read {url} ({exc}); check the network (or download.api), then rerun") from None


def publisher_manifest(cfg, ids: set[int]) -> dict[int, dict]:
    """``{file id: {"name", "size", "md5", "url"}}`` from figshare's API (cached beside the data)."""
    d = cfg.download
    cache = cfg.data_root / ".download" / "manifest.json"
    known = {int(k): v for k, v in json.loads(cache.read_text()).items()} if cache.is_file() else {}
    if ids <= set(known):
        return known
    articles = _get_json(f"{d.api}/collections/{d.collection}/articles?page_size=1000", d.timeout)
    for article in articles:
        for f in _get_json(f"{d.api}/articles/{article['id']}/files", d.timeout):
            known[int(f["id"])] = {"name": f["name"], "size": int(f["size"]),
                                   "md5": f.get("computed_md5") or f.get("supplied_md5") or "",
                                   "url": f.get("download_url") or d.files_url.format(id=f["id"])}
        if ids <= set(known):
            break
    missing = sorted(ids - set(known))
    if missing:
        raise UserError(f"figshare collection {d.collection} lists no file {missing[0]}; check download.collection")
    from shared.runs import atomic_write_json

    atomic_write_json(cache, {str(k): v for k, v in known.items()})
    return known


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, part: Path, size: int, timeout: float, retries: int, bar) -> None:
    """Fill ``part`` up to ``size`` bytes, resuming with Range requests after each interruption."""
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if have >= size:
            return
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                if have and r.status != 206:  # the server ignored the range: start again
                    have = 0
                    part.unlink(missing_ok=True)
                    bar.reset(total=size)
                with open(part, "ab") as fh:
                    while block := r.read(CHUNK):
                        fh.write(block)
                        bar.update(len(block))
            if part.stat().st_size >= size:
                return
            raise HTTPException("connection closed early")
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # nothing left to send: the .part is complete (or too long; the check decides)
                return
            if exc.code >= 500 and attempt < retries:  # a passing server error: try again
                attempt += 1
                log.info("%s: HTTP %d, retrying", url, exc.code)
                time.sleep(min(2 ** attempt * 0.1, 5))
                continue
            raise UserError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}; rerun later (the partial "
                            f"file {part} is kept and resumed)") from None
        except (urllib.error.URLError, HTTPException, socket.timeout, ConnectionError, OSError) as exc:
            attempt += 1
            if attempt > retries:
                raise UserError(f"downloading {url} was interrupted {attempt} times ({exc}); rerun to resume from "
                                f"{part.stat().st_size if part.exists() else 0} bytes (kept in {part})") from None
            log.info("transfer of %s interrupted (%s); resuming from byte %d", part.name, exc,
                     part.stat().st_size if part.exists() else 0)
            time.sleep(min(2 ** attempt * 0.1, 5))


def download(cfg) -> list[Path]:
    """Download (or check) every file the config reads; returns their paths."""
    from tqdm import tqdm

    from shared.datasets import DataSource

    wanted = wanted_files(DataSource.of(cfg))
    manifest = publisher_manifest(cfg, {w.file_id for w in wanted})
    done = []
    for w in wanted:
        meta = manifest[w.file_id]
        dest, part = w.dest, w.dest.with_name(w.dest.name + ".part")
        if dest.is_file() and dest.stat().st_size == meta["size"] and (not meta["md5"] or md5_of(dest) == meta["md5"]):
            log.info("%s: already downloaded and checked", dest)
            done.append(dest)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        log.info("%s <- figshare file %d (%s, %.1f MB)%s", dest, w.file_id, meta["name"], meta["size"] / 1e6,
                 f", resuming at {have / 1e6:.1f} MB" if have else "")
        with tqdm(total=meta["size"], initial=have, unit="B", unit_scale=True, desc=dest.name) as bar:
            _fetch(meta["url"], part, meta["size"], cfg.download.timeout, cfg.download.retries, bar)
        got_size = part.stat().st_size
        got_md5 = md5_of(part) if meta["md5"] else ""
        if got_size != meta["size"] or got_md5 != meta["md5"]:
            part.unlink()
            raise UserError(f"{meta['name']} (figshare file {w.file_id}) arrived with size {got_size} and MD5 "
                            f"{got_md5 or '-'} but figshare lists {meta['size']} and {meta['md5'] or '-'}; the corrupt "
                            f"download was deleted, rerun to fetch it again")
        os.replace(part, dest)
        done.append(dest)
    log.info("%d files in place under %s", len(done), cfg.data_root)
    return done


def download_verb(cfg: Config) -> None:
    if cfg.data.source != "bdata":
        raise UserError(f"'data.source' is {cfg.data.source!r}; the download fetches the real Deep Image "
                        f"Reconstruction files, so use a config with data.source=bdata (e.g. configs/dir_real.yaml)")
    download(cfg)
