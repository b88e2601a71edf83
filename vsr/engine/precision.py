"""Which precision each SRCNN layer runs in: the `--precision` policy.

Contract: `layer_plan(model, precision, device)` turns a `--precision` choice into one dtype name per
convolution ("fp32", "bf16" or "fp16"); `label(plan)` names a plan for people and engine identities.

- On a GPU: fp16 (the default, `auto`) or fp32, the same for every layer. bf16 is a CPU precision here.
- On the CPU: `fp32` everywhere; `bf16` everywhere (oneDNN must support bf16 on this CPU; without native
  bf16 it is emulated and slower, which a notice says); `auto` (the default) uses bf16 where the CPU has
  native bf16 (`cpu_bf16()["native"]`: AVX512_BF16 or AMX-BF16) for exactly the layers recorded for these
  weights in `cpu_precision.json` beside the shipped weights, and fp32 elsewhere: on CPUs without native
  bf16, and for weights with no record (a model of your own: run `python bench/cpu_precision.py --weights`).
  A record is keyed by `vsr.model.srcnn.weights_hash`, so a retrained file of the same name has none.
- `cpu_precision.json` is written by `bench/cpu_precision.py`: for each shipped model and scale it measures
  Set5 Y-PSNR (the `vsr eval --no-ensemble` protocol) with each subset of layers in bf16 and the time of a
  1080p frame, and records as `auto` (`choose_auto`) the fastest subset that costs at most `MAX_LOSS_DB`
  against fp32, if it is at least `MIN_SPEEDUP` times as fast as fp32 (else fp32).
  It is read from `$VSR_WEIGHTS` (if set) and from the repository's `weights/`, the first record found wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch

from vsr.errors import BackendError
from vsr.model.weights import SHIPPED_WEIGHTS, weights_dir

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_LOSS_DB = 0.01  # what `auto` may cost on Set5 against fp32
MIN_SPEEDUP = 1.05  # what bf16 must gain over fp32 for `auto` to take it (less is within timing noise)
RECORD = "cpu_precision.json"
LAYERS = ("conv1", "conv2", "conv3")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Notice = Callable[[str], None]


@lru_cache(maxsize=1)
def cpu_bf16() -> dict:
    """What this CPU offers for bf16: `avx512_bf16` and `amx_bf16` (instruction sets, from torch's cpuinfo where
    this torch has `torch.cpu.get_capabilities`, else from /proc/cpuinfo's flags), `native` (either of them), and
    `onednn` (oneDNN runs bf16 convolutions here at all, natively or emulated on AVX-512)."""
    flags: dict = {}
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        try:
            flags = dict(caps())
        except Exception:  # noqa: BLE001 - cpuinfo failed to initialise: fall back to the flags file
            flags = {}
    if not flags:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
        names = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
        flags = {"avx512_bf16": "avx512_bf16" in names, "amx_bf16": "amx_bf16" in names}
    avx512_bf16, amx_bf16 = bool(flags.get("avx512_bf16")), bool(flags.get("amx_bf16"))
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        onednn = bool(check()) if check is not None else torch.backends.mkldnn.is_available()
    except Exception:  # noqa: BLE001 - an op this torch does not register
        onednn = torch.backends.mkldnn.is_available()
    return {"avx512_bf16": avx512_bf16, "amx_bf16": amx_bf16, "native": avx512_bf16 or amx_bf16, "onednn": onednn}


def _record_paths() -> list[Path]:
    paths = [weights_dir() / RECORD, SHIPPED_WEIGHTS / RECORD]
    return list(dict.fromkeys(p.resolve() for p in paths))


@lru_cache(maxsize=4)
def _records(paths: tuple[Path, ...]) -> dict:
    """weights hash -> record, from the first file that has it."""
    found: dict = {}
    for path in paths:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        models = doc.get("models") if isinstance(doc, dict) else None
        for record in (models or {}).values() if isinstance(models, dict) else ():
            layers = record.get("auto_bf16_layers") if isinstance(record, dict) else None
            if isinstance(layers, list) and set(layers) <= set(LAYERS):  # a malformed record is no record
                found.setdefault(record.get("weights_hash"), record)
    return found


def record_for(model) -> dict | None:
    """The measurements `bench/cpu_precision.py` recorded for these weights, or None."""
    from vsr.model.srcnn import weights_hash

    return _records(tuple(_record_paths())).get(weights_hash(model))


def recorded_layers(model) -> tuple[str, ...] | None:
    """The layers recorded as bf16 under `auto` for these weights (names from `LAYERS`), or None: no record."""
    record = record_for(model)
    return None if record is None else tuple(record["auto_bf16_layers"])


def recorded_delta(model) -> float | None:
    """The recorded Set5 Y-PSNR change of the `auto` plan against fp32 (dB), or None: no record."""
    record = record_for(model)
    return None if record is None else record.get("auto_set5_delta_db")


def check_plan(plan: tuple[str, ...], device: torch.device) -> None:
    """Raise `BackendError` (one line) when `device` cannot run a dtype of `plan`: fp16 off CUDA, bf16 on CUDA, or
    bf16 on a CPU whose oneDNN has no bf16 convolutions (e.g. a worker on another machine)."""
    if device.type == "cuda" and "bf16" in plan:
        raise BackendError("--precision bf16 is a CPU precision in vsr; use auto (fp16) or fp32 on a GPU")
    if device.type != "cuda" and "fp16" in plan:
        raise BackendError("--precision fp16 needs a CUDA GPU; use auto, fp32 or bf16 on the CPU")
    if device.type != "cuda" and "bf16" in plan and not cpu_bf16()["onednn"]:
        raise BackendError("this CPU cannot run bf16 convolutions (oneDNN needs AVX-512 or newer); use --precision fp32")


def layer_plan(model, precision: str | None, device: torch.device, notice: Notice = lambda text: None) -> tuple[str, ...]:
    """One dtype name per convolution for `precision` (None = auto) on `device` (see the module contract)."""
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        plan = (precision,) * len(LAYERS)
        check_plan(plan, device)
        if precision == "bf16" and not cpu_bf16()["native"]:
            notice("this CPU has no native bf16 (AVX512_BF16 or AMX); bf16 is emulated and slower than fp32")
        return plan
    if device.type == "cuda":
        return ("fp16",) * len(LAYERS)
    cpu = cpu_bf16()
    if not (cpu["native"] and cpu["onednn"]):
        return ("fp32",) * len(LAYERS)
    bf16 = recorded_layers(model) or ()
    return tuple("bf16" if name in bf16 else "fp32" for name in LAYERS)


def choose_auto(subsets: list[dict]) -> dict:
    """The `auto` choice among measured subsets (dicts with "bf16_layers", "set5_delta_db", "frame_s"; the
    fp32 one has no bf16 layers): the fastest within `MAX_LOSS_DB`, if `MIN_SPEEDUP` times as fast as fp32."""
    fp32 = next(s for s in subsets if not s["bf16_layers"])
    best = min((s for s in subsets if abs(s["set5_delta_db"]) <= MAX_LOSS_DB), key=lambda s: s["frame_s"])
    return best if best["frame_s"] * MIN_SPEEDUP <= fp32["frame_s"] else fp32


def label(plan: tuple[str, ...]) -> str:
    """A plan's name: "fp32", "bf16" or "fp16" when uniform; "bf16 conv2" for a CPU mix (its bf16 layers, the rest
    fp32); any other mix by its layers, e.g. "fp32/fp16/fp32"."""
    if len(set(plan)) == 1:
        return plan[0]
    if "bf16" not in plan:
        return "/".join(plan)
    return "bf16 " + "+".join(name for name, dtype in zip(LAYERS, plan, strict=True) if dtype == "bf16")
