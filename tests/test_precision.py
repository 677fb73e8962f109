"""trainer.precision=auto and model.channels_last=auto: the mode follows the hardware (bf16 autocast +
channels_last with bf16 in the CPU, fp32 + channels_last on other x86 CPUs), explicit values win, the
run says which in one line and records it in summary.json, and a mode is deterministic."""
import csv
import json

import pytest
import torch
from omegaconf import OmegaConf

from alexlab import precision
from alexlab.config import validate
from alexlab.errors import ConfigError
from alexlab.module import AlexLabModule
from alexlab.train import run
from conftest import TINY, compose_cfg

SAPPHIRE_RAPIDS = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_tile": True,
                   "amx_bf16": True}
COOPER_LAKE_OR_ZEN4 = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bf16": True}
ZEN2 = {"architecture": "x86_64", "avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False}
GRAVITON3 = {"architecture": "aarch64", "neon": True, "bf16": True, "sve": True}
AUTO = ["trainer.precision=auto", "model.channels_last=auto"]


@pytest.fixture
def bf16_cpu(monkeypatch):
    """This process believes its CPU has AMX-BF16 (the run then really trains under bf16 autocast)."""
    monkeypatch.setattr(precision, "cpu_features", lambda: SAPPHIRE_RAPIDS)


@pytest.mark.parametrize("features,names", [(SAPPHIRE_RAPIDS, "AMX-BF16, AVX512-BF16"),
                                            (COOPER_LAKE_OR_ZEN4, "AVX512-BF16")])
def test_a_cpu_with_bf16_in_hardware_gets_bf16_autocast_and_channels_last(features, names):
    mode = precision.cpu_fast_mode(features, "AVX512")
    assert (mode.precision, mode.channels_last) == ("bf16-mixed", True)
    assert mode.line() == f"alexlab: bf16 autocast, channels_last (auto: CPU with hardware bf16, {names})"


def test_an_x86_cpu_without_bf16_hardware_gets_fp32_nchw():
    # channels_last is faster there but failed the same-science check (docs/PERFORMANCE.md, P8)
    mode = precision.cpu_fast_mode(ZEN2, "AVX2")
    assert (mode.precision, mode.channels_last) == ("32-true", False)
    assert mode.line() == "alexlab: fp32, NCHW (auto: CPU without hardware bf16, AVX2)"


def test_another_cpu_architecture_keeps_fp32_nchw_where_nothing_was_measured():
    mode = precision.cpu_fast_mode(GRAVITON3)
    assert (mode.precision, mode.channels_last) == ("32-true", False) and "aarch64" in mode.why


def test_torch_and_proc_cpuinfo_agree_on_this_cpus_bf16_hardware():
    cpuinfo = precision.Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo here")
    flags = precision.cpuinfo_flags(cpuinfo.read_text())
    assert flags, "no flags line read"
    torch_view = precision.cpu_features()
    for flag in precision.BF16_CPU_FEATURES:
        assert bool(torch_view.get(flag)) == bool(flags.get(flag)), flag


def test_without_torchs_capability_table_the_flags_of_proc_cpuinfo_decide(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16\n")
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    monkeypatch.setattr(precision, "CPUINFO", fake)
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    mode = precision.hardware_mode("cpu")
    assert (mode.precision, mode.channels_last) == ("bf16-mixed", True) and "AMX-BF16" in mode.why


def test_explicit_values_win_over_auto_and_precision_32_forces_fp32(bf16_cpu):
    def mode(*overrides):
        return precision.run_mode(compose_cfg(["trainer=cpu", *overrides]))

    assert (mode().precision, mode().channels_last, mode().automatic) == ("bf16-mixed", True, True)
    forced = mode("trainer.precision=32")
    assert (forced.precision, forced.channels_last) == ("32-true", True)
    assert forced.line() == ("alexlab: fp32, channels_last (auto: CPU with hardware bf16, AMX-BF16, AVX512-BF16; "
                             "trainer.precision=32 as set)")
    nchw = mode("model.channels_last=false")
    assert (nchw.precision, nchw.channels_last) == ("bf16-mixed", False)
    both = mode("trainer.precision=32-true", "model.channels_last=false")
    assert (both.precision, both.channels_last, both.automatic) == ("32-true", False, False)


def test_auto_on_a_gpu_is_bf16_and_channels_last_where_the_gpu_has_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    for has_bf16, expected in ((True, ("bf16-mixed", True)), (False, ("32-true", False))):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: has_bf16)
        mode = precision.run_mode(compose_cfg(["experiment=fmnist_quick"]))  # trainer.accelerator=auto: the GPU
        assert (mode.precision, mode.channels_last) == expected and "NVIDIA H200" in mode.why


def test_the_cpu_preset_and_the_demo_say_auto_and_the_gpu_presets_stay_explicit():
    for preset in (["trainer=cpu"], ["experiment=fmnist_quick"]):
        cfg = compose_cfg(preset)
        assert (cfg.trainer.precision, cfg.model.channels_last) == ("auto", "auto"), preset
        validate(cfg)
    for preset in ("gpu", "ddp"):
        assert compose_cfg([f"trainer={preset}"]).trainer.precision == "bf16-mixed"
    assert compose_cfg([]).trainer.precision == "32-true" and compose_cfg([]).model.channels_last is False


@pytest.mark.parametrize("override,valid", [("model.channels_last=maybe", "false, true, auto"),
                                            ("trainer.precision=fast", "bf16-true, auto")])
def test_a_bad_mode_value_fails_in_one_line_naming_the_key(override, valid):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg([override]))
    assert str(err.value).startswith(override.split("=")[0]) and valid in str(err.value)


