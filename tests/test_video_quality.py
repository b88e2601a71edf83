"""Video quality equals image quality: the same real frames gain as much over bicubic through both paths."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from vsr.engine.base import Upscaler
from vsr.media.color import rgb_to_ycbcr
from vsr.media.resize import imresize_uint8
from vsr.model.srcnn import load_weights
from vsr.model.weights import default_weights
from vsr.pipeline.images import upscale_image
from vsr.pipeline.video import upscale_video
from vsr.train.data import as_rgb, y_uint8
from vsr.train.evaluate import load_ground_truth, score_pair
from vsr.train.metrics import psnr

SCALE, SIZE = 3, 216  # frames are 216x216 centre crops (a multiple of 3) of Set5


def _frames(shared_data) -> list[np.ndarray]:
    out = []
    for _, img in load_ground_truth(shared_data / "Set5", SCALE):
        h, w = img.shape[:2]
        top, left = (h - SIZE) // 2, (w - SIZE) // 2
        out.append(as_rgb(img)[top : top + SIZE, left : left + SIZE])
    return out


def _write_lossless_yuv444(path, lr_frames: list[np.ndarray]) -> None:
    """LR RGB -> BT.601 studio YCbCr rounded to uint8 -> FFV1 yuv444p (lossless)."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("ffv1", rate=25)
        v.width, v.height, v.pix_fmt = lr_frames[0].shape[1], lr_frames[0].shape[0], "yuv444p"
        v.codec_context.color_range = 1
        v.codec_context.colorspace = 6
        for i, rgb in enumerate(lr_frames):
            ycc = np.clip(np.round(rgb_to_ycbcr(rgb / 255.0) * 255), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(ycc.transpose(2, 0, 1)), format="yuv444p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))


def _video_y(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray()[0] for f in c.decode(video=0)]  # yuv444p: planes x H x W


def test_video_gains_as_much_as_images(shared_data, tmp_path):
    upscaler = Upscaler(load_weights(default_weights(SCALE, "9-1-5")), "cpu")
    truth = _frames(shared_data)
    lr = [imresize_uint8(t, 1 / SCALE) for t in truth]

    image_gain = np.mean(
        [
            score_pair(upscale_image(x, SCALE, upscaler), t, SCALE)[0] - score_pair(upscale_image(x, SCALE, None), t, SCALE)[0]
            for x, t in zip(lr, truth, strict=True)
        ]
    )

    src = tmp_path / "lr.mkv"
    _write_lossless_yuv444(src, lr)
    upscale_video(src, tmp_path / "sr.mkv", SCALE, upscaler, codec="ffv1")
    upscale_video(src, tmp_path / "bicubic.mkv", SCALE, None, codec="ffv1")
    sr, bic = _video_y(tmp_path / "sr.mkv"), _video_y(tmp_path / "bicubic.mkv")
    assert len(sr) == len(bic) == len(truth) and sr[0].shape == (SIZE, SIZE)
    gains = []
    for s, b, t in zip(sr, bic, truth, strict=True):
        y_true = y_uint8(t).astype(np.float64)
        gains.append(psnr(s.astype(np.float64), y_true, SCALE) - psnr(b.astype(np.float64), y_true, SCALE))
    video_gain = float(np.mean(gains))
    assert image_gain > 0.5  # the shipped weights do restore detail on these crops
    print(f"Y-PSNR gain over bicubic: video {video_gain:.3f} dB, image {image_gain:.3f} dB")
    assert video_gain >= image_gain - 0.05, (video_gain, image_gain)
