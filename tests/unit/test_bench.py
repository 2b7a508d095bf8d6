"""The benchmark programs without a GPU: bench.run on CPU, torchtitan's TOML and log lines,
the ratio arithmetic, and the GPU-session commands' length."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from pathlib import Path

import pytest
from bench import torchtitan_compare as tc
from bench.profile_steps import kind_of
from bench.profile_steps import main as profile_main
from bench.run import (
    Proxy,
    allocator_setting,
    fit_layers,
    format_block,
    is_oom,
    main,
    planned_gib,
    use_allocator,
)

from recipes import metrics
from recipes.config import resolve_auto, validate
from recipes.models.llama import num_params

REPO = Path(__file__).resolve().parents[2]

# Seed 000 (torchtitan on 4 x p5.48xlarge, rank-prefixed) and seed 001 (GB200), verbatim.
SEED_000 = (
    "1: 2025-03-04 00:44:44,441 - root - INFO - step: 1990  loss:  3.4370  "
    "memory: 68.57GiB(86.69%)  tps: 6,785  mfu: 39.73%"
)
SEED_001 = (
    "step: 100  loss:  6.4277  grad_norm:  2.9062  memory: 158.61GiB(86.20%)  tps: 17,581  "
    "tflops: 1,018.20  mfu: 45.25%"
)
# torchtitan 0.2.2's own line (colours on), as its metrics.py prints it.
TITAN_022 = (
    "[titan] 2026-11-21 13:34:04,842 - root - INFO - \x1b[31mstep:  2  \x1b[32mloss:  8.10109  "
    "\x1b[33mgrad_norm:  1.4416  \x1b[36mmemory:  0.84GiB(3.50%)  \x1b[34mtps: 5,230  "
    "\x1b[36mtflops: 0.07  \x1b[35mmfu: 0.02%\x1b[39m"
)


# -- bench.run ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_run_prints_its_block_for_the_debug_model_on_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "")  # main() sets it; restored after the test
    out = tmp_path / "record.json"
    argv = ["--model", "llama31_debug", "--seq-len", "64", "--steps", "3", "--warmup", "1"]
    argv += ["--dtype", "fp32", "--output-dir", str(tmp_path), "--json", str(out), "--quiet"]
    assert main([*argv, "--", "cluster.accelerator=cpu"]) == 0
    block = capsys.readouterr().out
    for field in ("machine", "step time   : median", "tokens/s", "TFLOPS/GPU", "MFU"):
        assert field in block
    assert "peak memory" in block and "command     : " in block and "recipes.train" in block
    rec = json.loads(out.read_text())
    assert rec["valid"] and rec["steps"] == 3 and rec["steady_state_steps"] == 2
    assert rec["machine"]["torch"] and rec["machine"]["device"] == "cpu"
    # The run had the allocator setting (launch.sh's), as its manifest records.
    assert rec["manifest"]["env"]["PYTORCH_ALLOC_CONF"] == "expandable_segments:True"
    assert rec["machine"]["alloc_conf"] == "expandable_segments:True"
    assert "allocator expandable_segments:True" in block
    median = statistics.median(rec["step_times_s"][1:])
    assert rec["step_time_s"]["median"] == median
    expected = metrics.tokens_per_second(seq_len=64, global_batch_size=1, step_time_s=median)
    assert rec["at_median"]["tokens_per_s"] == pytest.approx(expected)
    # The figures at the mean step are the run's own summary figures.
    assert rec["at_mean"]["tokens_per_s"] == pytest.approx(rec["summary"]["tokens_per_s_mean"])
    assert rec["at_median"]["mfu"] is None  # no peak for a CPU
    assert format_block(rec) in block
    # The loop time (what torchtitan's tps times) holds the step and what runs between steps.
    assert rec["loop_time_s"]["median"] == statistics.median(rec["loop_times_s"][1:])
    assert all(a > b for a, b in zip(rec["loop_times_s"], rec["step_times_s"], strict=True))
    loop_tps = 64 / rec["loop_time_s"]["median"]
    assert rec["at_loop_median"]["tokens_per_s_per_gpu"] == pytest.approx(loop_tps)
    assert "loop time   : median" in block


def test_allocator_flag_sets_or_keeps_the_environment(monkeypatch):
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "max_split_size_mb:512")
    use_allocator("")  # --alloc-conf '': the environment's own setting stays
    assert os.environ["PYTORCH_ALLOC_CONF"] == "max_split_size_mb:512"
    use_allocator("expandable_segments:True")
    assert os.environ["PYTORCH_ALLOC_CONF"] == "expandable_segments:True"
    # What a run had: PYTORCH_ALLOC_CONF first, as torch reads them; None when unset.
    assert allocator_setting({"PYTORCH_CUDA_ALLOC_CONF": "a", "PYTORCH_ALLOC_CONF": "b"}) == "b"
    assert allocator_setting({"PYTORCH_CUDA_ALLOC_CONF": "a"}) == "a"
    assert allocator_setting({}) is None


def test_proxy_overrides_are_issue_6s_proxy():
    proxy = Proxy(layers=8, dtype="fp8", compile=True)
    overrides = proxy.overrides()
    for item in ("model=llama31_8b", "model.n_layers=8", "proxy=true", "dtype=fp8"):
        assert item in overrides
    assert {"trainer.seq_len=8192", "trainer.micro_batch_size=1", "backend.compile=true"} <= set(
        overrides
    )
    assert proxy.label() == "llama31_8b-L8-fp8-compile-native"
    megatron = Proxy(layers=4, backend="megatron").overrides()
    assert "backend=megatron" in megatron and not any("compile" in o for o in megatron)
    with pytest.raises(ValueError, match="backend=native"):
        Proxy(backend="megatron", compile=True).overrides()
    assert Proxy(extra=("trainer.lr=1e-3",)).overrides()[-1] == "trainer.lr=1e-3"


@pytest.mark.parametrize(
    "proxy",
    [
        Proxy(layers=8, compile=True),
        Proxy(layers=8, dtype="fp8", compile=True),
        Proxy(layers=8, dtype="fp8_rowwise", ac="selective"),
        Proxy(layers=4, backend="megatron"),
    ],
    ids=lambda p: p.label(),
)
def test_proxy_overrides_compose_and_validate(compose_cfg, proxy):
    cfg = compose_cfg(*proxy.overrides())
    resolve_auto(cfg, cuda_available=True)
    assert validate(cfg, world_size=1).world_size == 1
    assert cfg.model.n_layers == proxy.layers and cfg.trainer.seq_len == 8192


def test_layers_auto_takes_the_largest_planned_fit():
    proxy = Proxy(dtype="bf16")
    layers = fit_layers(proxy, capacity_gib=79.6, fraction=0.85)
    assert 1 <= layers < 32
    budget = 0.85 * 79.6
    assert planned_gib(Proxy(layers=layers)) <= budget < planned_gib(Proxy(layers=layers + 1))
    with pytest.raises(SystemExit, match="even 1 layer"):
        fit_layers(proxy, capacity_gib=10, fraction=0.85)


def test_out_of_memory_is_recognised_from_output_or_summary():
    assert is_oom("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate", None)
    reason = {"summary": {"invalid_reason": "OutOfMemoryError: CUDA out of memory"}}
    assert is_oom("", reason)
    assert not is_oom("RuntimeError: shapes do not match", {"summary": None})


# -- torchtitan's config ------------------------------------------------------------------------
def paths() -> dict:
    return {"tokenizer_dir": "/a/tok", "dataset_dir": "/a/c4_test", "dump_dir": "/a/dump"}


def test_titan_config_fp8_compile_selective():
    proxy = Proxy(layers=8, dtype="fp8", compile=True, ac="selective", steps=30)
    cfg = tc.titan_config(proxy, **paths())
    assert cfg["model"] == {
        "name": "llama3",
        "flavor": tc.FLAVOR,
        "hf_assets_path": "/a/tok",
        "converters": ["quantize.linear.float8"],
    }
    assert cfg["quantize"] == {"linear": {"float8": {"filter_fqns": ["output"]}}}
    training = cfg["training"]
    assert (training["seq_len"], training["local_batch_size"], training["global_batch_size"]) == (
        8192,
        1,
        1,
    )
    assert (training["steps"], training["dtype"], training["mixed_precision_param"]) == (
        30,
        "float32",
        "bfloat16",
    )
    assert (training["dataset"], training["dataset_path"]) == ("c4_test", "/a/c4_test")
    assert training["gc_freq"] == 50  # recipes' trainer.gc_every_n_steps
    assert cfg["compile"]["enable"] is True
    assert cfg["activation_checkpoint"] == {"mode": "selective", "selective_ac_option": "op"}
    assert cfg["experimental"]["custom_import"] == tc.FLAVOR_MODULE
    assert cfg["metrics"]["log_freq"] == 1 and cfg["checkpoint"]["enable"] is False


def test_titan_config_bf16_rowwise_and_refusals():
    bf16 = tc.titan_config(Proxy(layers=2), **paths())
    assert bf16["model"]["converters"] == [] and "quantize" not in bf16
    assert bf16["activation_checkpoint"] == {"mode": "none"} and not bf16["compile"]["enable"]
    rowwise = tc.titan_config(Proxy(layers=2, dtype="fp8_rowwise"), **paths())
    assert rowwise["quantize"]["linear"]["float8"]["recipe_name"] == "rowwise"
    with pytest.raises(ValueError, match="no torchtitan counterpart"):
        tc.titan_config(Proxy(dtype="fp8_delayed"), **paths())
    with pytest.raises(ValueError, match="backend=native"):
        tc.titan_config(Proxy(backend="megatron"), **paths())


def test_toml_text_reads_back_as_the_config():
    tomllib = pytest.importorskip("tomllib")
    cfg = tc.titan_config(Proxy(layers=8, dtype="fp8_rowwise", compile=True), **paths())
    text = tc.to_toml(cfg)
    assert "[quantize.linear.float8]" in text and "[training.dataloader]" in text
    assert tomllib.loads(text) == cfg


@pytest.mark.parametrize("model", ["llama31_debug", "llama31_8b", "llama31_70b", "llama31_405b"])
def test_titan_model_args_give_our_ffn_size(compose_cfg, model):
    m = compose_cfg(f"model={model}").model
    args = tc.titan_model_args(m)
    # torchtitan's FeedForward: hidden = int(2 * 4 * dim / 3), rounded up to multiple_of.
    hidden, multiple = int(2 * 4 * m.dim / 3), args["multiple_of"]
    assert multiple * ((hidden + multiple - 1) // multiple) == m.ffn_dim
    assert (args["n_layers"], args["n_kv_heads"], args["vocab_size"]) == (
        m.n_layers,
        m.n_kv_heads,
        m.vocab_size,
    )
    assert args["rope_scaling_args"]["original_max_position_embeddings"] == 8192
    source = tc.flavor_module(args)
    compile(source, tc.FLAVOR_MODULE, "exec")
    assert f"llama3_args[{tc.FLAVOR!r}]" in source


def test_titan_model_args_refuse_what_torchtitan_cannot_build(compose_cfg):
    m = compose_cfg("model=llama31_8b", "model.ffn_dim=4096").model
    with pytest.raises(ValueError, match="below torchtitan's minimum"):
        tc.titan_model_args(m)


def test_titan_flavor_builds_our_parameter_count(compose_cfg, tmp_path, monkeypatch):
    pytest.importorskip("torchtitan.models.llama3")
    import torch
    from torchtitan.models.llama3 import Transformer, llama3_args

    m = compose_cfg("model=llama31_8b", "model.n_layers=2").model
    module = tmp_path / f"{tc.FLAVOR_MODULE}.py"
    module.write_text(tc.flavor_module(tc.titan_model_args(m)))
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__(tc.FLAVOR_MODULE)
    with torch.device("meta"):
        model = Transformer(llama3_args[tc.FLAVOR])
    assert sum(p.numel() for p in model.parameters()) == num_params(m)


def test_assets_fit_the_vocabulary(tmp_path):
    assets = tc.write_assets(tmp_path, vocab_size=2048, docs=2, words_per_doc=50)
    vocab = json.loads((Path(assets["tokenizer_dir"]) / "tokenizer.json").read_text())
    assert max(vocab["model"]["vocab"].values()) == 2047
    lines = (Path(assets["dataset_dir"]) / "c4_sample.json").read_text().splitlines()
    assert len(lines) == 2 and len(json.loads(lines[0])["text"].split()) == 50
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(Path(assets["tokenizer_dir"]) / "tokenizer.json"))
    assert tok.encode("w0 w1 <|end_of_text|>").ids == [3, 4, 1]


# -- torchtitan's log ---------------------------------------------------------------------------
def test_parse_seed_000_line():
    assert tc.parse_titan_line(SEED_000) == {
        "step": 1990,
        "loss": 3.437,
        "grad_norm": None,
        "memory_gib": 68.57,
        "memory_pct": 86.69,
        "tps": 6785.0,
        "tflops": None,
        "mfu_pct": 39.73,
    }


def test_parse_seed_001_gb200_line():
    assert tc.parse_titan_line(SEED_001) == {
        "step": 100,
        "loss": 6.4277,
        "grad_norm": 2.9062,
        "memory_gib": 158.61,
        "memory_pct": 86.2,
        "tps": 17581.0,
        "tflops": 1018.2,
        "mfu_pct": 45.25,
    }


def test_parse_torchtitan_022_coloured_line_and_our_own_line():
    parsed = tc.parse_titan_line(TITAN_022)
    assert (parsed["step"], parsed["loss"], parsed["tps"], parsed["mfu_pct"]) == (
        2,
        8.10109,
        5230.0,
        0.02,
    )
    ours = (
        "step:   20  loss:   5.4177  grad_norm:   4.0434  memory: 0.53GiB(2.27%)  "
        "train_step_timing in s: 0.452  tps: 4,536  tflops: 0.11  mfu: n/a"
    )
    parsed = tc.parse_titan_line(ours)
    assert (parsed["step"], parsed["tps"], parsed["tflops"], parsed["mfu_pct"]) == (
        20,
        4536.0,
        0.11,
        None,
    )


def test_non_step_lines_are_skipped_and_ranks_deduplicated():
    assert tc.parse_titan_line("[titan] ... - root - INFO - Training starts at step 1") is None
    assert tc.parse_titan_line("validate step: 10  loss: 3.2  memory: 1GiB(1%)  tps: 9") is None
    log = "\n".join([SEED_000.replace("1: ", f"{r}: ") for r in range(4)] + [SEED_001])
    assert [s["step"] for s in tc.parse_titan_log(log)] == [100, 1990]


def test_titan_summary_takes_the_median_after_warmup():
    steps = [
        {"step": i, "tps": tps, "tflops": None, "mfu_pct": 1.0, "memory_gib": mem, "loss": 9.0}
        for i, (tps, mem) in enumerate([(100, 5), (900, 6), (1000, 7), (1100, 7)], start=1)
    ]
    s = tc.titan_summary(steps, warmup=1, tokens_per_step=8192)
    assert (s["tokens_per_s_per_gpu"], s["steady_state_steps"], s["memory_gib_peak"]) == (
        1000,
        3,
        7,
    )
    assert s["step_time_s"] == 8.192 and s["tflops"] is None


# -- ratios -------------------------------------------------------------------------------------
def test_ratio_stats_arithmetic():
    s = tc.ratio_stats([110.0, 120.0, 100.0], [100.0, 100.0, 100.0])
    assert s["ratios"] == pytest.approx([1.1, 1.2, 1.0])
    assert (s["median"], s["min"], s["max"]) == pytest.approx((1.1, 1.0, 1.2))
    assert s["spread_pct"] == pytest.approx(100 * 0.1 / 1.1)
    assert s["ratio_of_medians"] == pytest.approx(1.1)
    with pytest.raises(ValueError, match="paired rounds"):
        tc.ratio_stats([1.0], [1.0, 2.0])


def row(r: int, who: str, dtype: str, tps: float, loop_tps: float | None = None) -> dict:
    loop_tps = loop_tps or tps
    return {
        "round": r,
        "who": who,
        "proxy": {"dtype": dtype},
        "step_time_s": 8192 / tps,
        "tokens_per_s_per_gpu": tps,
        "loop_time_s": 8192 / loop_tps,
        "loop_tokens_per_s_per_gpu": loop_tps,
        "tflops": None,
        "mfu_pct": None,
        "own_tflops": None,
        "own_mfu_pct": None,
        "memory_gib_peak": 1.0,
        "command_line": f"{who} {dtype}",
        "machine": {
            k: "x" for k in ("device", "torch", "cuda", "hip", "driver", "python", "git_sha")
        },
    }


def test_ratios_pair_rounds_and_dtypes():
    rows = [
        row(1, "recipes", "bf16", 110, loop_tps=105),  # 5% of our loop is between steps
        row(1, "torchtitan", "bf16", 100),
        row(1, "recipes", "fp8", 154),
        row(1, "torchtitan", "fp8", 140),
        row(2, "torchtitan", "bf16", 100),  # round 2 stopped before recipes ran
    ]
    out = tc.ratios(rows)
    # Like for like, both timed over the whole loop; and at this project's step timing.
    assert out["recipes/torchtitan bf16"]["ratios"] == pytest.approx([1.05])
    assert out["recipes/torchtitan bf16 (our step timing)"]["ratios"] == pytest.approx([1.1])
    assert out["recipes fp8/bf16"]["median"] == pytest.approx(1.4)
    assert out["torchtitan fp8/bf16"]["median"] == pytest.approx(1.4)
    report = tc.format_report({"rows": rows, "ratios": out})
    assert "recipes/torchtitan bf16 " in report and "median 1.050" in report
    assert "recipes/torchtitan bf16 (our step timing)" in report and "median 1.100" in report
    assert all(math.isfinite(float(x)) for x in re.findall(r"median (\S+) \(", report))


FAKE_TITAN = """
import sys, tomllib
config = tomllib.load(open(sys.argv[sys.argv.index("--job.config_file") + 1], "rb"))
if config["training"].get("fail"):
    sys.exit("torchtitan: simulated failure")
