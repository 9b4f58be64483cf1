"""The release line tritonforge targets: TensorRT-LLM, the NGC Triton container that ships it, ModelOpt.

One source of truth for every default that names a version (spec defaults, `plan`, the launch command).
"""

from __future__ import annotations

import re

# TensorRT-LLM 1.2.x is the newest stable line with the TensorRT-engine flow (trtllm-build and the C++
# `tensorrtllm` Triton backend); the 1.3.0rc20 release notes call it the last release candidate with the
# TensorRT backend. Source: https://nvidia.github.io/TensorRT-LLM/release-notes.html and
# https://github.com/triton-inference-server/tensorrtllm_backend dockerfile/Dockerfile.triton.trt_llm_backend
# (TENSORRTLLM_VER=1.2.1, TENSORRTLLM_REPO_TAG=release/1.2.1).
TRTLLM_VERSION = "1.2.1"
MAX_ENGINE_TRTLLM = (1, 2)

# NGC `tritonserver:<yy.mm>-trtllm-python-py3` tag -> the TensorRT-LLM it ships. Source: Triton's release
# compatibility matrix, https://github.com/triton-inference-server/server docs/introduction/compatibility.md
# ("Container Name: trtllm-python-py3"), also https://docs.nvidia.com/deeplearning/triton-inference-server/
# user-guide/docs/introduction/compatibility.html.
CONTAINER_TRTLLM: dict[str, str] = {
    "26.07": "1.2.1",
    "26.06": "1.2.1",
    "26.05": "1.2.1",
    "26.04": "1.2.1",
    "26.03": "1.2.0",
    "26.02": "1.1.0",
    "26.01": "1.1.0",
    "25.12": "1.1.0",
    "25.11": "1.0.3.2510",
    "25.10": "1.0.0",
    "25.09": "1.0.0",
    "25.08": "0.21.0",
    "25.07": "0.20.0",
    "25.06": "0.20.0",
    "25.05": "0.19.0",
    "25.04": "0.18.2",
    "25.03": "0.18.0",
    "25.02": "0.17.0.post1",
    "25.01": "0.17.0",
    "24.12": "0.16.0",
    "24.11": "0.15.0",
    "24.10": "0.14.0",
    "24.09": "0.13.0",
    "24.08": "0.12.0",
    "24.07": "0.11.0",
    "24.06": "0.10.0",
    "24.05": "0.9.0",
    "24.04": "0.9.0",
}
TRITON_CONTAINER = "26.07"  # the newest tag in the matrix that ships TensorRT-LLM 1.2.1 (Triton 2.71.0)
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_CONTAINER}-trtllm-python-py3"

# TensorRT-LLM's requirements.txt on the 1.2 line pins `nvidia-modelopt[torch]~=0.37.0`. Source:
# https://github.com/NVIDIA/TensorRT-LLM requirements.txt (release/1.2). Checkpoints quantized with another
# ModelOpt may use a config layout that release's converter does not read.
MODELOPT_REQUIREMENT = "nvidia-modelopt[torch]~=0.37.0"
MODELOPT_VERSION = "0.37"


def container_release(image: str) -> str | None:
    """The `yy.mm` of an NGC tritonserver image tag, or None for an image not named that way."""
    m = re.search(r":(\d{2}\.\d{2})(?:-|$)", image)
    return m.group(1) if m else None


def release_tuple(release: str) -> tuple[int, int]:
    yy, mm = release.split(".")
    return int(yy), int(mm)


def image_trtllm(image: str) -> str | None:
    """The TensorRT-LLM version an NGC trtllm image ships, when the compatibility matrix lists it."""
    rel = container_release(image)
    return CONTAINER_TRTLLM.get(rel) if rel else None


def targets_line(
    runtime: str = "trtllm-engine", trtllm_version: str = TRTLLM_VERSION, image: str = TRITON_IMAGE
) -> str:
    """One line for `tritonforge plan`: what the plan and the generated commands target, per runtime."""
    if runtime == "trtllm-pytorch":
        return (
            f"targets TensorRT-LLM {trtllm_version} (PyTorch backend, LLM API), Triton container {image}, "
            f"ModelOpt {MODELOPT_VERSION} ({MODELOPT_REQUIREMENT}) unified HF checkpoint"
        )
    if runtime == "cpu-reference":
        return "targets the CPU reference engine (no TensorRT-LLM)"
    return (
        f"targets TensorRT-LLM {trtllm_version} (engines), Triton container {image}, "
        f"ModelOpt {MODELOPT_VERSION} ({MODELOPT_REQUIREMENT})"
    )


def _release_of(version: str) -> tuple[int, ...] | None:
    m = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", version)
    return tuple(int(g or 0) for g in m.groups()) if m else None


def images_for(trtllm_version: str) -> list[str]:
    """NGC trtllm images (newest first) that ship exactly `trtllm_version` (x.y.z)."""
    want = _release_of(trtllm_version)
    tags = sorted(
        (t for t, v in CONTAINER_TRTLLM.items() if _release_of(v) == want), key=release_tuple, reverse=True
    )
    return [f"nvcr.io/nvidia/tritonserver:{t}-trtllm-python-py3" for t in tags]
