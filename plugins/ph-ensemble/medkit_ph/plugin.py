"""ph-ensemble's plugin module: what it registers. Targets are strings, so listing plugins never imports torch
or scikit-learn."""

from medkit import ArchitectureEntry, DatasetEntry, Recipe, hookimpl

MEDKIT_API = ">=1.0,<2"


@hookimpl
def register_recipes(register):
    register(
        Recipe(
            name="ensemble",
            target="medkit_ph.recipes.ensemble:ensemble",
            config="medkit_ph.config:EnsembleConfig",
            summary="the frozen-feature ensemble (report section 8), evaluated faithfully (the authors' "
            "protocol) and nested (selection on inner folds only), side by side",
            default=True,
        )
    )
    register(
        Recipe(
            name="simple_cnn",
            target="medkit_ph.recipes.simple_cnn:simple_cnn",
            config="medkit_ph.config:SimpleCnnConfig",
            summary="baseline: the appendix SimpleCNN from scratch, 128 or 256 px, rotations up to 5 degrees, "
            "90:10 split (report section 7)",
        )
    )
    register(
        Recipe(
            name="finetune_effnet_b0",
            target="medkit_ph.recipes.finetune:finetune_effnet_b0",
            config="medkit_ph.config:FinetuneConfig",
            summary="baseline: three-stage unfreezing of ImageNet EfficientNet-B0 at 256 px (report section 7), or the offline Lite0",
        )
    )


@hookimpl
def register_architectures(register):
    register(
        ArchitectureEntry(
            name="simple_cnn",
            target="medkit_ph.models:simple_cnn",
            task="classification",
            summary="the appendix SimpleCNN: 5 conv3x3-BN-ReLU blocks (16-32-64-128-128), FC 256, dropout 0.5",
        )
    )
    register(
        ArchitectureEntry(
            name="effnet_b0_stages",
            target="medkit_ph.models:effnet_b0_stages",
            task="classification",
            summary="EfficientNet-B0 (torchvision) or -Lite0 (timm) with a 4-class head, unfrozen stage by stage",
            defaults={"weights": "random"},
        )
    )


@hookimpl
def register_datasets(register):
    register(
        DatasetEntry(
            name="ph_phantoms",
            target="medkit_ph.data:phantom_folder",
            task="classification",
            embedded=True,
            summary="procedural axial CT slices at the pulmonary trunk, 4 PH grades carried by the PA:AA ratio",
        )
    )
    register(
        DatasetEntry(
            name="ph_folder",
            target="medkit_ph.data:load_folder",
            task="classification",
            summary="the public layout '<c> (<n>).png' (label c - 1) or one sub-folder per class",
        )
    )