def spy_training_steps(monkeypatch) -> list:
    """(autocast on, autocast dtype, input channels_last) of every training step."""
    seen, original = [], AlexLabModule.training_step

    def training_step(self, batch, batch_idx):
        x = batch[0]
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                     x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(AlexLabModule, "training_step", training_step)
    return seen


@pytest.mark.parametrize("overrides,ran,precision_used,line", [
    (AUTO, (True, torch.bfloat16, True), "bf16-mixed",
     "alexlab: bf16 autocast, channels_last (auto: CPU with hardware bf16, AMX-BF16, AVX512-BF16)"),
    (["trainer.precision=32", "model.channels_last=auto"], (False, torch.bfloat16, True), "32-true",
     "alexlab: fp32, channels_last (auto: CPU with hardware bf16, AMX-BF16, AVX512-BF16; trainer.precision=32 as set)"),
    (["trainer.precision=32-true", "model.channels_last=false"], (False, torch.bfloat16, False), "32-true", None),
], ids=["auto on a bf16 CPU", "precision 32 forced, layout auto", "both set: nothing chosen, no line"])
def test_a_run_trains_in_the_chosen_mode_says_so_once_and_records_it(bf16_cpu, monkeypatch, capsys, tmp_path,
                                                                      overrides, ran, precision_used, line):
    seen = spy_training_steps(monkeypatch)
    run(compose_cfg(TINY + overrides, tmp_path))
    assert set(seen) == {ran} and len(seen) == 2 * 3  # 96 images in batches of 32, 2 epochs
    said = [text for text in capsys.readouterr().out.splitlines() if "(auto:" in text or "as set)" in text]
    assert said == ([line] if line else [])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["precision_used"], summary["channels_last_used"]) == (precision_used, ran[2])
    config = OmegaConf.load(tmp_path / "run" / "config.yaml")  # what was asked, `auto` included
    assert all(str(OmegaConf.select(config, key)).lower() == value for key, value in (o.split("=") for o in overrides))


def metrics_without_timing(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in ("epoch_time_s", "images_per_s")} for row in csv.DictReader(f)]


@pytest.mark.parametrize("overrides", [AUTO, ["trainer.precision=bf16-mixed", "model.channels_last=true"]],
                         ids=["the mode this machine picks", "bf16 autocast + channels_last"])
def test_the_same_seed_and_threads_give_an_identical_metrics_csv_within_a_mode(tmp_path, overrides):
    rows, modes = [], set()
    for attempt in ("first", "second"):
        cfg = compose_cfg(TINY + overrides + ["data.num_train=64"], tmp_path)  # bf16 is emulated here: keep it short
        cfg.paths.run_dir = str(tmp_path / attempt)
        run(cfg)
        rows.append(metrics_without_timing(tmp_path / attempt))
        summary = json.loads((tmp_path / attempt / "summary.json").read_text())
        modes.add((summary["precision_used"], summary["channels_last_used"]))
    expected = precision.run_mode(cfg)  # auto: what this machine picks (fp32 NCHW on an AVX2 CPU)
    assert modes == {(expected.precision, expected.channels_last)} and len(rows[0]) == 2
    assert rows[0] == rows[1]