for step in range(1, config["training"]["steps"] + 1):
    print(f"[titan] - root - INFO - step: {step:2}  loss: 9.00000  grad_norm:  1.0000  "
          f"memory:  1.00GiB(1.00%)  tps: {1000 * step:,}  tflops: 0.01  mfu: 0.01%")
"""


@pytest.mark.slow
def test_compare_alternates_and_pairs_rounds_with_a_fake_torchtitan(tmp_path, monkeypatch):
    pytest.importorskip("tomllib")
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "expandable_segments:True")  # as main() sets it
    fake = tmp_path / "fake_titan.py"
    fake.write_text(FAKE_TITAN)
    proxy = Proxy(model="llama31_debug", seq_len=64, dtype="fp32", steps=3, warmup=1)
    saved = []
    result = tc.compare([proxy], rounds=2, work=tmp_path, titan_script=fake, save=saved.append)
    assert [r["who"] for r in result["rows"]] == ["recipes", "torchtitan", "torchtitan", "recipes"]
    titan = result["rows"][1]
    assert titan["tokens_per_s_per_gpu"] == 2500  # median of steps 2 and 3
    assert titan["own_tflops"] == 0.01 and titan["step_time_s"] == 64 / 2500
    assert titan["loop_time_s"] == titan["step_time_s"]  # its tps times the whole loop
    ours = result["rows"][0]
    assert ours["loop_time_s"] == ours["record"]["loop_time_s"]["median"] > ours["step_time_s"]
    assert len(result["ratios"]["recipes/torchtitan fp32"]["ratios"]) == 2
    assert len(saved) == 4 and saved[-1]["rows"] == result["rows"] and not result["failures"]
    # Both frameworks ran under the same allocator setting, and each row says which.
    assert {r["alloc_conf"] for r in result["rows"]} == {"expandable_segments:True"}
    assert "torchtitan fp32 (allocator expandable_segments:True)" in tc.format_report(result)


@pytest.mark.slow
def test_compare_records_a_failed_run_and_keeps_the_rest(tmp_path, monkeypatch):
    pytest.importorskip("tomllib")
    fake = tmp_path / "fake_titan.py"
    fake.write_text(FAKE_TITAN)
    config = tc.titan_config

    def failing(*args, **kwargs):
        return config(*args, **kwargs) | {"training": {"fail": True, "steps": 3}}

    monkeypatch.setattr(tc, "titan_config", failing)
    proxy = Proxy(model="llama31_debug", seq_len=64, dtype="fp32", steps=3, warmup=1)
    result = tc.compare([proxy], rounds=2, work=tmp_path, titan_script=fake)
    assert [r["who"] for r in result["rows"]] == ["recipes", "recipes"]
    assert len(result["failures"]) == 1 and "simulated failure" in result["failures"][0]["error"]
    assert "FAILED torchtitan fp32" in tc.format_report(result)


def test_compare_runs_both_frameworks_alternating_on_cpu(tmp_path):
    """End to end through torchtitan's real loop (CPU shim); where torchtitan is installed."""
    pytest.importorskip("torchtitan.train")
    proxy = Proxy(model="llama31_debug", seq_len=128, dtype="fp32", steps=4, warmup=1)
    shim = REPO / "bench" / "titan_cpu_shim.py"
    # --layers auto: recipes' first run finds K (all 4 debug layers fit 1 GiB), then both use it.
    result = tc.compare(
        [proxy], rounds=2, work=tmp_path, auto=True, memory_gib=1.0, titan_script=shim
    )
    assert [r["who"] for r in result["rows"]] == ["recipes", "torchtitan", "torchtitan", "recipes"]
    assert {r["proxy"]["layers"] for r in result["rows"]} == {4}
    assert len(result["ratios"]["recipes/torchtitan fp32"]["ratios"]) == 2
    assert result["rows"][1]["run"]["summary"]["steps"] == 4


