"""`vsr data get`: the paper's datasets from a mirror or an archive, checked by SHA-256, resumable, one line offline.

Every download here is from a server on 127.0.0.1 that the test starts (no test reaches the internet); "offline" is
a proxy address where nothing listens.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from vsr.errors import InputError
from vsr.media.imageio import read_image, write_image
from vsr.train import download

from .conftest import smooth_image


class Server:
    """Serves a folder (or bytes by path) on 127.0.0.1 with HTTP Range support; can cut the first response short."""

    def __init__(self, root: Path | None = None, blobs: dict[str, bytes] | None = None, cut_after: int | None = None):
        self.root, self.blobs, self.cut_after = root, blobs or {}, cut_after
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                name = self.path.lstrip("/")
                if name in server.blobs:
                    data = server.blobs[name]
                else:
                    path = (server.root / name) if server.root else None
                    if path is None or not path.is_file():
                        self.send_error(404)
                        return
                    data = path.read_bytes()
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data) and rng:
                    self.send_error(416)
                    return
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None  # drop the connection mid-file, once
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("VSR_CACHE", str(folder))
    monkeypatch.delenv("VSR_DATA", raising=False)
    return folder


def sums(shared_data: Path) -> dict[str, str]:
    lines = (shared_data / "SHA256SUMS").read_text().split("\n")
    return {line.split()[1]: line.split()[0] for line in lines if line.strip()}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vsr(*args, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vsr", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)


def test_manifest_is_the_reference_data(shared_data):
    """The shipped manifest lists exactly the reference files, with their SHA256SUMS and recomputed pixel sums."""
    want = sums(shared_data)
    listed = {f"{name}/{f}": e for name in download.MANIFEST["datasets"] for f, e in download.MANIFEST["datasets"][name].items()}
    assert set(listed) == {k for k in want if not k.startswith("videos/")}
    for key, (file_sum, pixel_sum) in listed.items():
        assert file_sum == want[key], key
        assert pixel_sum == download.pixels_sha256(read_image(shared_data / key)), key


def test_pixels_sum_is_the_same_in_any_lossless_format(tmp_path):
    rgb = smooth_image(20, 24)
    grey = smooth_image(20, 24, channels=1)
    for img, other in ((rgb, np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])), (grey, np.dstack([grey] * 3))):
        write_image(tmp_path / "a.png", img)
        write_image(tmp_path / "b.bmp", other)
        assert download.pixels_sha256(read_image(tmp_path / "a.png")) == download.pixels_sha256(read_image(tmp_path / "b.bmp"))
    changed = rgb.copy()
    changed[3, 4, 1] ^= 1
    assert download.pixels_sha256(changed) != download.pixels_sha256(rgb)


def test_get_from_a_mirror_then_eval_without_vsr_data(shared_data, cache, tmp_path):
    """The issue's check: files whose SHA-256 match SHA256SUMS, then `vsr eval --data Set5` finds them."""
    server = Server(shared_data)
    env = {k: v for k, v in os.environ.items() if k != "VSR_DATA"} | {"VSR_CACHE": str(cache)}
    try:
        r = vsr("data", "get", "Set5", "--from", server.url, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        want = sums(shared_data)
        got = {f"Set5/{p.name}": sha(p) for p in (cache / "datasets" / "Set5").iterdir()}
        assert got == {k: v for k, v in want.items() if k.startswith("Set5/")}
        fetched = len(server.requests)
        r = vsr("data", "get", "Set5", "--from", server.url, env=env, cwd=tmp_path)  # all there: nothing downloaded
        assert r.returncode == 0 and len(server.requests) == fetched
    finally:
        server.close()
    r = vsr("eval", "--data", "Set5", "--scale", "3", "--arch", "9-1-5", "--no-ensemble", "--json", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '"dataset": "Set5"' in r.stdout


def test_offline_is_one_line(cache, tmp_path):
    """No network (a proxy where nothing listens stands in for it): one line saying what to download and where."""
    dead = "http://127.0.0.1:1"
    env = os.environ | {"http_proxy": dead, "https_proxy": dead, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "no_proxy": ""}
    env["VSR_CACHE"] = str(cache)
    r = vsr("data", "get", "Set5", env=env, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsr: error: cannot download http://mmlab.ie.cuhk.edu.hk/"), r.stderr
    assert "SRCNN_train.zip" in lines[0] and str(cache / "datasets" / "Set5") in lines[0]
    assert not (cache / "datasets" / "Set5").exists()


def _authors_zip(shared_data: Path, names: dict[str, str]) -> bytes:
    """An archive laid out like the authors' SRCNN_train.zip: BMP images under SRCNN/<folder>/."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("SRCNN/generate_train.m", "% not an image\n")
        for dataset, folder in names.items():
            for png in sorted((shared_data / dataset).glob("*.png")):
                img = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
                z.writestr(f"SRCNN/{folder}/{png.stem}.bmp", cv2.imencode(".bmp", img)[1].tobytes())
    return buf.getvalue()


def test_archive_download_resumes_after_a_dropped_connection(shared_data, cache):
    blob = _authors_zip(shared_data, {"Set5": "Test/Set5", "Set14": "Test/Set14"})
    server = Server(blobs={"SRCNN_train.zip": blob}, cut_after=len(blob) // 3)
    url = server.url + "SRCNN_train.zip"
    try:
        with pytest.raises(InputError, match="closed after .* run the command again to resume"):
            download.get_dataset("Set5", url)
        part = cache / "datasets" / ".downloads" / "SRCNN_train.zip.part"
        assert part.stat().st_size == len(blob) // 3
        assert not (cache / "datasets" / "Set5").exists()  # nothing appears before it is complete and checked
        folder = download.get_dataset("Set5", url)
        assert server.requests[-1] == ("/SRCNN_train.zip", f"bytes={len(blob) // 3}-")  # resumed, not restarted
        for png in (shared_data / "Set5").glob("*.png"):  # BMP in, the same pixels out as PNG
            assert np.array_equal(read_image(folder / png.name), read_image(png))
        before = len(server.requests)
        download.get_dataset("Set14", url)  # the kept archive serves the next dataset
        assert len(server.requests) == before
        assert not download.missing("Set14")
    finally:
        server.close()


def test_an_archive_downloaded_by_hand(shared_data, cache, tmp_path):
    archive = tmp_path / "SRCNN_train.zip"
    archive.write_bytes(_authors_zip(shared_data, {"Set5": "Test/Set5"}))
    download.get_dataset("Set5", str(archive))
    assert not download.missing("Set5")
    with pytest.raises(InputError, match=r"lacks 14 of Set14's files"):
        download.get_dataset("Set14", str(archive))


def test_a_file_vsr_did_not_write_is_never_replaced(shared_data, cache):
    folder = cache / "datasets" / "Set5"
    folder.mkdir(parents=True)
    (folder / "head_GT.png").write_bytes(b"my own notes")
    with pytest.raises(InputError, match=r"head_GT.png is not Set5's head_GT.png .* move it away"):
        download.get_dataset("Set5", str(shared_data))
    assert (folder / "head_GT.png").read_bytes() == b"my own notes" and [p.name for p in folder.iterdir()] == ["head_GT.png"]


def test_wrong_files_are_refused_and_not_kept(shared_data, cache, tmp_path):
    """A mirror whose copy of an image has other pixels: an error naming it; the good files stay, that one is absent."""
    mirror = tmp_path / "mirror"
    (mirror / "Set5").mkdir(parents=True)
    for png in (shared_data / "Set5").glob("*.png"):
        (mirror / "Set5" / png.name).write_bytes(png.read_bytes())
    bad = read_image(shared_data / "Set5" / "bird_GT.png")
    bad[0, 0, 0] ^= 1
    write_image(mirror / "Set5" / "bird_GT.png", bad)
    with pytest.raises(InputError, match="is not Set5's bird_GT.png"):
        download.get_dataset("Set5", str(mirror))
    assert not (cache / "datasets" / "Set5" / "bird_GT.png").exists()
    assert [e.name for e in download.missing("Set5")] == ["bird_GT.png", "butterfly_GT.png", "head_GT.png", "woman_GT.png"]
    (mirror / "Set5" / "woman_GT.png").unlink()
    write_image(mirror / "Set5" / "bird_GT.png", read_image(shared_data / "Set5" / "bird_GT.png"))  # re-encoded: same pixels
    with pytest.raises(InputError, match=r"lacks 1 of Set5's files \(woman_GT.png\)"):
        download.get_dataset("Set5", str(mirror))
    assert [e.name for e in download.missing("Set5")] == ["woman_GT.png"]


def test_default_sources_are_checked_against_their_pinned_sha256(shared_data, cache, monkeypatch):
    """The default path (no --from): the authors' archives, each checked against its pinned SHA-256 before use; one
    that does not match is downloaded once more from the start, then it is an error, and the next archive is tried."""
    good = _authors_zip(shared_data, {"Set5": "Test/Set5"})
    server = Server(blobs={"changed.zip": b"another archive", "good.zip": good})
    digest = hashlib.sha256(good).hexdigest()
    try:
        monkeypatch.setattr(download, "ARCHIVES", ((server.url + "changed.zip", digest), (server.url + "good.zip", digest)))
        folder = download.get_dataset("Set5")
        assert [path for path, _ in server.requests] == ["/changed.zip", "/changed.zip", "/good.zip"]
        assert not download.missing("Set5") and folder == cache / "datasets" / "Set5"
        monkeypatch.setattr(download, "ARCHIVES", ((server.url + "changed.zip", digest),))
        with pytest.raises(InputError, match=r"changed.zip does not have the expected SHA-256"):
            download.get_dataset("Set14")
        assert not (cache / "datasets" / ".downloads" / "changed.zip").exists()
    finally:
        server.close()
