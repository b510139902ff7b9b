"""The download verb against a local HTTP server on 127.0.0.1 that plays figshare: its API lists
sizes and MD5s, its file server honours Range requests, cuts a transfer short or corrupts a file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from stage1_decode.download import DIR_BDATA, DIR_IMAGE_LISTS


class Figshare:
    """A fake figshare: ``files`` id -> bytes; ``cut`` ids send half their bytes on the first request;
    ``corrupt`` ids serve other bytes than the API's MD5 describes."""

    def __init__(self, files: dict[int, tuple[str, bytes]]):
        self.files, self.cut, self.corrupt, self.ranges = files, set(), set(), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, obj):
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                base = f"http://127.0.0.1:{owner.port}"
                if self.path.startswith("/v2/collections/7033577/articles"):
                    return self._json([{"id": 1}, {"id": 2}])
                if self.path.startswith("/v2/articles/"):
                    aid = int(self.path.split("/")[3])
                    ids = sorted(owner.files)[:3] if aid == 1 else sorted(owner.files)[3:]
                    return self._json([{"id": i, "name": owner.files[i][0], "size": len(owner.files[i][1]),
                                        "computed_md5": hashlib.md5(owner.files[i][1]).hexdigest(),
                                        "download_url": f"{base}/files/{i}"} for i in ids])
                if self.path.startswith("/files/"):
                    fid = int(self.path.split("/")[2])
                    data = owner.files[fid][1]
                    if fid in owner.corrupt:
                        data = data[:-10] + b"X" * 10
                    start = 0
                    rng = self.headers.get("Range")
                    if rng:
                        start = int(rng.split("=")[1].split("-")[0])
                        owner.ranges.append((fid, start))
                        self.send_response(206)
                        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    else:
                        self.send_response(200)
                    self.send_header("Content-Length", str(len(data) - start))
                    self.end_headers()
                    if fid in owner.cut:  # half, then the connection drops
                        owner.cut.discard(fid)
                        self.wfile.write(data[start:start + (len(data) - start) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(data[start:])
                    return
                self.send_error(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def figshare_files() -> dict[int, tuple[str, bytes]]:
    """Sub-01's two BData files (random bytes) and the two image lists, by figshare file id."""
    rng = np.random.default_rng(0)
    return {DIR_BDATA["sub-01"][0]: ("sub-01_train.h5", rng.bytes(3_000_000)),
            DIR_BDATA["sub-01"][1]: ("sub-01_test.h5", rng.bytes(700_000)),
            DIR_IMAGE_LISTS["train"]: ("train.tsv", b"n01443537_22563\t1\n" * 50),
            DIR_IMAGE_LISTS["test"]: ("test.tsv", b"n01443537_16\t1\n" * 5)}


@pytest.fixture
def figshare():
    server = Figshare(figshare_files())
    yield server
    server.server.shutdown()


def _config(tmp_path: Path, port: int) -> Path:
    cfg = {"data": {"source": "bdata", "root": str(tmp_path / "dir")},
           "download": {"api": f"http://127.0.0.1:{port}/v2", "timeout": 5, "retries": 3},
           "work_dir": str(tmp_path / "work"), "results_dir": str(tmp_path / "results")}
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _download(tmp_path: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stage1_decode", "download", "--config", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_interrupted_transfer_is_resumed_and_every_file_checked(tmp_path, figshare):
    train_id = DIR_BDATA["sub-01"][0]
    figshare.cut.add(train_id)
    r = _download(tmp_path, _config(tmp_path, figshare.port))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from byte" in r.stderr
    assert figshare.ranges and figshare.ranges[0][0] == train_id and figshare.ranges[0][1] > 0
    root = tmp_path / "dir"
    got = root / "sub-01_perceptionNaturalImageTraining_original_VC.h5"
    assert got.read_bytes() == figshare.files[train_id][1]
    assert (root / "sub-01_perceptionNaturalImageTest_original_VC.h5").read_bytes() == \
        figshare.files[DIR_BDATA["sub-01"][1]][1]
    assert (root / "image_list_training.tsv").is_file() and (root / "image_list_test.tsv").is_file()
    assert not list(root.glob("*.part"))
    again = _download(tmp_path, _config(tmp_path, figshare.port))
    assert again.returncode == 0 and again.stderr.count("already downloaded and checked") == 4


def test_a_partial_file_left_by_an_earlier_run_is_resumed(tmp_path, figshare):
    train_id = DIR_BDATA["sub-01"][0]
    root = tmp_path / "dir"
    root.mkdir()
    part = root / "sub-01_perceptionNaturalImageTraining_original_VC.h5.part"
    part.write_bytes(figshare.files[train_id][1][:1_000_000])
    r = _download(tmp_path, _config(tmp_path, figshare.port))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (train_id, 1_000_000) in figshare.ranges
    assert (root / part.name[:-5]).read_bytes() == figshare.files[train_id][1]


def test_a_corrupted_file_is_refused_and_never_left_under_its_name(tmp_path, figshare):
    test_id = DIR_BDATA["sub-01"][1]
    figshare.corrupt.add(test_id)
    r = _download(tmp_path, _config(tmp_path, figshare.port))
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and r.stderr.splitlines()[-1] == errors[0] and "MD5" in errors[0]
    assert "Traceback" not in r.stderr
    root = tmp_path / "dir"
    assert not (root / "sub-01_perceptionNaturalImageTest_original_VC.h5").exists()
    assert not list(root.glob("*.part"))
