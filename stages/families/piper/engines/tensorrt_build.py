"""Building a TensorRT plan from the exported vocoder ONNX.

Builds run in a child process (`python -m voxpipe.stages.families.piper.engines.tensorrt_build ...`): a build
takes minutes, and in the worker itself it could hold the interpreter lock long enough
to stop the heartbeat thread, so the supervisor would replace a worker that is merely
busy. The child writes the plan atomically; the worker then loads it like a cached one.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

from voxpipe.stages.families.piper.engines.tensorrt_plan import ProfileSpec, profile_shape, specs_from_json, specs_to_json, write_plan


class BuildError(Exception):
    """TensorRT could not parse the graph or build a plan for it."""


def apply_precision(trt: ModuleType, config: object, precision: str) -> None:
    """fp32 is strict fp32 (TF32 off, so it matches torch's fp32 closely); fp16 and bf16
    let TensorRT pick reduced-precision kernels where it finds them faster."""
    if precision == "fp32":
        tf32 = getattr(trt.BuilderFlag, "TF32", None)
        if tf32 is not None:
            config.clear_flag(tf32)  # type: ignore[attr-defined]
        return
    flag = getattr(trt.BuilderFlag, precision.upper(), None)
    if flag is None:
        raise BuildError(f"TensorRT {trt.__version__} has no {precision} builder flag")
    config.set_flag(flag)  # type: ignore[attr-defined]


def build_plan(trt: ModuleType, onnx_path: Path, specs: Sequence[ProfileSpec], precision: str,
               workspace_mib: int) -> bytes:
    """Parse the ONNX graph and build a serialized plan with one profile per spec."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    apply_precision(trt, config, precision)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for spec in specs:
        profile = builder.create_optimization_profile()
        for tensor in inputs:
            shape = tuple(tensor.shape)
            profile.set_shape(tensor.name, *(profile_shape(shape, spec, which) for which in range(3)))
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError(f"TensorRT could not build a plan for {onnx_path.name} (its log above says why)")
    return bytes(memoryview(plan))


def build_in_subprocess(onnx_path: Path, plan_path: Path, specs: Sequence[ProfileSpec], precision: str,
                        workspace_mib: int, timeout_s: float | None = None) -> None:
    """Run `build_plan` in a child process that writes `plan_path`; BuildError on failure."""
    root = str(Path(__file__).resolve().parents[2])  # the directory holding `stages`
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "voxpipe.stages.families.piper.engines.tensorrt_build", "--onnx", str(onnx_path),
           "--plan", str(plan_path), "--precision", precision, "--workspace-mib", str(workspace_mib),
           "--profiles", specs_to_json(specs)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"TensorRT build did not finish within {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise BuildError(f"TensorRT build failed (exit {proc.returncode}): {tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a TensorRT plan for a voxpipe vocoder graph.")
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--workspace-mib", type=int, default=2048)
    parser.add_argument("--profiles", required=True, help="profile specs as JSON")
    args = parser.parse_args(argv)
    import tensorrt as trt

    try:
        plan = build_plan(trt, args.onnx, specs_from_json(args.profiles), args.precision, args.workspace_mib)
    except BuildError as exc:
        print(f"voxpipe tensorrt build: {exc}", file=sys.stderr)
        return 1
    write_plan(args.plan, plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