# -- profile ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kernel, kind",
    [
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "gemm"),
        ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NNT", "gemm"),
        ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128>>", "attention"),
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16", "attention"),
        (
            "void at::native::(anonymous)::multi_tensor_apply_kernel<FusedAdamMathFunctor>",
            "optimizer",
        ),
        ("triton_per_fused__to_copy_mul_rsqrt_0", "triton (compiled)"),
        ("Memcpy DtoD (Device -> Device)", "memcpy/memset"),
        ("void at::native::elementwise_kernel<128, 2>", "other"),
    ],
)
def test_kernel_kinds(kernel, kind):
    assert kind_of(kernel) == kind


@pytest.mark.slow
def test_profile_steps_on_cpu(tmp_path, capsys):
    out = tmp_path / "prof"
    argv = ["--model", "llama31_debug", "--seq-len", "64", "--warmup", "1", "--active", "1"]
    argv += [
        "--out",
        str(out),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--",
        "cluster.accelerator=cpu",
    ]
    assert profile_main(argv) == 0
    assert "self CPU time by kind, 1 traced steps" in capsys.readouterr().out
    assert (out / "trace.json.gz").stat().st_size > 0 and (out / "profile.txt").is_file()


def test_profile_steps_refuses_a_second_profiler(tmp_path, capsys):
    argv = [
        "--model",
        "llama31_debug",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit) as stop:
        profile_main([*argv, "--", "profiling.enable=true"])
    assert stop.value.code == 2
    assert "starts recipes-train's own profiler" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "program, argv, message",
    [
        (main, ["--layers", "abc"], "--layers abc must be auto or a layer count >= 1"),
        (main, ["--layers", "0"], "--layers 0 must be auto or a layer count >= 1"),
        (main, ["--steps", "3", "--warmup", "5"], "--steps 3 --warmup 5: the run needs steps"),
        (main, ["--compile", "--backend", "megatron"], "--compile is a backend=native knob"),
        (main, ["--layers", "auto", "--fit-fraction", "0"], "--fit-fraction 0.0 must be in"),
        (main, ["--layers", "auto", "--memory-gib", "-1"], "--memory-gib -1.0 must be > 0"),
        (main, ["--layers", "auto", "--max-tries", "0"], "--max-tries 0 must be >= 1"),
        # recipes-train's own checks, before any run folder: Hydra's, then the project's.
        (main, ["--dtype", "fp16"], "configuration error: .*Could not find 'dtype/fp16'"),
        (main, ["--layers", "3", "--", "trainer.lr=0"], r"trainer.lr=0.0 must be > 0; use"),
        (tc.main, ["--layers", "2", "--rounds", "0"], "--rounds 0 must be >= 1"),
        (tc.main, ["--layers", "2", "--budget-s", "-5"], "--budget-s -5.0 must be > 0"),
        (tc.main, ["--layers", "2", "--dtype", "bf16,fp16"], "Could not find 'dtype/fp16'"),
        (tc.main, ["--report", "missing.json"], "--report missing.json: cannot be read as JSON"),
        (tc.main, ["--report", "list.json"], "--report list.json: holds no comparison"),
        (profile_main, ["--layers", "2", "--active", "0"], "--active 0 --warmup 5: profile at"),
    ],
)
def test_bad_flags_exit_2_before_anything_runs(
    program, argv, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # every default output folder is under results/
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(SystemExit) as stop:
        program(["--model", "llama31_debug", "--seq-len", "64", *argv])
    assert stop.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "results").exists()


# -- the GPU session's commands -----------------------------------------------------------------
def test_performance_doc_commands_fit_the_device_tool():
    doc = (REPO / "docs" / "PERFORMANCE.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", doc, flags=re.S)
    device = [b for b in blocks if b.startswith("python3 -m pip install")]
    assert len(device) >= 3
    for block in device:
        assert len(block.strip()) <= 2000, block[:80]
        assert "--target /tmp/site .whl/*.whl" in block and "$OUT" in block
