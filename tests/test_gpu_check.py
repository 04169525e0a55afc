"""``python -m verl_sdar.gpu_check`` in its tiny CPU configuration, and the checks' ability to fail."""

from __future__ import annotations

import json
import math

import pytest
import torch

from verl_sdar import gpu_check, objectives

TINY = ["--device", "cpu", "--model", "tiny", "--tokens", "48", "--repeats", "1"]


def _run(tmp_path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "gpu_check.json"
    rc = gpu_check.main([*TINY, "--out", str(out), *extra])
    return rc, json.loads(out.read_text())


def test_tiny_cpu_run_end_to_end(tmp_path, capsys):
    rc, report = _run(tmp_path)
    printed = capsys.readouterr().out

    assert rc == 0 and report["passed"] is True
    assert {"meta", "objectives", "noise_floor", "memory"} <= report.keys()
    assert report["meta"]["device"] == "cpu" and report["meta"]["torch"] == torch.__version__

    checks = report["objectives"]["checks"]
    assert {c["dtype"] for c in checks} == {"fp32", "bf16"}
    assert len(checks) == 2 * len(gpu_check.objective_cases())
    assert all(c["passed"] and c["finite"] for c in checks)
    assert any(c["check"].startswith("aggregate") for c in checks)
    assert {c["check"].split()[1] for c in checks if c["check"].startswith("sdar_loss ")} >= set(objectives.DIVERGENCES)

    noise = report["noise_floor"]["measurements"]
    assert noise and all(m["status"] == "ok" for m in noise)
    fp32 = [m for m in noise if m["attn"] == "sdpa" and m["dtype"] == "fp32"]
    assert len(fp32) == len(gpu_check.packings_for("sdpa"))
    assert all(m["max_abs_delta"] < 1e-3 and m["tokens"] > 0 for m in fp32)  # fp32 packings agree closely
    assert any(m["dtype"] == "bf16 vs fp32" for m in noise)

    memory = report["memory"]
    assert memory["tokens"] == 48 and [m["measurement"] for m in memory["measurements"]] == [
        "teacher pass (no grad)", "update fwd+bwd"]
    assert all(m["status"] == "ok" and m["time_s"] > 0 and m["peak_mib"] is None for m in memory["measurements"])

    for heading in ("(a) objectives", "(b) log-prob noise floor", "(c) memory", "overall: PASS"):
        assert heading in printed


def _perturbed_sdar_loss(real):
    """sdar_loss that is 10% off everywhere except in float64 (i.e. wrong on the 'device', right in the reference)."""

    def wrong(student_log_probs, *args, **kwargs):
        loss, metrics = real(student_log_probs, *args, **kwargs)
        return (loss * 1.1 if student_log_probs.dtype != torch.float64 else loss), metrics

    return wrong


def _unmasked_aggregate(real):
    """aggregate that multiplies by the mask instead of selecting with it (NaN * 0 = NaN), except in float64."""

    def wrong(values, mask, loss_agg_mode="token-mean", **kwargs):
        if values.dtype == torch.float64:
            return real(values, mask, loss_agg_mode, **kwargs)
        return (values * mask).sum() / mask.sum()

    return wrong


@pytest.mark.parametrize(
    ("name", "make_wrong", "failing_prefix"),
    [("sdar_loss", _perturbed_sdar_loss, "sdar_loss"), ("aggregate", _unmasked_aggregate, "")],
)
def test_a_wrong_objective_fails_the_check(tmp_path, monkeypatch, name, make_wrong, failing_prefix):
    monkeypatch.setattr(objectives, name, make_wrong(getattr(objectives, name)))
    rc, report = _run(tmp_path, "--skip-noise", "--skip-memory")

    assert rc == 1 and report["passed"] is False and report["objectives"]["passed"] is False
    assert "noise_floor" not in report and "memory" not in report
    failed = [c for c in report["objectives"]["checks"] if not c["passed"]]
    assert failed and all(c["check"].startswith(failing_prefix) for c in failed)
    assert {c["dtype"] for c in failed} == {"fp32", "bf16"}


def test_compare_passes_within_and_fails_outside_tolerance():
    ref = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    assert gpu_check.compare(ref.float(), ref, rtol=1e-5, atol=0.0).passed
    off = gpu_check.compare(ref * 1.01, ref, rtol=1e-3, atol=0.0)
    assert not off.passed and off.finite and off.max_abs_error == pytest.approx(0.04)
    assert off.tolerance == pytest.approx(4e-3)
    nan = gpu_check.compare(torch.tensor([1.0, math.nan, 4.0]), ref, rtol=1.0, atol=1.0)
    assert not nan.passed and not nan.finite and nan.max_abs_error == math.inf
    assert not gpu_check.compare(torch.tensor([1.0, -math.inf, 4.0]), ref, rtol=1.0, atol=1.0).passed


def test_masked_inf_and_nan_do_not_make_fp32_results_non_finite():
    inputs = gpu_check.objective_inputs(rows=6, tokens=20, seed=1)
    masked = ~inputs["mask"]
    for key in ("student", "teacher", "values"):  # the poison is really there
        assert torch.isneginf(inputs[key][masked]).any() and torch.isnan(inputs[key][masked]).any()
    assert torch.isfinite(inputs["student"][inputs["mask"]]).all()

    cpu = torch.device("cpu")
    for case in gpu_check.objective_cases():
        loss, grad = gpu_check.evaluate_case(case, inputs, cpu, torch.float32)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), case.name
        assert (grad[masked] == 0).all(), case.name
