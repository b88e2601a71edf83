"""vsr.engine.tensorrt's build and save calls against fake torch_tensorrt modules, one per release family (2.4 to 2.14).

Each fake's `compile` and `save` enforce that family's argument rules as its source does. Citations are to the
wheels (`pip download --no-deps torch-tensorrt==X`), paths inside the wheel:
- D = torch_tensorrt/dynamo/_defaults.py, C = torch_tensorrt/dynamo/_compiler.py, T = torch_tensorrt/_compile.py,
  I = torch_tensorrt/dynamo/conversion/_TRTInterpreter.py, V = torch_tensorrt/_Device.py.
- Weak typing, 2.4-2.9: FP16 kernels only if torch.half is in enabled_precisions (I:242-243 in 2.4, I:272-273
  in 2.6); the top-level compile defaults enabled_precisions to {float32} (T:192-196 in 2.4).
- 2.6-2.9: `use_explicit_typing` exists, default False (D:42 in 2.6, D:49 in 2.8); if True, enabled_precisions
  other than {float32} raise AssertionError (C:568-574 in 2.6, C:593-600 in 2.8).
- 2.10-2.12: default True (D:49 in 2.10, D:52 in 2.12): enabled_precisions={half} raises (C:632-639 in 2.10,
  C:671-678 in 2.12); the network is strongly typed, so a half model gives an FP16 engine.
- 2.13-2.14: neither parameter in dynamo.compile (C); the top-level compile takes enabled_precisions and drops
  it (T:247 "not used for the Dynamo path", T:342-346 in 2.13); always strongly typed (I:93-97 in 2.13).
- Device (V:130-149): None means torch.cuda.current_device(); a torch.device without an index ends in
  torch.device(None) (TypeError); the string "cuda" fails to parse (IndexError); "cuda:N" and torch.device
  ("cuda", N) work. No release sets the CUDA device for the build (the builder uses the current one).
- TF32: BuilderFlag.TF32 is cleared only with disable_tf32=True (I:257 in 2.4 ... I:329 in 2.14).
- save (T): `save(module, file_path, *, output_format="exported_program", inputs=None, retrace=...)`; 2.4-2.7 have
  no **kwargs (an unknown keyword is a TypeError); inputs are required in 2.4/2.5 and wherever retrace=True,
  the default from 2.10 (T:609 in 2.10).
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass

import pytest
import torch

from vsr.engine import tensorrt as trt
from vsr.engine.base import _Valid
from vsr.media.atomic import temp_path

from .test_model import make_model

FAMILIES = {
    "2.4": {"version": "2.4.0", "typing": None, "save_kwargs": False, "save_retrace": False, "save_needs_inputs": True},
    "2.6": {"version": "2.6.1", "typing": False, "save_kwargs": False, "save_retrace": False, "save_needs_inputs": False},
    "2.8": {"version": "2.9.0", "typing": False, "save_kwargs": True, "save_retrace": False, "save_needs_inputs": False},
    "2.10": {"version": "2.12.1", "typing": True, "save_kwargs": True, "save_retrace": True, "save_needs_inputs": True},
    "2.13": {"version": "2.14.0", "typing": "removed", "save_kwargs": True, "save_retrace": True, "save_needs_inputs": True},
}


@dataclass
class FakeEngine:
    fp16: bool
    tf32: bool
    device_index: int


class Input:
    def __init__(self, shape, dtype=torch.float32):
        self.shape, self.dtype = list(shape), dtype


def _device_index(device) -> int:
    """torch_tensorrt._Device.Device._from(device) (V:130-149), then .to(torch.device)."""
    if device is None:
        return 0  # torch.cuda.current_device(): the fake machine's current device
    if isinstance(device, torch.device):
        if device.type != "cuda":
            raise ValueError("Not a CUDA device")
        if device.index is None:
            raise TypeError("torch.device() received an invalid combination of arguments - got (NoneType)")
        return device.index
    if isinstance(device, str):
        spec = device.split(":")
        if len(spec) == 1:
            raise IndexError("list index out of range")
        return int(spec[1])
    raise TypeError(f"unsupported device {device!r}")


def fake_torch_tensorrt(family: str) -> types.ModuleType:
    rules = FAMILIES[family]
    typing = rules["typing"]
    tt = types.ModuleType("torch_tensorrt")
    tt.__version__ = rules["version"]
    tt.Input = Input
    dynamo = types.ModuleType("torch_tensorrt.dynamo")

    # dynamo.compile's signature as the family has it (only the parameters that matter here, plus the common ones).
    params = [
        inspect.Parameter("exported_program", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
        inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, default=None),
        inspect.Parameter("disable_tf32", inspect.Parameter.KEYWORD_ONLY, default=False),
        inspect.Parameter("min_block_size", inspect.Parameter.KEYWORD_ONLY, default=5),
    ]
    if typing != "removed":
        params.append(inspect.Parameter("enabled_precisions", inspect.Parameter.KEYWORD_ONLY, default={torch.float32}))
    if typing in (False, True):
        params.append(inspect.Parameter("use_explicit_typing", inspect.Parameter.KEYWORD_ONLY, default=typing))
    params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    signature = inspect.Signature(params)

    def dynamo_compile(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        unknown = set(a["kwargs"]) - {"ir"}
        if unknown:  # the real one ignores them silently: a typo would do nothing, so the fake refuses
            raise AssertionError(f"torch-tensorrt {tt.__version__} has no compile argument {sorted(unknown)}")
        precisions = set(a.get("enabled_precisions", {torch.float32}))
        explicit = a.get("use_explicit_typing", typing == "removed")
        if explicit and not (len(precisions) == 1 and torch.float32 in precisions):
            raise AssertionError(
                "use_explicit_typing was set to True, however found that enabled_precisions was also specified "
                f"(saw: {precisions}). enabled_precisions should not be used when use_explicit_typing=True"
            )
        model_dtype = next(a["exported_program"].parameters()).dtype
        input_dtype = a["inputs"][0].dtype
        if input_dtype != model_dtype:
            raise AssertionError(f"Input dtype {input_dtype} differs from the model's {model_dtype}")
        fp16 = model_dtype == torch.float16 if explicit else torch.float16 in precisions
        return FakeEngine(fp16=fp16, tf32=not a["disable_tf32"], device_index=_device_index(a["device"]))

    dynamo_compile.__signature__ = signature
    dynamo.compile = dynamo_compile
    tt.dynamo = dynamo

    def compile(module, ir="default", inputs=None, enabled_precisions=None, **kwargs):  # noqa: A001 - T's compile
        if ir != "dynamo":
            raise AssertionError("vsr builds through the dynamo frontend")
        if typing == "removed":
            enabled_precisions = None  # T:247, T:342-346 (2.13): accepted and not passed on
        else:
            kwargs["enabled_precisions"] = enabled_precisions if enabled_precisions is not None else {torch.float32}
        return dynamo_compile(module, inputs, **kwargs)

    tt.compile = compile

    def save(module, file_path, *, output_format="exported_program", inputs=None, retrace=rules["save_retrace"], **kw):
        if kw and not rules["save_kwargs"]:
            raise TypeError(f"save() got an unexpected keyword argument {next(iter(kw))!r}")
        if output_format != "exported_program":
            raise AssertionError("vsr saves ExportedPrograms")
        if inputs is None and (retrace or rules["save_needs_inputs"]):
            raise ValueError("Provided model is a torch.fx.GraphModule and retrace is True, however the inputs are empty")
        if not str(file_path).endswith(".pt2"):
            raise AssertionError("torch.export warns for every file not ending in .pt2")
        saved.append((module, file_path, inputs))

    saved: list = []
    tt.save, tt.saved = save, saved
    return tt


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_build_and_save_pass_every_release_family(family, precision):
    tt = fake_torch_tensorrt(family)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    module = _Valid(make_model("9-1-5").to(dtype)).eval()
    engine = trt.compile_engine(tt, module, (1, 1, 40, 48), precision, torch.device("cuda", 1))
    assert engine.fp16 == (precision == "fp16"), "the engine is not in the precision asked for"
    assert engine.tf32 == (precision == "fp16"), "an fp32 engine must not use TF32"
    assert engine.device_index == 1, "built for the wrong GPU"
    path = str(temp_path(__import__("pathlib").Path("/tmp/engines/srcnn-9-1-5-1x1x40x48-fp16-key.pt2")))
    trt.save_engine(tt, engine, path, torch.zeros(1, 1, 40, 48, dtype=dtype))
    assert len(tt.saved) == 1


def test_the_fakes_reject_the_old_call():
    """The call vsr made before (enabled_precisions always, no device) fails where the source says it does."""

    def old_call(tt, module, dtype):
        return tt.compile(
            module, ir="dynamo", inputs=[tt.Input(shape=[1, 1, 8, 8], dtype=dtype)], enabled_precisions={dtype}, min_block_size=1
        )

    module = _Valid(make_model("9-1-5").half()).eval()
    with pytest.raises(AssertionError, match="enabled_precisions should not be used"):
        old_call(fake_torch_tensorrt("2.10"), module, torch.float16)
    assert old_call(fake_torch_tensorrt("2.13"), module, torch.float16).device_index == 0  # not cuda:1 when asked
    assert old_call(fake_torch_tensorrt("2.6"), module, torch.float16).fp16
    with pytest.raises(TypeError):
        fake_torch_tensorrt("2.6").compile(
            module, ir="dynamo", inputs=[Input([1, 1, 8, 8], torch.float16)], device=torch.device("cuda")
        )
    with pytest.raises(IndexError):
        fake_torch_tensorrt("2.6").compile(module, ir="dynamo", inputs=[Input([1, 1, 8, 8], torch.float16)], device="cuda")


def test_build_settings_are_part_of_the_cache_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: types.SimpleNamespace(name="GPU", major=9, minor=0))
    monkeypatch.setattr(trt, "_import", lambda: None)
    key = trt.engine_key("h", (1, 1, 8, 8), "fp16", torch.device("cuda", 0))
    monkeypatch.setattr(trt, "BUILD_SETTINGS", trt.BUILD_SETTINGS + 1)
    assert trt.engine_key("h", (1, 1, 8, 8), "fp16", torch.device("cuda", 0)) != key


def test_only_engines_of_this_user_alone_are_loaded(tmp_path):
    folder = tmp_path / "engines"
    folder.mkdir(mode=0o700)
    engine = folder / "e.pt2"
    engine.write_bytes(b"x")
    engine.chmod(0o644)
    assert trt._trusted(engine)
    engine.chmod(0o666)
    assert not trt._trusted(engine)
    engine.chmod(0o644)
    folder.chmod(0o777)
    assert not trt._trusted(engine)
